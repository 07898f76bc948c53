"""Container processes of the local node: start through the wrapper, find again after a restart, stop.

Each start of a container (a "run") has a directory holding:
  run.json    written by the agent: first the start time and log file (before the wrapper is
              started), then also the wrapper's pid and start time
  wrapper.json written by the wrapper as it starts: its own pid and start time
  child.json  written by the wrapper: the container process's pid and start time
  exit.json   written by the wrapper when the process ends: exit code, signal, times
The wrapper and the process lead their own sessions, so they outlive the agent; an agent that
starts again re-attaches to a run whose wrapper is still the same process (pid and start time).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcycle.local import node_wrapper, procfs
from modelcycle.local.node_status import Terminated, exit_reason, rfc3339

WRAPPER = Path(node_wrapper.__file__).resolve()
RUN_FILE = "run.json"
LOST_EXIT_CODE = 137


def is_same_process(pid: int, ticks: int | None) -> bool:
    """Alive (not a zombie) and, when `ticks` is known, started at that time: not a reused pid."""
    fields = procfs.stat_fields(pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


@dataclass
class Run:
    """One start of one container."""

    directory: Path
    wrapper_pid: int
    wrapper_ticks: int | None
    started_at: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def child(self) -> dict[str, Any] | None:
        return _read_json(self.directory / node_wrapper.CHILD_FILE)

    @property
    def child_pid(self) -> int | None:
        child = self.child
        return int(child["pid"]) if child else None

    @property
    def container_id(self) -> str:
        return f"local://{self.child_pid or self.wrapper_pid}"

    def exit_info(self) -> dict[str, Any] | None:
        return _read_json(self.directory / node_wrapper.EXIT_FILE)

    def wrapper_alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None  # also reaps our own child
        return is_same_process(self.wrapper_pid, self.wrapper_ticks)

    def poll(self) -> Terminated | None:
        """How the run ended, or None while it runs. A wrapper that vanished without recording
        an exit (killed, machine rebooted) reads as exit 137, ContainerStatusUnknown."""
        info = self.exit_info()
        if info is None:
            if self.wrapper_alive():
                return None
            info = self.exit_info()  # it may have written the file just before exiting
        if info is None:
            return Terminated(
                exit_code=LOST_EXIT_CODE,
                reason="ContainerStatusUnknown",
                started_at=self.started_at,
                finished_at=rfc3339(datetime.datetime.now(datetime.UTC)),
                message="The container could not be located when the pod was terminated",
                container_id=self.container_id,
            )
        code = int(info.get("exitCode", LOST_EXIT_CODE))
        reason = "ContainerCannotRun" if info.get("error") else exit_reason(code)
        return Terminated(
            exit_code=code,
            reason=reason,
            started_at=str((self.child or {}).get("startedAt") or info.get("startedAt") or self.started_at),
            finished_at=str(info.get("finishedAt")),
            message=info.get("error"),
            signal=info.get("signal"),
            container_id=self.container_id,
        )

    def running_since(self) -> str:
        return str((self.child or {}).get("startedAt") or self.started_at)

    def signal(self, signum: int) -> None:
        """Ask politely: the wrapper forwards SIGTERM/SIGINT/SIGHUP to the container process."""
        if self.wrapper_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.wrapper_pid, signum)

    def kill(self) -> None:
        """SIGKILL the container's process group (the wrapper then records 137 and exits)."""
        child = self.child
        if child and is_same_process(int(child["pid"]), child.get("startTicks")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(child["pid"]), signal.SIGKILL)
        elif self.wrapper_alive():  # no child recorded yet: take the wrapper's group down
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.wrapper_pid, signal.SIGKILL)

    def to_json(self) -> dict[str, Any]:
        return {
            "wrapperPid": self.wrapper_pid,
            "wrapperStartTicks": self.wrapper_ticks,
            "startedAt": self.started_at,
            "log": str(self.log_path),
        }

    @classmethod
    def load(cls, directory: Path) -> Run | None:
        """The run recorded in `directory`; None when none was, or when the agent stopped before
        the wrapper started (nothing runs for that record)."""
        data = _read_json(directory / RUN_FILE)
        if data is None:
            return None
        if data.get("wrapperPid") is None:  # the agent stopped before it noted the wrapper's pid
            data = {**data, **_wrapper_record(directory)}
            if data.get("wrapperPid") is None:
                return None
        return cls(
            directory=directory,
            wrapper_pid=int(data["wrapperPid"]),
            wrapper_ticks=data.get("wrapperStartTicks"),
            started_at=str(data["startedAt"]),
            log_path=Path(data["log"]),
        )


def _wrapper_record(directory: Path) -> dict[str, Any]:
    record = _read_json(directory / node_wrapper.WRAPPER_FILE)
    if record is None:
        return {}
    return {"wrapperPid": record.get("pid"), "wrapperStartTicks": record.get("startTicks")}


def start_run(
    directory: Path, *, argv: Sequence[str], env: Mapping[str, str], cwd: str, log_path: Path
) -> Run:
    """Start `argv` through the wrapper in a session of its own; stdout and stderr go to `log_path`.

    The run is recorded before the wrapper starts, so an agent killed at any point of this call
    finds the run again (`Run.load`) or knows that nothing was started."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started_at = rfc3339(datetime.datetime.now(datetime.UTC))
    write_json(directory / RUN_FILE, {"startedAt": started_at, "log": str(log_path)})
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-I", "-S", str(WRAPPER), str(directory), "--", *argv],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    run = Run(directory, popen.pid, procfs.start_ticks(popen.pid), started_at, log_path, popen)
    write_json(directory / RUN_FILE, run.to_json())
    deadline = time.monotonic() + 5.0
    while run.child is None and run.exit_info() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return run


def read_tail(path: Path, max_bytes: int = 64 * 1024) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read()
    except OSError:
        return b""
