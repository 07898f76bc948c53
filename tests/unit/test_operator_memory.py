"""The operator gives memory back once a burst of objects is gone, and only then."""

from __future__ import annotations

import pytest

from modelcycle.controllers import memory


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("sizes", "trims"),
    [
        pytest.param([0, 500, 1000, 1000], 0, id="growing-or-steady"),
        pytest.param([1000, 0], 0, id="shrunk-but-not-settled"),
        pytest.param([1000, 0, 0], 1, id="shrunk-and-settled"),
        pytest.param([1000, 950, 950], 0, id="a-small-drop"),
        pytest.param([1000, 0, 0, 0, 0], 1, id="once-per-drop"),
        pytest.param([1000, 0, 0, 1000, 0, 0], 2, id="each-burst"),
    ],
)
def test_memory_is_given_back_after_the_store_shrank_and_held_still(sizes: list[int], trims: int) -> None:
    clock = Clock()
    done: list[int] = []
    trimmer = memory.Trimmer(clock=clock, trim=lambda: done.append(1), settle_seconds=6)
    for size in sizes:
        trimmer.observe(size)
        clock.now += 7
    assert len(done) == trims


def test_malloc_trim_answers_without_raising() -> None:
    assert memory.malloc_trim() in (True, False)


def test_limiting_malloc_arenas_answers_without_raising() -> None:
    assert memory.limit_arenas(8) in (True, False)  # glibc's default for this 1-8 core machine
