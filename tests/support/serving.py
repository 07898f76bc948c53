"""Serving without a node: register versions, report pods Ready as the kubelet would, run real servers.

The integration tier has a control plane but no kubelet, so Deployment pods stay Pending. The
`PodReadiness` thread plays the kubelet's part for readiness: it writes `status` (phase Running,
podIP, Ready/ContainersReady conditions, a ready containerStatus) through `pods/status`, and the
ReplicaSet and Deployment controllers then count the pods as ready and available, exactly as in a
real cluster. Pods it should leave unready (a version whose "image is broken") are held back.

`ServingPods` goes further for the ModelMonitor tests: it runs each serving pod's container here
(its `command` + `args` exactly as the operator wrote them, volumes mapped by the Job kubelet of
support/kubelet.py, so `--artifact-uri pvc://...` reads the test's artifact store), on an address
of its own, and reports the pod Ready with that podIP once the readiness probe path answers. The
API server's pod proxy refuses loopback pod IPs ("address not allowed"), so the addresses are this
tests' own network namespace (support/netns.py); where one cannot be made (not root), tests fall
back to 127.0.0.x and the operator's `--monitor-stats-access direct`.

`validate_version` finishes a ModelVersion's validation Job with a canned verdict, as the kubelet
would report the validate workload's result, so a test controls Validated / Rejected.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.builders import jobs
from modelcycle.controllers import kube
from support import netns

if TYPE_CHECKING:
    from support.kubelet import FakeKubelet

READY_CONDITION_TYPES = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_status(pod: dict[str, Any], *, ip: str, ready: bool = True) -> dict[str, Any]:
    """The status a kubelet reports for a pod whose containers run (and pass readiness, if `ready`)."""
    stamp = _now()
    flag = "True" if ready else "False"
    containers = [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": ready,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": stamp}},
        }
        for c in pod["spec"]["containers"]
    ]
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": ip,
        "startTime": stamp,
        "conditions": [
            {
                "type": t,
                "status": flag if t in ("ContainersReady", "Ready") else "True",
                "lastTransitionTime": stamp,
            }
            for t in READY_CONDITION_TYPES
        ],
        "containerStatuses": containers,
    }


def is_reported_ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def set_pod_ready(client: kube.Client, pod: dict[str, Any], *, ip: str, ready: bool = True) -> dict[str, Any]:
    return client.patch(
        kind="Pod",
        namespace=pod["metadata"]["namespace"],
        name=pod["metadata"]["name"],
        subresource="status",
        patch={"status": ready_status(pod, ip=ip, ready=ready)},
    )


class PodReadiness:
    """A background 'kubelet' that reports the pods matching a selector Ready.

    `hold(pod) -> True` keeps a pod unready (e.g. its version "does not start"); `address(pod)` picks
    its podIP (default: a distinct documentation address per pod, 198.51.100.x).
    """

    def __init__(
        self,
        client: kube.Client,
        namespace: str,
        *,
        selector: str | None = None,
        hold: Callable[[dict[str, Any]], bool] | None = None,
        address: Callable[[dict[str, Any]], str] | None = None,
        interval: float = 0.3,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.selector = selector
        self.hold = hold or (lambda pod: False)
        self.address = address or self._next_address
        self.interval = interval
        self._count = 0
        self._ips: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)
        self.errors: list[str] = []

    def _next_address(self, pod: dict[str, Any]) -> str:
        uid = pod["metadata"]["uid"]
        if uid not in self._ips:
            self._count += 1
            self._ips[uid] = f"198.51.100.{self._count % 250 + 1}"
        return self._ips[uid]

    def sync_once(self) -> None:
        for pod in self.client.list(kind="Pod", namespace=self.namespace, label_selector=self.selector):
            if pod["metadata"].get("deletionTimestamp") or is_reported_ready(pod) or self.hold(pod):
                continue
            try:
                set_pod_ready(self.client, pod, ip=self.address(pod))
            except kube.ApiError as exc:  # deleted meanwhile, or a conflict: next round
                self.errors.append(str(exc))

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.sync_once()
            self._stop.wait(self.interval)

    def __enter__(self) -> PodReadiness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------- real model servers


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- versions


def create_version(
    client: kube.Client,
    namespace: str,
    *,
    model: str,
    version: int,
    sha256: str = "ab" * 32,
    uri: str | None = None,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return client.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": f"{model}-v{version}", "namespace": namespace},
            "spec": {
                "model": model,
                "version": version,
                "artifact": {
                    "uri": uri or f"pvc://models/{namespace}/{model}/v{version}/model.skops",
                    "sha256": sha256,
                },
                **({"lineage": lineage} if lineage else {}),
            },
        }
    )


def validate_version(
    kubelet: FakeKubelet, namespace: str, name: str, *, validated: bool = True, timeout: float = 60
) -> None:
    """Report the ModelVersion's validation Job as finished with this verdict."""
    job = jobs.validation_job_name({"metadata": {"name": name}})
    kubelet.fail(
        namespace,
        job,
        exit_code=0,
        result={
            "ok": True,
            "validated": validated,
            "reasons": ["accuracy 0.95 >= 0.9"] if validated else ["accuracy 0.5 < 0.9"],
            "metrics": {"accuracy": 0.95 if validated else 0.5},
        },
        timeout=timeout,
    )


