"""Startup, liveness and readiness probes, run against the pod's own loopback address."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def named_port(port: Any, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not a number nor a named port of the container")


def http_get(
    probe: Mapping[str, Any], container: Mapping[str, Any], *, pod_ip: str, timeout: float
) -> tuple[bool, str]:
    spec = probe["httpGet"]
    host = str(spec.get("host") or pod_ip)
    port = named_port(spec.get("port"), container)
    path = str(spec.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    headers = {"User-Agent": "kube-probe/modelcycle-local", "Accept": "*/*"}
    headers.update({str(h["name"]): str(h["value"]) for h in spec.get("httpHeaders") or []})
    connection: http.client.HTTPConnection
    if str(spec.get("scheme") or "HTTP").upper() == "HTTPS":
        connection = http.client.HTTPSConnection(
            host,
            port,
            timeout=timeout,
            context=ssl._create_unverified_context(),  # the kubelet does not verify
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read(10 * 1024)
        ok = 200 <= response.status < 400
        return ok, f"HTTP probe failed with statuscode: {response.status}" if not ok else ""
    except (OSError, http.client.HTTPException) as exc:
        return False, f'Get "http://{host}:{port}{path}": {exc}'
    finally:
        connection.close()


def tcp_socket(
    probe: Mapping[str, Any], container: Mapping[str, Any], *, pod_ip: str, timeout: float
) -> tuple[bool, str]:
    spec = probe["tcpSocket"]
    host = str(spec.get("host") or pod_ip)
    port = named_port(spec.get("port"), container)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"dial tcp {host}:{port}: {exc}"


def exec_command(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str, timeout: float
) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            list(argv), env=dict(env), cwd=cwd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout:g}s"
    except OSError as exc:
        return False, str(exc)
    output = (done.stdout + done.stderr).decode("utf-8", errors="replace")[-1024:]
    return done.returncode == 0, output


@dataclass
class ProbeState:
    """One probe of one container run: when it is due, its counts and its current result."""

    kind: str  # startup | liveness | readiness
    spec: Mapping[str, Any]
    started: float  # monotonic time the container started
    result: bool | None = None
    successes: int = 0
    failures: int = 0
    last_message: str = ""
    next_due: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.next_due = self.started + float(self.spec.get("initialDelaySeconds") or 0)
        # liveness: healthy until proven failing; readiness: not ready until it passes;
        # startup: unknown until it passes (True) or fails failureThreshold times (False).
        self.result = {"liveness": True, "readiness": False}.get(self.kind)

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds") or 1)

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold") or 1)

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold") or 3)

    def due(self, at: float | None = None) -> bool:
        return (time.monotonic() if at is None else at) >= self.next_due

    def record(self, ok: bool, message: str, at: float | None = None) -> bool | None:
        """Count one probe result; returns the new result when it changes, else None."""
        self.next_due = (time.monotonic() if at is None else at) + self.period
        self.last_message = message
        before = self.result
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.success_threshold:
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.failure_threshold:
                self.result = False
        return self.result if self.result != before else None
