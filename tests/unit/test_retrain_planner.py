"""plan_retrain, table-driven: cooldown, maxConcurrent, a source that cannot be cloned, and creation."""

from __future__ import annotations

from typing import Any

import pytest

from modelcycle.api import modelmonitor
from modelcycle.builders import meta
from modelcycle.planners import clock, retrain

NOW = 1_800_000_000.0


def monitor(
    *, cooldown: int = 3600, max_concurrent: int = 1, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": "iris-watch", "namespace": "ml", "uid": "uid-mon", "generation": 1},
        "spec": {
            "deploymentRef": {"name": "iris"},
            "retrain": {"enabled": True, "cooldownSeconds": cooldown, "maxConcurrent": max_concurrent},
        },
        "status": status or {},
    }


def run(name: str, *, age: float, finished: str | None = None) -> dict[str, Any]:
    conditions = [{"type": "Succeeded", "status": finished}] if finished else []
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": clock.rfc3339(NOW - age),
            "labels": {meta.MONITOR: "iris-watch"},
        },
        "status": {"conditions": conditions},
    }


SOURCE = {
    "apiVersion": "modelcycle.io/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "iris-train", "namespace": "ml"},
    "spec": {"datasetRef": {"name": "iris"}, "model": {"name": "iris"}},
}


def decide(
    owner: dict[str, Any],
    runs: list[dict[str, Any]],
    *,
    source: dict[str, Any] | None = SOURCE,
    source_name: str | None = "iris-train",
) -> retrain.RetrainDecision:
    return retrain.plan_retrain(
        owner,
        spec=modelmonitor.ModelMonitorSpec.model_validate(owner["spec"]),
        trigger="drift",
        message="2 of 4 features drifted",
        served_version=1,
        served_mv_name="iris-v1",
        runs=runs,
        source_name=source_name,
        source=source,
        now=NOW,
    )


CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]], str]] = {
    "first-retrain-creates-a-run": (monitor(), [], "RetrainCreated"),
    "cooldown-from-status": (
        monitor(status={"lastRetrainTime": clock.rfc3339(NOW - 600)}),
        [],
        "CoolingDown",
    ),
    "cooldown-from-a-labelled-run-survives-lost-status": (
        monitor(),
        [run("iris-watch-retrain-1", age=600, finished="True")],
        "CoolingDown",
    ),
    "cooldown-over": (
        monitor(status={"lastRetrainTime": clock.rfc3339(NOW - 4000)}),
        [run("iris-watch-retrain-1", age=4000, finished="True")],
        "RetrainCreated",
    ),
    "max-concurrent-reached": (
        monitor(cooldown=0),
        [run("iris-watch-retrain-1", age=5)],
        "MaxConcurrent",
    ),
    "finished-runs-do-not-count-against-max-concurrent": (
        monitor(cooldown=0),
        [
            run("iris-watch-retrain-1", age=5, finished="True"),
            run("iris-watch-retrain-2", age=3, finished="False"),
        ],
        "RetrainCreated",
    ),
    "max-concurrent-two-allows-a-second": (
        monitor(cooldown=0, max_concurrent=2),
        [run("iris-watch-retrain-1", age=5)],
        "RetrainCreated",
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_plan_retrain(name: str) -> None:
    owner, runs, reason = CASES[name]
    decision = decide(owner, runs)
    assert decision.reason == reason
    if reason == "RetrainCreated":
        assert decision.run is not None
        assert decision.status["lastRetrainTime"] == clock.rfc3339(NOW)
        assert decision.status["retrainRuns"][-1] == decision.run["metadata"]["name"]
        assert [e.reason for e in decision.events] == ["RetrainTriggered"]
    else:
        assert decision.run is None and decision.status == {} and decision.events == []


def test_cooldown_says_how_long_is_left() -> None:
    decision = decide(monitor(status={"lastRetrainTime": clock.rfc3339(NOW - 600)}), [])
    assert "3000s more" in decision.message


def test_max_concurrent_names_the_runs_in_progress() -> None:
    decision = decide(monitor(cooldown=0), [run("iris-watch-retrain-9", age=5)])
    assert "iris-watch-retrain-9" in decision.message


@pytest.mark.parametrize(
    ("source_name", "expected"),
    [(None, "names no training run"), ("iris-train", "no longer exists")],
    ids=["no-lineage", "source-run-deleted"],
)
def test_a_served_version_that_cannot_be_cloned_is_reported(source_name: str | None, expected: str) -> None:
    decision = decide(monitor(), [], source=None, source_name=source_name)
    assert decision.reason == "RetrainSourceMissing"
    assert expected in decision.message
    assert decision.run is None
    assert [(e.reason, e.type) for e in decision.events] == [("RetrainSourceMissing", "Warning")]


def test_the_history_of_runs_keeps_the_newest_twenty() -> None:
    old = [f"iris-watch-retrain-{i}" for i in range(25)]
    decision = decide(monitor(status={"retrainRuns": old}), [])
    assert len(decision.status["retrainRuns"]) == retrain.RETRAIN_RUNS_LIMIT
    assert decision.status["retrainRuns"][-1] == decision.run["metadata"]["name"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("labels", "reason"),
    [({meta.MONITOR: "iris-watch"}, "RetrainCreated"), ({}, "NameConflict")],
    ids=["ours-from-this-window", "someone-elses"],
)
def test_a_taken_name_is_ours_or_a_conflict(labels: dict[str, str], reason: str) -> None:
    existing = {"metadata": {"name": "iris-watch-retrain-500000", "labels": labels}}
    decision = retrain.on_name_taken(monitor(), existing)
    assert decision.reason == reason
    assert decision.run is None
