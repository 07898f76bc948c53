"""The wrapper and run records: exit codes survive the agent, signals reach the process, re-attach works."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from modelcycle.local.node_process import Run, is_same_process, start_run, write_json
from modelcycle.local.node_status import Terminated
from modelcycle.local.node_wrapper import exit_code_of
from modelcycle.local.procfs import start_ticks

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the local node needs /proc")


def wait_for_end(run: Run, timeout: float = 10.0) -> Terminated:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = run.poll()
        if ended is not None:
            return ended
        time.sleep(0.02)
    raise AssertionError("the run did not end")


def start(tmp_path: Path, code: str) -> Run:
    return start_run(
        tmp_path / "run",
        argv=[sys.executable, "-c", code],
        env={"PATH": os.environ.get("PATH", ""), "GREETING": "hello"},
        cwd=str(tmp_path),
        log_path=tmp_path / "logs" / "0.log",
    )


def test_exit_code_of() -> None:
    assert exit_code_of(0) == (0, None)
    assert exit_code_of(3) == (3, None)
    assert exit_code_of(-15) == (143, 15)
    assert exit_code_of(-9) == (137, 9)


def test_run_records_exit_code_output_and_environment(tmp_path: Path) -> None:
    run = start(
        tmp_path, "import os, sys; print(os.environ['GREETING']); print('oops', file=sys.stderr); sys.exit(3)"
    )
    ended = wait_for_end(run)
    assert ended.exit_code == 3
    assert ended.reason == "Error"
    assert ended.container_id == f"local://{run.child_pid}"
    assert sorted((tmp_path / "logs" / "0.log").read_text().split()) == ["hello", "oops"]


def test_sigterm_is_forwarded_and_recorded(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('graceful', flush=True), sys.exit(7)))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    run = start(tmp_path, code)
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "logs" / "0.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    run.signal(signal.SIGTERM)
    ended = wait_for_end(run)
    assert ended.exit_code == 7
    assert "graceful" in (tmp_path / "logs" / "0.log").read_text()


def test_kill_records_137(tmp_path: Path) -> None:
    run = start(
        tmp_path, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    run.kill()
    ended = wait_for_end(run)
    assert ended.exit_code == 137
    assert ended.signal == 9


def test_a_second_agent_re_attaches_and_reads_the_exit_code(tmp_path: Path) -> None:
    run = start(tmp_path, "import time; time.sleep(0.5); raise SystemExit(5)")
    again = Run.load(tmp_path / "run")
    assert again is not None
    assert again.popen is None  # as after a restart: not our child any more
    assert again.wrapper_pid == run.wrapper_pid
    assert again.poll() is None  # still running
    ended = wait_for_end(again)
    assert ended.exit_code == 5
    assert run.popen is not None
    run.popen.wait(5)


def test_a_vanished_wrapper_reads_as_container_status_unknown(tmp_path: Path) -> None:
    run = start(tmp_path, "import time; time.sleep(60)")
    child = run.child_pid
    assert child is not None
    os.killpg(run.wrapper_pid, signal.SIGKILL)  # the wrapper dies without writing exit.json
    os.killpg(child, signal.SIGKILL)
    ended = wait_for_end(run)
    assert ended.exit_code == 137
    assert ended.reason == "ContainerStatusUnknown"


def test_pid_reuse_is_detected() -> None:
    me = os.getpid()
    ticks = start_ticks(me)
    assert is_same_process(me, ticks)
    assert not is_same_process(me, (ticks or 0) + 1)
    assert not is_same_process(2**22 + 12345, None)


def test_command_that_cannot_start_is_recorded(tmp_path: Path) -> None:
    run = start_run(
        tmp_path / "run",
        argv=[str(tmp_path / "not-executable")],
        env={},
        cwd=str(tmp_path),
        log_path=tmp_path / "0.log",
    )
    ended = wait_for_end(run)
    assert ended.exit_code == 127
    assert ended.reason == "ContainerCannotRun"


def test_a_run_whose_wrapper_pid_was_never_noted_is_found_by_the_wrappers_own_record(
    tmp_path: Path,
) -> None:
    run = start(tmp_path, "import time; time.sleep(60)")
    # As if the agent died right after starting the wrapper, before it noted the wrapper's pid.
    write_json(tmp_path / "run" / "run.json", {"startedAt": run.started_at, "log": str(run.log_path)})
    again = Run.load(tmp_path / "run")
    assert again is not None
    assert (again.wrapper_pid, again.wrapper_ticks) == (run.wrapper_pid, run.wrapper_ticks)
    assert again.poll() is None
    again.kill()
    assert wait_for_end(again).exit_code == 137


def test_a_record_whose_wrapper_never_started_loads_as_no_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    write_json(tmp_path / "run" / "run.json", {"startedAt": "2026-01-01T00:00:00Z", "log": "0.log"})
    assert Run.load(tmp_path / "run") is None
