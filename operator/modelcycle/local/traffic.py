"""Talk to a model Service the way a Service does: Open Inference Protocol v2 requests, each to the
next ready endpoint (round-robin) of the Service at that moment.

kube-proxy would route a ClusterIP to one endpoint too, but hide which one; sending each request
to an endpoint the client picked tells a test (and the demo) which pod, and so which model
version, answered, and lets feedback reach the pod that made the prediction. `ServiceEndpoints`
keeps the endpoint list with watches, and `OipClient` picks from the latest list at every request.

Where the list comes from: the Service's EndpointSlices (what kube-proxy reads). While they list
no address (`source="auto"`, the default), the client computes the same list from the pods with
the EndpointSlice controller's own rule: pods matching the Service's selector, with a pod IP, not
terminated; an endpoint is `ready` when the pod's Ready condition is True and the pod is not
terminating (no deletionTimestamp); the port is the Service's targetPort resolved against the
pod's container ports.

How a request reaches the endpoint it was sent to (the transport, `use_transport`):

- `direct` (the default): HTTP straight to the pod IP; needs pod IPs routable from this host
  (the local real node's are: 198.18.1.0/24 on its bridge);
- `service-proxy`: through the API server's proxy, with the kubeconfig's credentials, for a
  cluster whose pod IPs this host cannot reach (kind). Each request still goes to the endpoint
  the client picked (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/v2/...`, the per-pod form
  of `services/<svc>:<port>/proxy`). It adds a hop (latency).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from modelcycle.kubeclient import ApiError, Kube, WatchExpired, quote

Source = Literal["auto", "endpointslices", "pods"]
TransportName = Literal["direct", "service-proxy"]
TRANSPORTS: tuple[str, ...] = ("direct", "service-proxy")
VERSION_LABEL = "modelcycle.io/version"
WATCH_SECONDS = 60


class NoReadyEndpoints(Exception):
    """The Service has no ready endpoint right now (a Service would refuse the connection)."""


@dataclass(frozen=True, order=True)
class Endpoint:
    pod: str
    ip: str
    port: int
    version: str | None = None
    """The pod's `modelcycle.io/version` label, when known."""

    @property
    def base_url(self) -> str:
        return f"http://{self.ip}:{self.port}"


def _selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def resolve_target_port(service_port: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    """A Service port's targetPort on one pod: a number, or the name of one of its container ports."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def endpoints_from_pods(
    service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], *, port_name: str | None = None
) -> list[Endpoint]:
    """The ready endpoints the EndpointSlice controller would list for `service` (see module doc)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    if not selector:
        return []
    ports = spec.get("ports") or []
    service_port = next((p for p in ports if port_name is None or p.get("name") == port_name), None)
    if service_port is None:
        return []
    found = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        status = pod.get("status") or {}
        if not _selector_matches(selector, metadata.get("labels") or {}):
            continue
        if status.get("phase") in ("Succeeded", "Failed") or not status.get("podIP"):
            continue
        if metadata.get("deletionTimestamp") or not _pod_ready(pod):
            continue
        port = resolve_target_port(service_port, pod)
        if port is None:
            continue
        version = (metadata.get("labels") or {}).get(VERSION_LABEL)
        found.append(Endpoint(str(metadata.get("name")), str(status["podIP"]), port, version))
    return sorted(found)


def endpoints_from_slices(
    slices: Sequence[Mapping[str, Any]],
    *,
    port_name: str | None = None,
    versions: Mapping[str, str] | None = None,
) -> list[Endpoint]:
    """The ready endpoints listed by a Service's EndpointSlices (what kube-proxy routes to)."""
    found = []
    for item in slices:
        port = next(
            (
                p.get("port")
                for p in item.get("ports") or []
                if port_name is None or p.get("name") == port_name
            ),
            None,
        )
        if port is None:
            continue
        for endpoint in item.get("endpoints") or []:
            # `ready` unset means ready (discovery.k8s.io/v1 API convention).
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            pod = str(((endpoint.get("targetRef") or {}).get("name")) or "")
            for address in endpoint.get("addresses") or []:
                found.append(Endpoint(pod, str(address), int(port), (versions or {}).get(pod)))
    return sorted(set(found))


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class _Watched:
    """One collection (list + watch, relisted when the watch ends or breaks), kept by name."""

    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        params: Mapping[str, Any],
        on_change: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        self.kube = kube
        self.path = path
        self.params = dict(params)
        self.items: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.on_change = on_change
        self.stop = stop
        self.synced = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.items.values())

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                listed = self.kube.get(self.path, **self.params)
                with self.lock:
                    self.items = {i["metadata"]["name"]: i for i in listed.get("items") or []}
                self.synced.set()
                self.on_change()
                version = listed["metadata"]["resourceVersion"]
                for event in self.kube.watch(
                    self.path, timeout_seconds=WATCH_SECONDS, resourceVersion=version, **self.params
                ):
                    if self.stop.is_set():
                        return
                    kind, obj = event.get("type"), event.get("object") or {}
                    name = (obj.get("metadata") or {}).get("name")
                    if kind == "BOOKMARK" or not name:
                        continue
                    with self.lock:
                        if kind == "DELETED":
                            self.items.pop(name, None)
                        else:
                            self.items[name] = obj
                    self.on_change()
            except WatchExpired:
                continue
            except Exception:
                if self.stop.wait(0.5):
                    return


