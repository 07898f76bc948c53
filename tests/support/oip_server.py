"""Run a real `modelcycle serve` process on loopback for the serving tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    grpc_port: int | None = None
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kwargs)

    def stderr(self) -> str:
        return "".join(self.stderr_lines)


def _pump(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


@contextlib.contextmanager
def serve(
    model_dir: Path | None,
    *,
    name: str = "iris",
    version: str = "1",
    args: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> Iterator[ServerProcess]:
    """Start `modelcycle serve` on 127.0.0.1 with free ports (REST and gRPC, unless `args` sets
    --grpc-port); stop it (SIGTERM) afterwards."""
    command = [
        sys.executable,
        "-m",
        "modelcycle",
        "serve",
        *(["--model-dir", str(model_dir)] if model_dir is not None else []),
        "--model-name",
        name,
        "--model-version",
        version,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *(() if "--grpc-port" in args else ("--grpc-port", "0")),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    server = ServerProcess(proc, 0)
    threading.Thread(target=_pump, args=(proc.stderr, server.stderr_lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    try:
        while server.port == 0:
            line = proc.stdout.readline()
            if not line:
                proc.wait(5)
                raise RuntimeError(f"the server exited ({proc.returncode}):\n{server.stderr()}")
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "listening":
                    server.port = int(event["port"])
                    server.grpc_port = event.get("grpcPort")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start:\n{server.stderr()}")
        threading.Thread(target=_pump, args=(proc.stdout, []), daemon=True).start()
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
