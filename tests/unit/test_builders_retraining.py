"""The retraining TrainingRun: a clone of the source run, a record without owner, one name per window."""

from __future__ import annotations

import copy
from typing import Any

from modelcycle.api import modelmonitor, trainingrun
from modelcycle.builders import meta, retraining


def monitor(name: str = "iris-monitor", **retrain: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": name, "namespace": "ml", "uid": "mon-uid"},
        "spec": {"deploymentRef": {"name": "iris"}, "retrain": {"enabled": True, **retrain}},
    }


def clone(owner: dict[str, Any], source: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The retraining run of `owner`, its spec parsed as the controller does."""
    retrain = modelmonitor.ModelMonitorSpec.model_validate(owner["spec"]).retrain
    assert retrain is not None
    return retraining.retraining_run(owner, source, retrain=retrain, **kwargs)


def source_run() -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {
            "name": "iris-run",
            "namespace": "ml",
            "uid": "run-uid",
            "resourceVersion": "42",
            "ownerReferences": [{"kind": "Something", "uid": "x"}],
        },
        "spec": {
            "datasetRef": {"name": "iris-data"},
            "model": {"name": "iris"},
            "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"C": 1.0}},
            "split": {"testFraction": 0.25, "seed": 7},
            "gates": {"min": {"accuracy": 0.9}, "mustBeatProduction": {"metric": "accuracy"}},
        },
        "status": {"conditions": [{"type": "Succeeded", "status": "True"}]},
    }


def test_clone_copies_the_spec_and_is_a_valid_trainingrun() -> None:
    run = clone(monitor(), source_run(), trigger="drift", now_epoch=1_000_000)
    assert run["apiVersion"] == "modelcycle.io/v1alpha1"
    assert run["kind"] == "TrainingRun"
    assert run["spec"] == source_run()["spec"]
    trainingrun.TrainingRunSpec.model_validate(run["spec"])
    assert "status" not in run


def test_dataset_ref_is_replaced_when_the_monitor_names_fresh_data() -> None:
    run = clone(monitor(datasetRef={"name": "iris-fresh"}), source_run(), trigger="drift", now_epoch=0)
    assert run["spec"]["datasetRef"] == {"name": "iris-fresh"}
    assert run["spec"]["estimator"] == source_run()["spec"]["estimator"]


def test_record_without_owner_but_with_lineage_labels() -> None:
    run = clone(monitor(), source_run(), trigger="performance", now_epoch=0, message="acc low")
    metadata = run["metadata"]
    assert "ownerReferences" not in metadata
    assert metadata["namespace"] == "ml"
    labels = metadata["labels"]
    assert labels[meta.MONITOR] == "iris-monitor"
    assert labels[meta.TRIGGER] == "performance"
    assert labels[meta.SOURCE_RUN] == "iris-run"
    assert labels[meta.MODEL] == "iris"
    assert metadata["annotations"][retraining.TRIGGER_MESSAGE] == "acc low"
    assert retraining.selector(monitor()) == f"{meta.MONITOR}=iris-monitor"


def test_name_is_fixed_within_a_cooldown_window_and_changes_after() -> None:
    m = monitor(cooldownSeconds=3600)
    at = [
        clone(m, source_run(), trigger="drift", now_epoch=t)["metadata"]["name"]
        for t in (7200, 7200 + 1800, 7200 + 3599, 7200 + 3600)
    ]
    assert at[0] == at[1] == at[2] == "iris-monitor-retrain-2"
    assert at[3] == "iris-monitor-retrain-3"


def test_default_cooldown_is_an_hour_and_zero_cooldown_names_by_second() -> None:
    assert (
        clone(monitor(), source_run(), trigger="drift", now_epoch=7300)["metadata"]["name"]
        == "iris-monitor-retrain-2"
    )
    zero = monitor(cooldownSeconds=0)
    assert (
        clone(zero, source_run(), trigger="drift", now_epoch=12.7)["metadata"]["name"]
        == "iris-monitor-retrain-12"
    )


def test_long_monitor_names_are_trimmed_deterministically() -> None:
    m = monitor("m" * 120)
    first = clone(m, source_run(), trigger="drift", now_epoch=0)["metadata"]
    second = clone(m, source_run(), trigger="drift", now_epoch=0)["metadata"]
    assert first["name"] == second["name"]
    assert len(first["name"]) <= 63
    assert first["name"].endswith("-retrain-0")
    assert len(first["labels"][meta.MONITOR]) <= 63


def test_source_is_not_mutated() -> None:
    source = source_run()
    before = copy.deepcopy(source)
    run = clone(monitor(datasetRef={"name": "other"}), source, trigger="drift", now_epoch=0)
    run["spec"]["estimator"]["params"]["C"] = 99
    assert source == before
