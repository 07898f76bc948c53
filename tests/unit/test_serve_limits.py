"""The model server bounds the request line, each header, all headers and their count, and the body.

Each refusal is a JSON error sent as soon as the limit is crossed (the rest is never read), and is
counted in modelcycle_inference_requests_total{outcome="client_error"}. A real `modelcycle serve`
process on 127.0.0.1; raw sockets where requests/urllib would refuse to send the request.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from support import models
from support.oip_server import ServerProcess, serve

NAME = "iris"
INFER = f"/v2/models/{NAME}/infer"
REFUSED = re.compile(
    rb'modelcycle_inference_requests_total\{model="iris",outcome="client_error",version="1"\} (\S+)'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    iris = models.iris_classifier(tmp_path_factory.mktemp("iris"))
    with serve(iris.path, name=NAME, version="1", args=("--max-body-bytes", "100000")) as s:
        yield s


def _exchange(server: ServerProcess, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send payload, read the one response until the server closes; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)  # may be refused mid-send: the answer is already on its way
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _refused_count(server: ServerProcess) -> float:
    found = REFUSED.search(server.get("/metrics").content)
    return float(found.group(1)) if found else 0.0


def _error(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    assert status == expected, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    message: str = json.loads(body)["error"]
    return message


LIMITED = [
    pytest.param(b"GET /v2/health/live?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, id="url-9k"),
    pytest.param(b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431, id="header-9k"),
    pytest.param(
        b"GET /v2/health/live HTTP/1.1\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4000) for i in range(9))
        + b"\r\n",
        431,
        id="headers-36k-total",
    ),
    pytest.param(
        b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
        431,
        id="101-headers",
    ),
    pytest.param(
        f"POST {INFER} HTTP/1.1\r\nContent-Length: 100001\r\n\r\n".encode(),
        413,
        id="declared-body-over-limit",
    ),
]


@pytest.mark.parametrize(("payload", "status"), LIMITED)
def test_request_over_a_limit_gets_a_json_error_and_is_counted(
    server: ServerProcess, payload: bytes, status: int
) -> None:
    before = _refused_count(server)
    message = _error(*_exchange(server, payload), status)
    assert "limit" in message or "more than" in message
    assert _refused_count(server) == before + 1
    assert server.get("/v2/health/ready").status_code == 200


def test_requests_at_the_limits_are_served(server: ServerProcess) -> None:
    url = "/v2/health/live?" + "q" * (8192 - len("/v2/health/live?"))
    headers = {f"X-{i}": "v" * 300 for i in range(70)}  # with X-Big: 90 headers, under 32 KiB together
    headers["X-Big"] = "v" * (8192 - len("X-Big"))
    assert server.get(url, headers=headers).status_code == 200


def test_huge_url_is_refused_before_it_is_read(server: ServerProcess) -> None:
    # The server answers 414 after 8 KiB and reads no more: the client learns it while sending.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /" + b"a" * (1 << 20))  # 1 MiB of URL, request line never finished
        response = sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 414 URI Too Long"), response[:200]
        # Whatever else arrives is discarded for a moment, then the connection is closed.
        deadline = time.monotonic() + 15
        with pytest.raises(OSError):
            while time.monotonic() < deadline:
                sock.sendall(b"a" * (1 << 20))
    assert server.get("/v2/health/ready").status_code == 200


def test_other_clients_are_answered_while_huge_heads_arrive(server: ServerProcess) -> None:
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX: " + b"v" * (4 << 20))
            except OSError:
                pass

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        answered = [server.get("/v2/health/ready").status_code for _ in range(20)]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert answered == [200] * 20


def test_limits_are_flags(tmp_path_factory: pytest.TempPathFactory) -> None:
    iris = models.iris_classifier(tmp_path_factory.mktemp("iris-small"))
    flags = (
        "--max-request-line-bytes",
        "64",
        "--max-header-bytes",
        "100",
        "--max-headers-total-bytes",
        "300",
        "--max-headers",
        "5",
    )
    with serve(iris.path, name=NAME, version="1", args=flags) as small:
        assert small.get("/v2/health/live?" + "q" * 40).status_code == 200
        assert small.get("/v2/health/live?" + "q" * 60).status_code == 414
        assert small.get("/v2/health/live", headers={"X-A": "v" * 120}).status_code == 431
        assert small.get("/v2/health/live", headers={f"X-{i}": "v" * 60 for i in range(4)}).status_code == 431
        status, _, _ = _exchange(
            small, b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: v\r\n" % i for i in range(6)) + b"\r\n"
        )
        assert status == 431
        started = time.monotonic()
        assert small.get("/v2/health/ready").status_code == 200
        assert time.monotonic() - started < 10
