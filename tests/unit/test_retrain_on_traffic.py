"""Retraining on recent labelled traffic (ModelMonitor.spec.retrain.traffic), pure planning:
the traffic Dataset first, with the base Dataset's rules; the run only once that Dataset is Ready,
its annotations naming both snapshots; no run when the window holds too few labelled rows."""

from __future__ import annotations

from typing import Any

import pytest

from modelcycle.api import dataset as dataset_api
from modelcycle.api import modelmonitor
from modelcycle.builders import meta, retraining
from modelcycle.planners import clock, retrain

NOW = 1_800_000_000.0
SHA_TRAFFIC = "c" * 64
SHA_BASE = "b" * 64

BASE = {
    "apiVersion": "modelcycle.io/v1alpha1",
    "kind": "Dataset",
    "metadata": {"name": "iris", "namespace": "ml"},
    "spec": {
        "source": {"builtin": {"name": "iris"}},
        "target": "target",
        "schema": [{"name": "petal width (cm)", "min": 0}],
        "validation": {"minRows": 20},
        "refreshSeconds": 3600,
    },
}
SOURCE = {
    "apiVersion": "modelcycle.io/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "iris-train", "namespace": "ml"},
    "spec": {"datasetRef": {"name": "iris"}, "model": {"name": "iris"}},
}


def monitor(**traffic: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": "iris-watch", "namespace": "ml", "uid": "uid-mon", "generation": 1},
        "spec": {
            "deploymentRef": {"name": "iris-prod"},
            "retrain": {"enabled": True, "cooldownSeconds": 600, "traffic": traffic},
        },
        "status": {},
    }


def decide(owner: dict[str, Any], base: dict[str, Any] | None = BASE) -> retrain.RetrainDecision:
    return retrain.plan_retrain(
        owner,
        spec=modelmonitor.ModelMonitorSpec.model_validate(owner["spec"]),
        trigger="performance",
        message="accuracy 0.61 is below the minimum 0.8",
        served_version=1,
        served_mv_name="iris-v1",
        runs=[],
        source_name="iris-train",
        source=SOURCE,
        now=NOW,
        base=base,
    )


def dataset_state(kind: str) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    status: dict[str, Any] = {"conditions": conditions}
    if kind == "ready":
        conditions.append({"type": "Ready", "status": "True", "reason": "SnapshotReady"})
        status["snapshot"] = {"sha256": SHA_TRAFFIC, "uri": "pvc://x"}
        status["traffic"] = {"joined": 180, "mergedRows": 77, "mergedSnapshot": SHA_BASE}
    elif kind == "stalled":
        conditions.append({"type": "Ready", "status": "False", "reason": "TooFewLabelledRows"})
        conditions.append(
            {
                "type": "Stalled",
                "status": "True",
                "reason": "TooFewLabelledRows",
                "message": "12 labelled rows",
            }
        )
    else:
        conditions.append({"type": "Reconciling", "status": "True", "reason": "Snapshotting"})
    return {"metadata": {"name": "iris-watch-retrain-3000000-traffic"}, "status": status}


def test_the_traffic_dataset_reads_the_monitored_deployment_with_the_base_rules() -> None:
    decision = decide(monitor(window={"lastSeconds": 900}, baseShare=0.25, minLabelledRows=150))
    assert decision.run is not None and decision.dataset is not None
    ds = decision.dataset
    run_name = decision.run["metadata"]["name"]
    assert ds["metadata"]["name"] == f"{run_name}-traffic"
    assert ds["metadata"]["labels"][meta.MONITOR] == "iris-watch"
    assert "ownerReferences" not in ds["metadata"]
    assert ds["metadata"]["annotations"] == {
        retraining.BASE_DATASET: "iris",
        retraining.RETRAINING_RUN: run_name,
    }
    assert ds["spec"] == {
        "source": {
            "traffic": {
                "deployment": "iris-prod",
                "window": {"lastSeconds": 900},
                "minLabelledRows": 150,
                "mergeWith": {"dataset": "iris", "share": 0.25},
            }
        },
        "target": "target",
        "schema": [{"name": "petal width (cm)", "min": 0}],
        "validation": {"minRows": 20},
    }
    dataset_api.DatasetSpec.model_validate(ds["spec"])  # what the API server will accept
    assert decision.run["spec"]["datasetRef"] == {"name": ds["metadata"]["name"]}
    assert decision.run["metadata"]["annotations"][retraining.BASE_DATASET] == "iris"


