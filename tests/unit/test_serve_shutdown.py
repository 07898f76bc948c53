"""SIGTERM: the server stops accepting, answers the requests it already has, and exits 0."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from support import models
from support.oip_server import serve


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_sigterm_finishes_in_flight_requests(tmp_path: Path) -> None:
    model = models.iris_classifier(tmp_path / "iris")
    body = json.dumps(
        {
            "id": "late",
            "inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": model.x[:1].tolist()}],
        }
    ).encode()
    head = f"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with serve(model.path, name="iris") as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        busy.sendall(head + body[:20])  # a request half received when the signal comes
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # no new connections, not ready
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        # the idle keep-alive connection was closed
        assert read_response(idle) == b""
        # the half-received request is still answered, with Connection: close
        busy.sendall(body[20:])
        answer = read_response(busy)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b"connection: close" in answer.lower() and b'"id":"late"' in answer
        assert server.proc.wait(15) == 0
        assert "stopped (clean)" in server.stderr()


def test_idle_and_slow_connections_are_closed(tmp_path: Path) -> None:
    model = models.iris_classifier(tmp_path / "iris")
    args = ("--keepalive-timeout", "1", "--request-timeout", "1")
    with serve(model.path, name="iris", args=args) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        assert read_response(idle) == b""  # closed after about a second of idleness
        answer = read_response(slow)
        assert answer.startswith(b"HTTP/1.1 408") and b"error" in answer
        assert time.monotonic() - started < 8
        assert server.get("/v2/health/ready").status_code == 200


def test_sigterm_with_drain_delay_answers_new_requests_while_not_ready(tmp_path: Path) -> None:
    model = models.iris_classifier(tmp_path / "iris")
    request = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": model.x[:1].tolist()}]}
    with serve(model.path, name="iris", args=("--drain-delay", "3")) as server:
        assert server.get("/v2/health/ready").status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # Load balancers see it is not ready; requests they still route here are answered.
        assert server.get("/v2/health/ready").status_code == 503
        answered = server.post("/v2/models/iris/infer", json=request)
        assert answered.status_code == 200, answered.text
        assert server.proc.poll() is None
        assert server.proc.wait(15) == 0
        assert "stopped (clean)" in server.stderr()


def test_second_signal_cuts_the_drain_delay_short(tmp_path: Path) -> None:
    model = models.iris_classifier(tmp_path / "iris")
    with serve(model.path, name="iris", args=("--drain-delay", "60")) as server:
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(10) == 0
