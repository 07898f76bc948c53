"""modelcycle.local.traffic's transports: straight to the pod IP, or through the API server's proxy."""

from __future__ import annotations

from typing import Any

import pytest

from modelcycle.local import traffic


class FakeKube:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data
        self.calls: list[tuple[str, str, Any]] = []

    def raw(self, method: str, path: str, *, body: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        self.calls.append((method, path, body))
        return self.status, self.data


def test_api_server_proxy_sends_to_the_chosen_pod() -> None:
    kube = FakeKube(200, b'{"model_version": "2"}')
    proxy = traffic.ApiServerProxy(kube, "iris-ns")  # type: ignore[arg-type]
    endpoint = traffic.Endpoint("iris-abc", "10.244.0.7", 8080, "2")
    status, body = proxy(endpoint, "POST", "/v2/models/iris/infer", {"inputs": []})
    assert (status, body) == (200, {"model_version": "2"})
    assert kube.calls == [
        ("POST", "/api/v1/namespaces/iris-ns/pods/iris-abc:8080/proxy/v2/models/iris/infer", {"inputs": []})
    ]


def test_api_server_proxy_passes_errors_through() -> None:
    kube = FakeKube(502, b"address not allowed")
    proxy = traffic.ApiServerProxy(kube, "ns")  # type: ignore[arg-type]
    status, body = proxy(traffic.Endpoint("p", "127.1.0.2", 8080), "GET", "/v2/models/m")
    assert status == 502 and body == {"raw": "address not allowed"}


def test_use_transport_selects_and_restores() -> None:
    assert traffic.current_transport() == "direct"
    previous = traffic.use_transport("service-proxy")
    try:
        assert traffic.current_transport() == "service-proxy"
        kube = FakeKube(200, b"{}")
        assert isinstance(traffic.transport_for("service-proxy", kube, "ns"), traffic.ApiServerProxy)  # type: ignore[arg-type]
        assert traffic.transport_for("direct", kube, "ns") is traffic.http_json  # type: ignore[arg-type]
    finally:
        traffic.use_transport(previous)
    with pytest.raises(ValueError, match="unknown transport"):
        traffic.use_transport("kube-proxy")