def test_a_base_share_of_zero_trains_on_traffic_alone() -> None:
    decision = decide(monitor(baseShare=0))
    assert decision.dataset is not None
    assert "mergeWith" not in decision.dataset["spec"]["source"]["traffic"]


def test_a_missing_base_dataset_is_reported_not_guessed() -> None:
    decision = decide(monitor(), base=None)
    assert decision.reason == "RetrainSourceMissing" and decision.run is None and decision.dataset is None


@pytest.mark.parametrize(
    ("state", "reason", "creates"),
    [
        ("absent", "CollectingTraffic", "dataset"),
        ("snapshotting", "CollectingTraffic", None),
        ("stalled", "TooFewLabelledRows", None),
        ("ready", "RetrainCreated", "run"),
    ],
    ids=["absent-creates-the-dataset", "snapshotting-waits", "too-few-rows-no-run", "ready-creates-the-run"],
)
def test_the_run_waits_for_its_traffic_dataset(state: str, reason: str, creates: str | None) -> None:
    planned = decide(monitor())
    outcome = retrain.on_traffic_dataset(planned, None if state == "absent" else dataset_state(state))
    assert outcome.reason == reason
    assert (outcome.dataset is not None) == (creates == "dataset")
    assert (outcome.run is not None) == (creates == "run")
    if creates != "run":
        assert outcome.status == {}  # no lastRetrainTime: the cooldown starts with a run
    if state == "stalled":
        assert [(e.reason, e.type) for e in outcome.events] == [("TooFewLabelledRows", "Warning")]
        assert "12 labelled rows" in outcome.message


def test_the_run_created_on_traffic_names_both_snapshots() -> None:
    outcome = retrain.on_traffic_dataset(decide(monitor()), dataset_state("ready"))
    assert outcome.run is not None
    annotations = outcome.run["metadata"]["annotations"]
    assert annotations[retraining.TRAFFIC_SNAPSHOT] == SHA_TRAFFIC
    assert annotations[retraining.BASE_SNAPSHOT] == SHA_BASE
    assert outcome.status["lastRetrainTime"] == clock.rfc3339(NOW)
    assert "180 labelled traffic rows, 77 base rows" in outcome.message


def _dataset(name: str, *, run: str, stalled: bool = False, created: str = "2027-01-15T08:00:00Z") -> dict:
    conditions = [{"type": "Stalled", "status": "True", "reason": "TooFewLabelledRows"}] if stalled else []
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "annotations": {retraining.RETRAINING_RUN: run},
        },
        "status": {"conditions": conditions},
    }


def test_a_collecting_dataset_of_an_earlier_window_is_carried_on_not_duplicated() -> None:
    planned = decide(monitor())
    earlier = _dataset("iris-watch-retrain-1-traffic", run="iris-watch-retrain-1")
    adopted, stale = retrain.pending_traffic(planned, [earlier], runs=[])
    assert stale == []
    assert adopted.run is not None and adopted.dataset is not None
    assert adopted.run["metadata"]["name"] == "iris-watch-retrain-1"
    assert adopted.run["spec"]["datasetRef"] == {"name": "iris-watch-retrain-1-traffic"}
    assert adopted.dataset["metadata"]["name"] == "iris-watch-retrain-1-traffic"
    assert adopted.status["retrainRuns"] == ["iris-watch-retrain-1"]


def test_stalled_unused_datasets_are_superseded_and_used_ones_left_alone() -> None:
    planned = decide(monitor())
    stalled = _dataset("iris-watch-retrain-1-traffic", run="iris-watch-retrain-1", stalled=True)
    used = _dataset("iris-watch-retrain-0-traffic", run="iris-watch-retrain-0")
    run0 = {
        "metadata": {"name": "iris-watch-retrain-0"},
        "spec": {"datasetRef": {"name": used["metadata"]["name"]}},
    }
    kept, stale = retrain.pending_traffic(planned, [stalled, used], runs=[run0])
    assert stale == ["iris-watch-retrain-1-traffic"]
    assert kept is planned
