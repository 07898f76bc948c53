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
