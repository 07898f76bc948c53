"""The server's bounded live window and feedback store agree with brute force."""

from __future__ import annotations

import numpy as np
import pytest

from modelcycle.workloads import drift
from modelcycle.workloads.serve_stats import Column, FeedbackStore, LiveWindow


def make_window(capacity: int) -> LiveWindow:
    a = drift.FeatureBins("a", "numeric", np.array([-1.0, 0.0, 1.0]), (), np.ones(4))
    b = drift.FeatureBins("b", "numeric", np.array([0.5]), (), np.ones(2))
    c = drift.FeatureBins("c", "categorical", np.empty(0), ("1", "2", "3"), np.ones(4))
    pred = drift.FeatureBins("__prediction__", "categorical", np.empty(0), (0, 1), np.zeros(3))
    return LiveWindow([Column(a, 0), Column(b, 2), Column(c, 1), Column(pred, -1)], capacity)


def brute_force(rows: np.ndarray, preds: np.ndarray) -> dict[str, list[int]]:
    a = np.bincount(drift.bin_numeric(rows[:, 0], [-1.0, 0.0, 1.0]), minlength=5)
    b = np.bincount(drift.bin_numeric(rows[:, 2], [0.5]), minlength=3)
    c = np.bincount(drift.bin_categorical(rows[:, 1], ["1", "2", "3"]), minlength=5)
    p = np.bincount(drift.bin_categorical(preds, [0, 1]), minlength=4)
    return {"a": a.tolist(), "b": b.tolist(), "c": c.tolist(), "p": p.tolist()}


def window_counts(window: LiveWindow) -> dict[str, list[int]]:
    counts, _, _, _ = window.snapshot()
    out = {}
    for column, col_counts, nulls in window.split(counts):
        out[column.bins.name[:1] if column.index >= 0 else "p"] = [*col_counts.tolist(), nulls]
    return out


@pytest.mark.parametrize("capacity", [1, 7, 100])
def test_window_matches_the_last_rows(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    window = make_window(capacity)
    seen_rows, seen_preds = [], []
    for _ in range(40):
        n = int(rng.integers(1, 30))
        rows = np.column_stack([rng.normal(size=n), rng.integers(1, 5, n), rng.normal(size=n)])
        rows[rng.random(n) < 0.1, 0] = np.nan
        preds = rng.integers(0, 2, n)
        window.add(window.bin_rows(rows, preds))
        seen_rows.append(rows)
        seen_preds.append(preds)
        all_rows, all_preds = np.concatenate(seen_rows), np.concatenate(seen_preds)
        expected = brute_force(all_rows[-capacity:], all_preds[-capacity:])
        assert window_counts(window) == expected
        _, cumulative, filled, total = window.snapshot()
        assert filled == min(capacity, len(all_rows)) and total == len(all_rows)
        assert int(cumulative.sum()) == 4 * len(all_rows)


def test_window_memory_is_bounded() -> None:
    window = make_window(50)
    rows = np.zeros((10_000, 3))
    window.add(window.bin_rows(rows, np.zeros(10_000)))
    assert window.ring.shape == (50, 4) and window.snapshot()[2] == 50


def test_object_rows_with_strings() -> None:
    window = make_window(10)
    rows = np.array([[0.5, "2", 1.0], [None, "9", 0.0]], dtype=object)
    window.add(window.bin_rows(rows, np.array([1, 0])))
    counts = window_counts(window)
    assert counts["a"] == [0, 0, 1, 0, 1]  # 0.5 in (0, 1], None is null
    assert counts["c"] == [0, 1, 0, 1, 0]  # "9" unseen


def test_feedback_by_request_id_and_window() -> None:
    store = FeedbackStore(task="classification", classes=np.array([0, 1, 2]), capacity=4, max_requests=2)
    store.remember("r1", np.array([0, 1]))
    store.remember("r2", np.array([2]))
    store.remember("r3", np.array([1]))  # evicts r1
    with pytest.raises(KeyError):
        store.add([0, 1], request_id="r1", predictions=None)
    assert store.add([2], request_id="r2", predictions=None) == 1
    with pytest.raises(KeyError):  # an id is used once
        store.add([2], request_id="r2", predictions=None)
    with pytest.raises(ValueError, match="labels for"):
        store.add([1, 1], request_id="r3", predictions=None)
    with pytest.raises(ValueError, match="not classes"):
        store.add([7], request_id="r3", predictions=None)
    assert store.add([0, 0, 1, 1], request_id=None, predictions=[0, 1, 1, 1]) == 4
    stats = store.statistics()
    # window of 4: the last four pairs (true, predicted): (0,0) (0,1) (1,1) (1,1)
    assert stats["count"] == 4 and stats["totalCount"] == 5
    assert stats["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert drift.performance(stats)["accuracy"] == pytest.approx(0.75)


def test_feedback_regression() -> None:
    store = FeedbackStore(task="regression", classes=None, capacity=100)
    store.add([1.0, 2.0, 4.0], request_id=None, predictions=[1.5, 2.0, 3.0])
    metrics = drift.performance(store.statistics())
    assert metrics["mae"] == pytest.approx(0.5) and metrics["rmse"] == pytest.approx(np.sqrt(1.25 / 3))
    with pytest.raises(ValueError, match="numbers"):
        store.add(["x"], request_id=None, predictions=[1.0])


def test_numeric_predictions_are_counted_not_the_last_input_column() -> None:
    a = drift.FeatureBins("a", "numeric", np.array([0.0]), (), np.ones(2))
    pred = drift.FeatureBins("__prediction__", "numeric", np.array([10.0]), (), np.zeros(2))
    window = LiveWindow([Column(a, 0), Column(pred, -1)], 10)
    window.add(window.bin_rows(np.array([[-1.0], [1.0], [2.0]]), np.array([5.0, 20.0, 30.0])))
    counts = {
        column.bins.name: [*c.tolist(), nulls] for column, c, nulls in window.split(window.snapshot()[0])
    }
    assert counts == {"a": [1, 2, 0], "__prediction__": [1, 2, 0]}
