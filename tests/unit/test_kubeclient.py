"""modelcycle.kubeclient (the one REST transport) and the operator's kind-path Client over it,
against a scripted HTTP server: what goes out on the wire, and which error comes back."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client
from kubernetes.config import incluster_config

from modelcycle import kubeclient
from modelcycle.controllers import kube
from modelcycle.kubeclient import ApiError, Conflict, Kube, NotFound, WatchExpired


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    delay: float = 0.0


@dataclass
class FakeApiServer:
    """Answers requests in order from `answers` (200 {} when none is left) and records them."""

    answers: list[Answer] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def answer(self, status: int = 200, body: Any = None, *, delay: float = 0.0) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self.answers.append(Answer(status, data, delay))


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            answer = fake.answers.pop(0) if fake.answers else Answer()
            time.sleep(answer.delay)
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True  # a handler still sleeping must not hold up the test's end
    httpd.block_on_close = False
    fake.port = httpd.server_address[1]
    # A short poll interval: shutdown() waits for the serving loop's next poll.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


def configuration_for(server: FakeApiServer) -> client.Configuration:
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.port}")
    configuration.api_key = {"BearerToken": "Bearer first-token"}  # where the official loaders put it
    return configuration


@pytest.fixture
def kubernetes_api(server: FakeApiServer) -> Iterator[Kube]:
    api = Kube(configuration_for(server), user_agent="modelcycle-test")
    yield api
    api.close()


# --------------------------------------------------------------------------- errors


def test_404_raises_not_found_with_the_servers_message(server: FakeApiServer, kubernetes_api: Kube) -> None:
    server.answer(404, status_body(404, "NotFound", 'pods "web" not found'))
    with pytest.raises(NotFound) as raised:
        kubernetes_api.get("/api/v1/namespaces/ns/pods/web")
    error = raised.value
    assert (error.status, error.reason, error.message) == (404, "Not Found", 'pods "web" not found')
    assert json.loads(error.body)["reason"] == "NotFound"
    assert str(error) == '404 Not Found: pods "web" not found'


@pytest.mark.parametrize(
    ("status", "error_type"), [(409, Conflict), (422, ApiError), (500, ApiError), (403, ApiError)]
)
def test_an_error_status_raises_conflict_for_409_and_the_base_api_error_otherwise(
    server: FakeApiServer, kubernetes_api: Kube, status: int, error_type: type[ApiError]
) -> None:
    server.answer(status, status_body(status, "Whatever", "refused"))
    with pytest.raises(ApiError) as raised:
        kubernetes_api.create("/api/v1/namespaces/ns/pods", {"metadata": {"name": "web"}})
    assert type(raised.value) is error_type and raised.value.status == status


def test_an_error_body_that_is_not_a_status_is_the_message(
    server: FakeApiServer, kubernetes_api: Kube
) -> None:
    server.answer(503, b"upstream connect error")
    with pytest.raises(ApiError) as raised:
        kubernetes_api.get("/healthz")
    assert raised.value.message == "upstream connect error"


def test_get_or_none_is_none_only_for_404(server: FakeApiServer, kubernetes_api: Kube) -> None:
    server.answer(404, status_body(404, "NotFound", "gone"))
    assert kubernetes_api.get_or_none("/api/v1/nodes/n1") is None
    server.answer(403, status_body(403, "Forbidden", "no"))
    with pytest.raises(ApiError):
        kubernetes_api.get_or_none("/api/v1/nodes/n1")


def test_raw_returns_an_error_status_instead_of_raising(server: FakeApiServer, kubernetes_api: Kube) -> None:
    server.answer(502, b"address not allowed")
    assert kubernetes_api.raw("GET", "/api/v1/namespaces/ns/pods/p:8080/proxy/ready") == (
        502,
        b"address not allowed",
    )


# --------------------------------------------------------------------------- the wire


def test_every_request_asks_the_configuration_for_its_token_so_a_refreshed_one_is_used(
    server: FakeApiServer,
) -> None:
    configuration = configuration_for(server)
    tokens = iter(["first-token", "second-token"])

    def refresh(config: client.Configuration) -> None:  # what the loaders install for expiring tokens
        config.api_key["BearerToken"] = f"Bearer {next(tokens)}"

    configuration.refresh_api_key_hook = refresh
    api = Kube(configuration, user_agent="modelcycle-test")
    api.get("/api")
    api.get("/api")
    api.close()
    assert [s.headers["Authorization"] for s in server.seen] == ["Bearer first-token", "Bearer second-token"]
    assert {s.headers["User-Agent"] for s in server.seen} == {"modelcycle-test"}


def test_a_kubeconfig_token_is_sent_as_the_bearer_credential(server: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}],
                "users": [{"name": "u", "user": {"token": "sa-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api = Kube.from_kubeconfig(kubeconfig)
    api.get("/api")
    api.close()
    assert server.seen[0].headers["Authorization"] == "Bearer sa-token"
    assert server.seen[0].headers["User-Agent"] == "modelcycle"


def test_in_cluster_the_operator_sends_the_service_accounts_token(
    server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("not used: the fake server speaks plain HTTP")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
    configuration = kube.load_configuration()
    configuration.host = configuration.host.replace("https://", "http://")
    kube.Client(configuration).list(kind="Pod", namespace="ns")
    assert server.seen[0].headers["Authorization"] == "bearer sa-token"


def test_query_leaves_out_none_and_spells_booleans_in_lower_case(
    server: FakeApiServer, kubernetes_api: Kube
) -> None:
    kubernetes_api.get("/api/v1/pods", labelSelector="app=web,tier=1", fieldSelector=None, watch=False)
    assert server.seen[0].path == "/api/v1/pods?labelSelector=app%3Dweb%2Ctier%3D1&watch=false"


def test_a_body_is_sent_as_json_and_a_patch_with_its_own_content_type(
    server: FakeApiServer, kubernetes_api: Kube
) -> None:
    kubernetes_api.get("/api/v1/nodes/n1")
    kubernetes_api.put("/api/v1/nodes/n1", {"spec": {}})
    kubernetes_api.patch("/api/v1/nodes/n1", {"spec": {}}, content_type=kubeclient.STRATEGIC_MERGE_PATCH)
    get, put, patch = server.seen
    assert "Content-Type" not in get.headers and get.body == b""
    assert put.headers["Content-Type"] == "application/json" and json.loads(put.body) == {"spec": {}}
    assert patch.headers["Content-Type"] == kubeclient.STRATEGIC_MERGE_PATCH


def test_a_silent_server_times_out_instead_of_hanging(server: FakeApiServer, kubernetes_api: Kube) -> None:
    server.answer(200, {}, delay=3.0)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        kubernetes_api.request("GET", "/api", timeout=0.2)
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------- watch


def events(*items: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def test_watch_yields_events_until_the_server_ends_it(server: FakeApiServer, kubernetes_api: Kube) -> None:
    pod = {"metadata": {"name": "web"}}
    server.answer(200, events({"type": "ADDED", "object": pod}, {"type": "DELETED", "object": pod}))
    seen = list(kubernetes_api.watch("/api/v1/pods", timeout_seconds=5, resourceVersion="7"))
    assert [e["type"] for e in seen] == ["ADDED", "DELETED"]
    assert server.seen[0].path == (
        "/api/v1/pods?resourceVersion=7&watch=true&timeoutSeconds=5&allowWatchBookmarks=true"
    )


@pytest.mark.parametrize(
    "answer",
    [
        Answer(410, json.dumps(status_body(410, "Expired", "too old")).encode()),
        Answer(200, events({"type": "ERROR", "object": status_body(410, "Expired", "too old")})),
    ],
    ids=["410-status", "410-error-event"],
)
def test_a_too_old_resource_version_raises_watch_expired(
    server: FakeApiServer, kubernetes_api: Kube, answer: Answer
) -> None:
    server.answers.append(answer)
    with pytest.raises(WatchExpired):
        list(kubernetes_api.watch("/api/v1/pods", timeout_seconds=5))


def test_any_other_error_event_raises_its_api_error(server: FakeApiServer, kubernetes_api: Kube) -> None:
    server.answer(200, events({"type": "ERROR", "object": status_body(404, "NotFound", "no such namespace")}))
    with pytest.raises(NotFound, match="no such namespace"):
        list(kubernetes_api.watch("/api/v1/namespaces/gone/pods", timeout_seconds=5))


# --------------------------------------------------------------------------- the operator's Client


def test_the_operators_client_raises_the_shared_errors_under_its_own_names() -> None:
    assert (kube.ApiError, kube.NotFound, kube.Conflict) == (ApiError, NotFound, Conflict)


def test_the_operators_client_turns_kinds_into_paths_over_the_one_transport(server: FakeApiServer) -> None:
    operator = kube.Client(configuration_for(server))
    server.answer(404, status_body(404, "NotFound", "no job"))
    assert operator.get_or_none(kind="Job", namespace="ns", name="train") is None
    server.answer(200, {"items": [{"metadata": {"name": "a"}}]})
    assert operator.list(kind="Pod", namespace="ns", label_selector="app=web") == [
        {"metadata": {"name": "a"}}
    ]
    operator.patch(kind="TrainingRun", namespace="ns", name="r1", patch={"status": {}}, subresource="status")
    server.answer(404, status_body(404, "NotFound", "already gone"))
    operator.delete(kind="Pod", namespace="ns", name="web")  # deleting what is gone is done
    get, listed, patch, delete = server.seen
    assert get.path == "/apis/batch/v1/namespaces/ns/jobs/train"
    assert listed.path == "/api/v1/namespaces/ns/pods?labelSelector=app%3Dweb"
    assert patch.path == "/apis/modelcycle.io/v1alpha1/namespaces/ns/trainingruns/r1/status"
    assert patch.headers["Content-Type"] == kubeclient.MERGE_PATCH
    assert json.loads(delete.body) == {"propagationPolicy": "Background"}
    assert {s.headers["User-Agent"] for s in server.seen} == {"modelcycle-operator"}


def test_the_operators_pod_proxy_get_accepts_anything_and_raises_on_an_error(server: FakeApiServer) -> None:
    operator = kube.Client(configuration_for(server))
    server.answer(200, b"# HELP metric\n")
    assert operator.proxy_get(namespace="ns", pod="web", port=8080, url_path="/metrics") == b"# HELP metric\n"
    assert server.seen[0].path == "/api/v1/namespaces/ns/pods/web:8080/proxy/metrics"
    assert server.seen[0].headers["Accept"] == "*/*"
    server.answer(503, b"no endpoints")
    with pytest.raises(ApiError) as raised:
        operator.proxy_get(namespace="ns", pod="web", port=8080, url_path="metrics")
    assert raised.value.status == 503
