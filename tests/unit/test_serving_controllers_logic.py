"""Pure helpers of the ModelDeployment and ModelMonitor controllers: history, version resolution,
Deployment progress, replica grouping, performance verdicts and the drift gauges."""

from __future__ import annotations

from typing import Any

import prometheus_client
import pytest

from modelcycle.api import modelmonitor as monitor_api
from modelcycle.builders import serving
from modelcycle.controllers import modeldeployment as mdep
from modelcycle.controllers import modelmonitor as mmon
from modelcycle.controllers import registry, runtime
from modelcycle.planners import rollout


def mv(version: int, validated: str | None = "True", reason: str = "GatesPassed") -> dict[str, Any]:
    status: dict[str, Any] = {}
    if validated is not None:
        status["conditions"] = [{"type": "Validated", "status": validated, "reason": reason}]
    return {
        "metadata": {"name": f"iris-v{version}"},
        "spec": {"model": "iris", "version": version},
        "status": status,
    }


def spec(version: int | str = "latest") -> Any:
    return serving.parse_spec({"spec": {"model": "iris", "version": version}})


# --------------------------------------------------------------------------- history


def outcomes(history: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(h["version"], h["outcome"]) for h in history]


def test_history_follows_a_rollout_and_a_rollback() -> None:
    history: list[dict[str, Any]] = []
    rollout.record(history, 1, "InProgress", "t1")
    rollout.record(history, 1, "Serving", "t2")
    rollout.record(history, 2, "InProgress", "t3")
    assert outcomes(history) == [(1, "Serving"), (2, "InProgress")]
    rollout.record(history, 2, "Serving", "t4")
    assert outcomes(history) == [(1, "Superseded"), (2, "Serving")]
    rollout.record(history, 3, "InProgress", "t5")
    rollout.record(history, 3, "RolledBack", "t6", "not ready")
    assert outcomes(history) == [(1, "Superseded"), (2, "Serving"), (3, "RolledBack")]
    assert history[-1]["message"] == "not ready"
    rollout.record(history, 3, "InProgress", "t7")  # tried again in a new generation
    assert outcomes(history)[-1] == (3, "InProgress")
    assert len(history) == 4


def test_history_is_idempotent_and_capped() -> None:
    history: list[dict[str, Any]] = []
    rollout.record(history, 1, "Serving", "t1")
    rollout.record(history, 1, "Serving", "t2")
    assert history == [{"version": 1, "outcome": "Serving", "at": "t1"}]
    for version in range(2, 40):
        rollout.record(history, version, "InProgress", "t")
        rollout.record(history, version, "Serving", "t")
    assert len(history) == rollout.HISTORY_LIMIT
    assert history[-1] == {"version": 39, "outcome": "Serving", "at": "t"}


def test_a_new_rollout_supersedes_the_one_in_progress() -> None:
    history: list[dict[str, Any]] = []
    rollout.record(history, 1, "Serving", "t")
    rollout.record(history, 2, "InProgress", "t")
    rollout.record(history, 3, "InProgress", "t")
    assert outcomes(history) == [(1, "Serving"), (2, "Superseded"), (3, "InProgress")]


# --------------------------------------------------------------------------- resolution


def test_latest_is_the_newest_validated_version() -> None:
    versions = [mv(1), mv(2), mv(3, "Unknown", "Validating"), mv(4, "False", "GatesFailed")]
    assert rollout.resolve(spec(), versions)["spec"]["version"] == 2


def test_latest_without_a_validated_version_stalls() -> None:
    with pytest.raises(runtime.Stalled) as caught:
        rollout.resolve(spec(), [mv(1, None)])
    assert caught.value.reason == "NoValidatedVersion"
    with pytest.raises(runtime.Stalled) as caught:
        rollout.resolve(spec(), [])
    assert caught.value.reason == "NoValidatedVersion"
    assert "no ModelVersion" in caught.value.message


def test_pinned_versions() -> None:
    assert rollout.resolve(spec(1), [mv(1), mv(2)])["spec"]["version"] == 1
    with pytest.raises(runtime.Stalled) as caught:
        rollout.resolve(spec(7), [mv(1)])
    assert caught.value.reason == "ModelVersionNotFound"
    with pytest.raises(runtime.Stalled) as caught:
        rollout.resolve(spec(4), [mv(4, "False", "GatesFailed")])
    assert caught.value.reason == "VersionRejected"
    # Still validating: not rejected (the deployment waits for it).
    assert rollout.resolve(spec(3), [mv(3, "Unknown", "Validating")])["spec"]["version"] == 3


