"""The concept-drift scenario offline: the data the demo uses meets the issue's targets with the
example's estimator, window and base share (v1 falls >= 15 points, v2 within 5 of v1 before)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from modelcycle.local import concept_drift as scenario


def test_the_change_moves_the_relation_not_the_inputs() -> None:
    before, _ = scenario.sample(5000, 1, changed=False)
    after, _ = scenario.sample(5000, 2, changed=True)
    assert np.allclose(before.mean(axis=0), after.mean(axis=0), atol=0.06)
    assert np.allclose(before.std(axis=0), after.std(axis=0), atol=0.06)
    old, new = scenario.teacher(changed=False), scenario.teacher(changed=True)
    assert int(np.sum(old != new)) == 1


@pytest.mark.parametrize("seed", [100, 200, 300], ids=["seed-100", "seed-200", "seed-300"])
def test_v1_falls_and_v2_trained_on_recent_traffic_recovers(seed: int) -> None:
    result = scenario.offline_accuracies(seed=seed)
    assert result["v1Before"] - result["v1After"] >= scenario.DROP_TARGET, result
    assert result["v1Before"] - result["v2After"] <= scenario.RECOVER_TARGET, result
    assert all(line.endswith("met") and "NOT" not in line for line in scenario.verdict(**_args(result)))


def test_the_verdict_says_when_a_target_is_missed() -> None:
    lines = scenario.verdict(v1_before=0.9, v1_after=0.85, v2_after=0.7)
    assert [line.rsplit(": ", 1)[-1] for line in lines] == ["NOT MET", "NOT MET"]


def test_the_base_data_config_map_is_the_csv_the_dataset_reads() -> None:
    cm = scenario.config_map()
    frame = pd.read_csv(io.StringIO(cm["data"][scenario.CONFIG_MAP_KEY]))
    assert list(frame.columns) == [*scenario.FEATURES, scenario.TARGET]
    assert len(frame) == scenario.BASE_ROWS and set(frame[scenario.TARGET]) == {0, 1}
    assert len(cm["data"][scenario.CONFIG_MAP_KEY].encode()) < 1 << 20  # a ConfigMap holds 1 MiB
    assert scenario.config_map() == cm  # deterministic


def _args(result: dict[str, float]) -> dict[str, float]:
    return {"v1_before": result["v1Before"], "v1_after": result["v1After"], "v2_after": result["v2After"]}


class _Result:
    def __init__(self, version: str, predictions: list[int], endpoint: str) -> None:
        self.model_version, self.predictions, self.endpoint = version, predictions, endpoint


class _Client:
    """An OipClient stand-in: a model that predicts 1 where x1 > 0; records the feedback it gets."""

    def __init__(self) -> None:
        self.feedback_sent: list[tuple[str, list[dict[str, object]]]] = []
        self.calls = 0

    def infer(self, rows: list[list[float]], *, request_id: str) -> _Result:
        self.calls += 1
        return _Result("1", [int(r[0] > 0) for r in rows], f"pod-{self.calls % 2}")

    def feedback(self, items: list[dict[str, object]], *, endpoint: str) -> dict[str, object]:
        self.feedback_sent.append((endpoint, items))
        return {}


def test_the_demo_labels_every_request_by_id_at_the_replica_that_answered() -> None:
    from modelcycle.local import demo_concept_drift as demo

    client = _Client()
    seen = demo.Labelled()
    x, y = scenario.sample(25, 4, changed=False)
    demo.send_labelled(client, x, y, prefix="before", into=seen, batch=10)
    assert client.calls == 3 and seen.requests == 3 and seen.rows() == 25
    ids = [items[0]["id"] for _, items in client.feedback_sent]
    assert len(set(ids)) == 3 and all(str(i).startswith(demo.RUN + "-before-") for i in ids)
    assert [endpoint for endpoint, _ in client.feedback_sent] == ["pod-1", "pod-0", "pod-1"]
    assert sum(len(items[0]["labels"]) for _, items in client.feedback_sent) == 25  # type: ignore[arg-type]
    assert seen.accuracy("1") == pytest.approx(scenario.accuracy((x[:, 0] > 0).astype(int), y))