# --------------------------------------------------------------------------- serving pods run here


class ServingPods:
    """Run the serving pods matching `selector` here, one address each, and report them Ready."""

    def __init__(
        self,
        client: kube.Client,
        kubelet: FakeKubelet,
        namespace: str,
        *,
        addresses: list[str],
        selector: str | None = None,
        log_dir: Path,
        interval: float = 0.3,
    ) -> None:
        self.client = client
        self.kubelet = kubelet
        self.namespace = namespace
        self.selector = selector
        self.free = list(addresses)
        self.log_dir = log_dir
        self.interval = interval
        self.running: dict[str, tuple[subprocess.Popen[bytes], str, dict[str, Any]]] = {}
        self.reported: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-kubelet", daemon=True)
        self.failures: list[str] = []

    def _start(self, pod: dict[str, Any], address: str) -> subprocess.Popen[bytes]:
        container = pod["spec"]["containers"][0]
        name = pod["metadata"]["name"]
        workdir = self.log_dir / name
        workdir.mkdir(parents=True, exist_ok=True)
        # The Job kubelet's volume mapping: the artifact claim is its shared local store.
        dirs = self.kubelet._volume_dirs(pod, workdir)
        paths = [(m["mountPath"], str(dirs[m["name"]])) for m in container.get("volumeMounts") or []]
        paths.sort(key=lambda pair: len(pair[0]), reverse=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "MODELCYCLE_"))}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = self.kubelet._rewrite(str(var["value"]), paths)
            elif field_ref := (var.get("valueFrom") or {}).get("fieldRef"):
                env[var["name"]] = str(pod["metadata"].get(field_ref["fieldPath"].split(".", 1)[1], ""))
        # Only the pod's own command and args see its mounts; this interpreter's path must not be
        # rewritten (a venv under /tmp would otherwise land in the pod's /tmp emptyDir).
        command = list(container.get("command") or [])
        argv = [self.kubelet._rewrite(str(a), paths) for a in [*command, *(container.get("args") or [])]]
        if command[:1] == ["modelcycle"]:
            argv = [sys.executable, "-m", "modelcycle", *argv[1:]]
        if "--host" in argv:  # the pod's network namespace is its own address here
            argv[argv.index("--host") + 1] = address
        argv = netns.exec_prefix(address) + argv  # run "in the pod's network namespace"
        log = (self.log_dir / f"{name}.log").open("ab")
        return subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def _probe(address: str, port: int, path: str) -> bool:
        host = f"[{address}]" if ":" in address else address
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def sync_once(self) -> None:
        pods = self.client.list(kind="Pod", namespace=self.namespace, label_selector=self.selector)
        live = {p["metadata"]["uid"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}
        for uid in list(self.running):
            if uid not in live:  # deleted: stop its server, free its address
                process, address, _ = self.running.pop(uid)
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
                self.free.append(address)
                self.reported.discard(uid)
        for uid, pod in live.items():
            if uid not in self.running:
                if not self.free:
                    continue
                address = self.free.pop(0)
                self.running[uid] = (self._start(pod, address), address, pod)
            process, address, _ = self.running[uid]
            if process.poll() is not None:
                self.failures.append(f"{pod['metadata']['name']} exited with {process.returncode}")
                continue
            if uid not in self.reported and self._probe(address, 8080, "/v2/health/ready"):
                set_pod_ready(self.client, pod, ip=address)
                self.reported.add(uid)

    def addresses_of_ready_pods(self) -> list[str]:
        return [address for uid, (_, address, _) in self.running.items() if uid in self.reported]

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.sync_once()
            self._stop.wait(self.interval)

    def __enter__(self) -> ServingPods:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for process, _, _ in self.running.values():
            process.terminate()
        for process, _, _ in self.running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def infer(address: str, model: str, rows: list[list[float]], *, port: int = 8080) -> dict[str, Any]:
    """One Open Inference Protocol v2 request with an [N, F] FP64 tensor."""
    host = f"[{address}]" if ":" in address else address
    body = {
        "inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}]
    }
    request = urllib.request.Request(
        f"http://{host}:{port}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def serving_addresses(count: int, *, port: int = 8080, mode: str = "auto") -> tuple[list[str], str]:
    """Up to `count` addresses to run model servers on, and how the operator must reach them:
    `proxy` with addresses in the tests' own network namespace (the API server's pod proxy dials
    them; it refuses loopback), else `direct` with 127.0.0.x (Linux routes all of 127/8 to the
    loopback interface). `mode` forces one."""
    network = netns.shared() if mode != "direct" else None
    if network is not None or mode == "proxy":
        return (network.addresses[:count] if network else []), "proxy"
    loopback = [f"127.0.0.{i}" for i in range(20, 40) if port_free(f"127.0.0.{i}", port)]
    return loopback[:count], "direct"
