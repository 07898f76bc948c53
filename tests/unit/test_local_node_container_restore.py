"""A restarted node agent reads each container's state back: a start is counted exactly once,
wherever the previous agent was killed between recording a run and counting it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcycle.local.node_pod import Container
from modelcycle.local.node_process import Run, start_run, write_json

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the local node needs /proc")

SPEC = {"name": "server", "command": ["serve"]}


@pytest.fixture
def started() -> Iterator[list[Run]]:
    runs: list[Run] = []
    yield runs
    for run in runs:
        run.kill()
        if run.popen is not None:
            run.popen.wait(10)


def start_sleeper(container: Container, index: int, started: list[Run]) -> Run:
    run = start_run(
        container.run_dir(index),
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        env={"PATH": os.environ.get("PATH", "")},
        cwd=str(container.directory.parent),
        log_path=container.directory / "logs" / f"{index}.log",
    )
    started.append(run)
    return run


def restored(directory: Path) -> Container:
    container = Container(dict(SPEC), directory)
    container.load()
    return container


@pytest.mark.parametrize(
    ("counted_starts", "restarts_before", "restarts_after"),
    [(0, 0, 0), (1, 0, 1), (3, 2, 3)],
    ids=["first-start", "first-restart", "third-restart"],
)
def test_agent_killed_after_starting_a_run_but_before_counting_it_re_attaches_and_counts_it_once(
    tmp_path: Path, started: list[Run], counted_starts: int, restarts_before: int, restarts_after: int
) -> None:
    before = Container(dict(SPEC), tmp_path / "server")
    before.starts, before.restart_count = counted_starts, restarts_before
    if counted_starts:
        before.save()
    run = start_sleeper(before, counted_starts, started)

    after = restored(tmp_path / "server")

    assert after.run is not None and after.run.wrapper_pid == run.wrapper_pid
    assert (after.starts, after.restart_count) == (counted_starts + 1, restarts_after)
    assert after.running


def test_agent_killed_after_counting_a_run_re_attaches_to_it(tmp_path: Path, started: list[Run]) -> None:
    before = Container(dict(SPEC), tmp_path / "server")
    run = start_sleeper(before, 0, started)
    before.starts = 1
    before.save()

    after = restored(tmp_path / "server")

    assert after.run is not None and after.run.wrapper_pid == run.wrapper_pid
    assert (after.starts, after.restart_count) == (1, 0)


@pytest.mark.parametrize("counted_starts", [0, 2], ids=["never-started", "restart-never-started"])
def test_agent_killed_before_the_wrapper_started_leaves_nothing_to_re_attach(
    tmp_path: Path, counted_starts: int
) -> None:
    before = Container(dict(SPEC), tmp_path / "server")
    before.starts, before.restart_count = counted_starts, max(counted_starts - 1, 0)
    before.save()
    pending = before.run_dir(counted_starts)
    pending.mkdir(parents=True)
    write_json(pending / "run.json", {"startedAt": "2026-11-26T00:00:00Z", "log": "x.log"})

    after = restored(tmp_path / "server")

    assert after.run is None
    assert (after.starts, after.restart_count) == (counted_starts, max(counted_starts - 1, 0))