class ServiceEndpoints:
    """The ready endpoints of one Service, kept current by watches (see the module doc)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        service: str,
        *,
        port_name: str | None = "http",
        source: Source = "auto",
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.service_name = service
        self.port_name = port_name
        self.source = source
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._ready: list[Endpoint] = []
        self.used_source: str | None = None
        ns = quote(namespace)
        self._service = _Watched(
            kube,
            f"/api/v1/namespaces/{ns}/services",
            params={"fieldSelector": f"metadata.name={service}"},
            on_change=self._recompute,
            stop=self._stop,
        )
        self._pods = _Watched(
            kube, f"/api/v1/namespaces/{ns}/pods", params={}, on_change=self._recompute, stop=self._stop
        )
        self._slices = _Watched(
            kube,
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            params={"labelSelector": f"kubernetes.io/service-name={service}"},
            on_change=self._recompute,
            stop=self._stop,
        )

    def __enter__(self) -> ServiceEndpoints:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, timeout: float = 30.0) -> None:
        for watched in (self._service, self._pods, self._slices):
            watched.thread.start()
        deadline = time.monotonic() + timeout
        for watched in (self._service, self._pods, self._slices):
            watched.synced.wait(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()

    def _recompute(self) -> None:
        # Only the source in use is computed: this runs on every pod event of the namespace.
        pods = self._pods.snapshot()
        ready: list[Endpoint] = []
        if self.source != "pods":
            versions = {
                p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get(VERSION_LABEL) for p in pods
            }
            ready = endpoints_from_slices(
                self._slices.snapshot(),
                port_name=self.port_name,
                versions={k: v for k, v in versions.items() if v},
            )
        if self.source == "endpointslices" or (self.source == "auto" and ready):
            used = "endpointslices"
        else:
            services = self._service.snapshot()
            ready = endpoints_from_pods(services[0], pods, port_name=self.port_name) if services else []
            used = "pods"
        with self._changed:
            self._ready = ready
            self.used_source = used
            self._changed.notify_all()

    def ready(self) -> list[Endpoint]:
        with self._changed:
            return list(self._ready)

    def wait_for(
        self, predicate: Callable[[list[Endpoint]], bool], *, timeout: float, what: str = "endpoints"
    ) -> list[Endpoint]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._ready)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"timed out after {timeout:.0f}s waiting for {what} of Service "
                        f"{self.namespace}/{self.service_name}; ready now: {[e.ip for e in self._ready]}"
                    )
                self._changed.wait(min(left, 1.0))
            return list(self._ready)


# --------------------------------------------------------------------------- the protocol


class RequestFailed(Exception):
    def __init__(self, endpoint: Endpoint | None, message: str, status: int | None = None) -> None:
        super().__init__(
            f"{endpoint.pod + ' ' + endpoint.base_url if endpoint else 'no endpoint'}: {message}"
        )
        self.endpoint = endpoint
        self.status = status


@dataclass(frozen=True)
class InferResult:
    endpoint: Endpoint
    body: dict[str, Any]
    seconds: float

    def output(self, name: str) -> list[Any]:
        for out in self.body.get("outputs") or []:
            if out.get("name") == name:
                return list(out.get("data") or [])
        raise KeyError(f"no output {name!r} in the response")

    @property
    def predictions(self) -> list[Any]:
        return self.output("predict")

    @property
    def model_version(self) -> str:
        return str(self.body.get("model_version"))


def infer_body(
    rows: Sequence[Sequence[float]], *, outputs: Sequence[str] = ("predict",), request_id: str | None = None
) -> dict[str, Any]:
    """An OIP v2 inference request with one FP64 `[N, F]` tensor."""
    width = len(rows[0]) if rows else 0
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), width],
                "datatype": "FP64",
                "data": [float(v) for row in rows for v in row],
            }
        ],
        "outputs": [{"name": name} for name in outputs],
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def _parse(data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data) if data else {}
    except ValueError:
        parsed = {"raw": data[:200].decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def http_json(
    endpoint: Endpoint, method: str, path: str, body: Any = None, *, timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection (as a Service's new connection would be)."""
    connection = http.client.HTTPConnection(endpoint.ip, endpoint.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Connection": "close", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise RequestFailed(endpoint, f"{method} {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        connection.close()
    return response.status, _parse(data)


class Transport(Protocol):
    def __call__(
        self, endpoint: Endpoint, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> tuple[int, dict[str, Any]]: ...


class ApiServerProxy:
    """Requests to a pod through the API server's proxy subresource, with the kubeconfig's
    credentials: `/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy<path>`."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def url_path(self, endpoint: Endpoint, path: str) -> str:
        pod = f"{quote(endpoint.pod)}:{endpoint.port}"
        return f"/api/v1/namespaces/{quote(self.namespace)}/pods/{pod}/proxy{path}"

    def __call__(
        self, endpoint: Endpoint, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> tuple[int, dict[str, Any]]:
        try:
            status, data = self.kube.raw(method, self.url_path(endpoint, path), body=body, timeout=timeout)
        except Exception as exc:  # urllib3's errors: the connection to the API server failed
            raise RequestFailed(
                endpoint, f"{method} {path} via the API server: {type(exc).__name__}: {exc}"
            ) from exc
        return status, _parse(data)


_transport_name: TransportName = "direct"


def use_transport(name: str) -> TransportName:
    """Select how OipClient reaches endpoints when it is given no transport; returns the previous."""
    global _transport_name
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}: one of {', '.join(TRANSPORTS)}")
    previous, _transport_name = _transport_name, cast(TransportName, name)
    return previous


def current_transport() -> TransportName:
    return _transport_name


def transport_for(name: str, kube: Kube, namespace: str) -> Transport:
    if name == "direct":
        return http_json
    if name == "service-proxy":
        return ApiServerProxy(kube, namespace)
    raise ValueError(f"unknown transport {name!r}: one of {', '.join(TRANSPORTS)}")


class OipClient:
    """Open Inference Protocol v2 to a Service's ready endpoints, round-robin, one per request."""

    def __init__(
        self,
        endpoints: ServiceEndpoints,
        model: str,
        *,
        timeout: float = 10.0,
        transport: Transport | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.model = model
        self.timeout = timeout
        self.transport: Transport = transport or transport_for(
            current_transport(), endpoints.kube, endpoints.namespace
        )
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def pick(self) -> Endpoint:
        ready = self.endpoints.ready()
        if not ready:
            raise NoReadyEndpoints(
                f"Service {self.endpoints.namespace}/{self.endpoints.service_name} has no ready endpoint"
            )
        with self._lock:
            n = next(self._counter)
        return ready[n % len(ready)]

    def infer(
        self,
        rows: Sequence[Sequence[float]],
        *,
        outputs: Sequence[str] = ("predict",),
        request_id: str | None = None,
        endpoint: Endpoint | None = None,
    ) -> InferResult:
        target = endpoint or self.pick()
        began = time.perf_counter()
        status, body = self.transport(
            target,
            "POST",
            f"/v2/models/{quote(self.model)}/infer",
            infer_body(rows, outputs=outputs, request_id=request_id),
            timeout=self.timeout,
        )
        if status != 200:
            raise RequestFailed(target, f"HTTP {status}: {body.get('error', body)}", status)
        return InferResult(target, body, time.perf_counter() - began)

    def get(self, path: str, *, endpoint: Endpoint | None = None) -> dict[str, Any]:
        target = endpoint or self.pick()
        status, body = self.transport(
            target, "GET", f"/v2/models/{quote(self.model)}{path}", timeout=self.timeout
        )
        if status != 200:
            raise RequestFailed(target, f"HTTP {status}: {body.get('error', body)}", status)
        return body

    def feedback(self, items: Sequence[Mapping[str, Any]], *, endpoint: Endpoint) -> dict[str, Any]:
        status, body = self.transport(
            endpoint,
            "POST",
            f"/v2/models/{quote(self.model)}/feedback",
            list(items),
            timeout=self.timeout,
        )
        if status != 200:
            raise RequestFailed(endpoint, f"HTTP {status}: {body.get('error', body)}", status)
        return body


# --------------------------------------------------------------------------- steady traffic


@dataclass(frozen=True)
class Outcome:
    at: float
    ok: bool
    endpoint: Endpoint | None
    version: str | None
    error: str | None = None


@dataclass
class TrafficStats:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def versions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.ok and o.version is not None:
                counts[o.version] = counts.get(o.version, 0) + 1
        return counts

    def pods(self) -> set[str]:
        return {o.endpoint.pod for o in self.outcomes if o.ok and o.endpoint is not None}


class Traffic:
    """A thread that keeps sending inference requests through `client` until stopped.

    Every outcome is recorded: a request with no ready endpoint, a refused connection or a
    non-200 answer counts as a failure.
    """

    def __init__(
        self,
        client: OipClient,
        rows: Callable[[int], Sequence[Sequence[float]]],
        *,
        interval: float = 0.02,
        check: Callable[[InferResult, Sequence[Sequence[float]]], str | None] | None = None,
    ) -> None:
        self.client = client
        self.rows = rows
        self.interval = interval
        self.check = check
        self.stats = TrafficStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> TrafficStats:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.snapshot()

    def snapshot(self) -> TrafficStats:
        with self._lock:
            return TrafficStats(list(self.stats.outcomes))

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.stats.outcomes.append(outcome)

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            rows = self.rows(n)
            now = time.time()
            try:
                result = self.client.infer(rows)
                problem = self.check(result, rows) if self.check else None
                self._record(Outcome(now, problem is None, result.endpoint, result.model_version, problem))
            except (RequestFailed, NoReadyEndpoints) as exc:
                self._record(Outcome(now, False, getattr(exc, "endpoint", None), None, str(exc)))
            except Exception as exc:
                self._record(Outcome(now, False, None, None, f"{type(exc).__name__}: {exc}"))
            self._stop.wait(self.interval)


def chunks(rows: Sequence[Sequence[float]], size: int) -> Iterator[Sequence[Sequence[float]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def reachable(endpoint: Endpoint, path: str = "/v2/health/ready") -> bool:
    with contextlib.suppress(RequestFailed):
        status, _ = http_json(endpoint, "GET", path, timeout=2.0)
        return status == 200
    return False


__all__ = [
    "ApiError",
    "ApiServerProxy",
    "Endpoint",
    "InferResult",
    "NoReadyEndpoints",
    "OipClient",
    "Outcome",
    "RequestFailed",
    "ServiceEndpoints",
    "Traffic",
    "TrafficStats",
    "Transport",
    "chunks",
    "current_transport",
    "endpoints_from_pods",
    "endpoints_from_slices",
    "http_json",
    "infer_body",
    "is_loopback",
    "reachable",
    "transport_for",
    "use_transport",
]
