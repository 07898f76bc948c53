"""The tiny supervisor the local node runs each container through (standard library only).

    python -I -S node_wrapper.py RUN_DIR -- EXECUTABLE ARG...

It records its own pid and start time in RUN_DIR/wrapper.json (so an agent killed before it
noted the wrapper's pid still finds it), starts the container's process in a process group of its
own, records the process's pid and start time in RUN_DIR/child.json, waits for it, and records
how it ended in RUN_DIR/exit.json (written atomically). It runs in a session of its own, so it
and the container outlive the node agent: an agent that restarts re-attaches by these files and
reads the exit code of a process that ended while it was away.

Signals: SIGTERM, SIGINT and SIGHUP sent to the wrapper are forwarded to the container process
only (as a container runtime signals PID 1); SIGKILL goes from the agent to the container's
process group directly, and the wrapper records exit code 137 as usual.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
from types import FrameType

WRAPPER_FILE = "wrapper.json"
CHILD_FILE = "child.json"
EXIT_FILE = "exit.json"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _start_ticks(pid: int) -> int | None:
    try:
        raw = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - tiny read, no context manager cost
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def _write_json(path: str, data: dict[str, object]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def exit_code_of(returncode: int) -> tuple[int, int | None]:
    """(exit code as a shell reports it, terminating signal or None) from Popen.returncode."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: node_wrapper.py RUN_DIR -- EXECUTABLE [ARG...]", file=sys.stderr)
        return 2
    run_dir, command = argv[0], argv[2:]
    started_at = _now()
    me = os.getpid()
    _write_json(os.path.join(run_dir, WRAPPER_FILE), {"pid": me, "startTicks": _start_ticks(me)})
    pending: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is None:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    # Handlers (not SIG_IGN) before the child starts: exec resets them to the default in the child.
    for forwarded in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(forwarded, forward)
    try:
        child = subprocess.Popen(command, process_group=0, close_fds=True)
    except OSError as exc:
        print(f"modelcycle local node: cannot start {command[0]}: {exc}", file=sys.stderr, flush=True)
        _write_json(
            os.path.join(run_dir, EXIT_FILE),
            {
                "exitCode": 127,
                "signal": None,
                "startedAt": started_at,
                "finishedAt": _now(),
                "error": str(exc),
            },
        )
        return 127
    for waiting in pending:
        forward(waiting, None)
    _write_json(
        os.path.join(run_dir, CHILD_FILE),
        {"pid": child.pid, "startTicks": _start_ticks(child.pid), "startedAt": started_at},
    )
    while True:
        try:
            returncode = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
    code, killed_by = exit_code_of(returncode)
    _write_json(
        os.path.join(run_dir, EXIT_FILE),
        {"exitCode": code, "signal": killed_by, "startedAt": started_at, "finishedAt": _now()},
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
