"""Processes of the local platform: start one in a session of its own, wait for it, stop it.

Shared by the platform (platform.py) and the real node (kubenode.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelcycle.errors import UserError
from modelcycle.local import controlplane as cp
from modelcycle.local import procfs

HEALTH_TIMEOUT = 2.0


class PlatformError(UserError):
    """A component did not start or stop; the message names its log."""


def http_ok(url: str, *, timeout: float = HEALTH_TIMEOUT) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def launch(
    component: str, argv: Sequence[str], *, log: Path, detach: bool, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], cp.ProcessRecord]:
    """Start a process in a session of its own, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=None if detach else cp.die_with_parent_hook(),
        )
    # The executable it runs (a venv's python is a symlink): what /proc/<pid>/exe will name.
    binary = os.path.realpath(argv[0])
    return popen, cp.ProcessRecord(component, popen.pid, binary, procfs.start_ticks(popen.pid))


def stop_process(record: cp.ProcessRecord, *, timeout: float, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL at once with kill=True) the process group; SIGKILL what outlives timeout."""
    if kill:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while record.is_running() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(record.pid, os.WNOHANG)
            time.sleep(0.02)
        return
    cp.terminate_processes([record], timeout=timeout)


def wait_until(
    check: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    detail: Callable[[], str] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail else ""
            raise PlatformError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)