# --------------------------------------------------------------------------- Deployment progress


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, **status},
    }


def test_rollout_complete_needs_every_pod_updated_and_available() -> None:
    assert rollout.rollout_complete(deployment(replicas=2, updatedReplicas=2, availableReplicas=2))
    assert not rollout.rollout_complete(deployment(replicas=3, updatedReplicas=2, availableReplicas=2))
    assert not rollout.rollout_complete(deployment(replicas=2, updatedReplicas=2, availableReplicas=1))
    stale = deployment(replicas=2, updatedReplicas=2, availableReplicas=2)
    stale["status"]["observedGeneration"] = 1
    assert not rollout.rollout_complete(stale)


def test_deadline_exceeded_reads_the_progressing_condition_of_the_current_generation() -> None:
    failing = deployment(
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    )
    assert rollout.deadline_exceeded(failing)
    failing["status"]["observedGeneration"] = 1
    assert not rollout.deadline_exceeded(failing)
    assert not rollout.deadline_exceeded(
        deployment(conditions=[{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}])
    )


# --------------------------------------------------------------------------- monitor helpers


def test_replicas_over_different_references_are_not_added() -> None:
    stats = [
        {"referenceFingerprint": "a", "rows": 10},
        {"referenceFingerprint": "b", "rows": 50},
        {"referenceFingerprint": "a", "rows": 30},
    ]
    group = mmon.largest_group(stats)
    assert [s["rows"] for s in group] == [50]


def perf_spec(**performance: Any) -> monitor_api.ModelMonitorSpec:
    return monitor_api.ModelMonitorSpec.model_validate(
        {"deploymentRef": {"name": "x"}, "performance": performance}
    )


def test_performance_verdicts() -> None:
    live = {"count": 300.0, "accuracy": 0.7, "f1_macro": 0.6}
    assert mmon._performance_check(perf_spec(metric="accuracy", min=0.9), live, 200)[0] is True
    assert mmon._performance_check(perf_spec(metric="accuracy", min=0.5), live, 200)[0] is False
    assert mmon._performance_check(perf_spec(metric="accuracy", min=0.9), live, 500)[0] is None
    assert mmon._performance_check(perf_spec(metric="rmse", max=1.0), live, 200)[0] is None
    regression = {"count": 300.0, "rmse": 3.0}
    assert mmon._performance_check(perf_spec(metric="rmse", max=1.0), regression, 200)[0] is True
    no_perf = monitor_api.ModelMonitorSpec.model_validate({"deploymentRef": {"name": "x"}})
    assert mmon._performance_check(no_perf, live, 200)[0] is None


def gauge_samples(namespace: str, monitor: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in prometheus_client.REGISTRY.collect():
        if metric.name == "modelcycle_monitor_drift_score":
            for sample in metric.samples:
                if sample.labels["namespace"] == namespace and sample.labels["monitor"] == monitor:
                    found[sample.labels["feature"]] = sample.value
    return found


def test_gauges_follow_the_features_and_disappear_with_the_monitor() -> None:
    mmon.export_scores("ns", "m", {"a": 0.1, "b": 0.5})
    assert gauge_samples("ns", "m") == {"a": 0.1, "b": 0.5}
    mmon.export_scores("ns", "m", {"b": 0.7})
    assert gauge_samples("ns", "m") == {"b": 0.7}
    mmon.export_scores("ns", "other", {"a": 1.0})
    mmon.forget_monitor({"metadata": {"namespace": "ns", "name": "m"}})
    assert gauge_samples("ns", "m") == {}
    assert gauge_samples("ns", "other") == {"a": 1.0}
    mmon.forget_monitor({"metadata": {"namespace": "ns", "name": "other"}})


def test_forget_hook_is_registered_with_the_runtime() -> None:
    registration = registry.REGISTRY["ModelMonitor"]
    assert registration.on_delete is mmon.forget_monitor
    assert registry.REGISTRY["ModelDeployment"].dependents == ("ModelMonitor",)


def test_rbac_rules_are_explicit() -> None:
    for rules in (mdep.RBAC_RULES, mmon.RBAC_RULES):
        for rule in rules:
            assert "*" not in rule["verbs"]
            assert "*" not in rule["resources"]
            assert "*" not in rule["apiGroups"]
    resources = {r for rule in mmon.RBAC_RULES for r in rule["resources"]}
    assert {"pods", "pods/proxy", "trainingruns"} <= resources
