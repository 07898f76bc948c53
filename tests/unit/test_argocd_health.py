"""tools/argocd-health/modelcycle.lua, run by a real Lua 5.1 (Argo CD's gopher-lua speaks 5.1).

Status objects are built from the pydantic status models (so they have the shape the CRDs accept)
and, for Ready/Reconciling/Stalled, with the runtime's own condition writers, so a change in what
the operator writes shows up here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelcycle import API_VERSION
from modelcycle.api import common, dataset, kinds, modeldeployment, modelmonitor, modelversion, trainingrun

lupa51 = pytest.importorskip("lupa.lua51")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = (REPO / "tools" / "argocd-health" / "modelcycle.lua").read_text()
NOW = "2026-01-01T00:00:00Z"
STATUS_MODELS: dict[str, type[common.CommonStatus]] = {
    "Dataset": dataset.DatasetStatus,
    "TrainingRun": trainingrun.TrainingRunStatus,
    "ModelVersion": modelversion.ModelVersionStatus,
    "ModelDeployment": modeldeployment.ModelDeploymentStatus,
    "ModelMonitor": modelmonitor.ModelMonitorStatus,
}
ALL_KINDS = [k.kind for k in kinds.ALL]


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def condition(
    type_: str, status: str, reason: str, message: str = "", generation: int = 1
) -> common.Condition:
    return common.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=NOW,
        observed_generation=generation,
    )


def resource(
    kind: str,
    *,
    generation: int = 1,
    observed: int | None = 1,
    conditions: list[common.Condition] | None = None,
    with_status: bool = True,
    **status_fields: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "generation": generation, "uid": "u"},
        "spec": {},
    }
    if with_status:
        model = STATUS_MODELS[kind](observed_generation=observed, conditions=conditions, **status_fields)
        obj["status"] = model.to_json_dict()
    return obj


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_no_status_yet_is_progressing(kind: str) -> None:
    assert health(resource(kind, with_status=False))[0] == "Progressing"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_status_of_an_older_generation_is_progressing(kind: str) -> None:
    obj = resource(
        kind, generation=3, observed=2, conditions=[condition("Ready", "True", "Ready", generation=2)]
    )
    status, message = health(obj)
    assert status == "Progressing"
    assert "generation 3" in message


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_status_without_observed_generation_is_progressing(kind: str) -> None:
    obj = resource(kind, observed=None, conditions=[condition("Ready", "True", "Ready")])
    assert health(obj)[0] == "Progressing"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_ready_is_healthy(kind: str) -> None:
    status, message = health(resource(kind, conditions=[condition("Ready", "True", "Succeeded", "all good")]))
    assert (status, message) == ("Healthy", "Succeeded: all good")


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_reconciling_is_progressing(kind: str) -> None:
    conditions = [
        condition("Ready", "False", "JobRunning", "job x-data-1 is running"),
        condition("Reconciling", "True", "JobRunning", "job x-data-1 is running"),
    ]
    assert health(resource(kind, conditions=conditions)) == (
        "Progressing",
        "JobRunning: job x-data-1 is running",
    )


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_not_ready_or_unknown_is_progressing(kind: str) -> None:
    for value in ("False", "Unknown"):
        assert (
            health(resource(kind, conditions=[condition("Ready", value, "Waiting", "w")]))[0] == "Progressing"
        )
    assert health(resource(kind, conditions=[]))[0] == "Progressing"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_stalled_is_degraded_whatever_ready_says(kind: str) -> None:
    conditions = [
        condition("Ready", "False", "DatasetNotFound", "dataset iris does not exist"),
        condition("Stalled", "True", "DatasetNotFound", "dataset iris does not exist"),
    ]
    assert health(resource(kind, conditions=conditions)) == (
        "Degraded",
        "DatasetNotFound: dataset iris does not exist",
    )


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_stalled_false_does_not_degrade(kind: str) -> None:
    conditions = [condition("Ready", "True", "Ok"), condition("Stalled", "False", "Recovered")]
    assert health(resource(kind, conditions=conditions))[0] == "Healthy"


def test_the_runtime_condition_writers_are_classified() -> None:
    """Conditions produced by the runtime's own helpers (what the operator really writes)."""
    from modelcycle.controllers import runtime

    obj = resource("Dataset", generation=2, observed=2)
    progressing = runtime.progress_conditions(
        obj, ready=False, reason="JobRunning", message="m", reconciling=True
    )
    obj["status"] = dataset.DatasetStatus(observed_generation=2, conditions=progressing).to_json_dict()
    assert health(obj)[0] == "Progressing"
    ready = runtime.progress_conditions(obj, ready=True, reason="Ready", message="m", reconciling=False)
    obj["status"] = dataset.DatasetStatus(observed_generation=2, conditions=ready).to_json_dict()
    assert health(obj)[0] == "Healthy"
    outcome = runtime.stalled_outcome(obj, reason="SourceUnreachable", message="cannot fetch")
    obj["status"] = dataset.DatasetStatus.model_validate(
        {"observedGeneration": 2, **outcome.status}
    ).to_json_dict()
    assert health(obj) == ("Degraded", "SourceUnreachable: cannot fetch")


def test_model_deployment_degraded_after_rollback() -> None:
    conditions = [
        condition("Ready", "True", "Serving", "serving version 1"),
        condition("Available", "True", "MinimumReplicasAvailable", ""),
        condition("Degraded", "True", "ProgressDeadlineExceeded", "version 2 rolled back to 1"),
    ]
    obj = resource("ModelDeployment", conditions=conditions, served_version=1, ready_replicas=1, replicas=1)
    assert health(obj) == ("Degraded", "ProgressDeadlineExceeded: version 2 rolled back to 1")


def test_model_version_rejected_is_degraded() -> None:
    """As controllers/modelversion.py reports a verdict: Ready=True (decided), Validated=False."""
    conditions = [
        condition("Ready", "True", "Rejected", "rejected: accuracy 0.71 below gate 0.9"),
        condition("Validated", "False", "GatesFailed", "accuracy 0.71 below gate 0.9"),
    ]
    obj = resource("ModelVersion", conditions=conditions, reasons=["accuracy 0.71 below gate 0.9"])
    assert health(obj) == ("Degraded", "GatesFailed: accuracy 0.71 below gate 0.9")


def test_model_version_validated_is_healthy() -> None:
    conditions = [
        condition("Ready", "True", "Validated", "validated: accuracy 0.97 >= 0.9"),
        condition("Validated", "True", "GatesPassed", "accuracy 0.97 >= 0.9"),
    ]
    assert health(resource("ModelVersion", conditions=conditions))[0] == "Healthy"


def test_model_version_being_validated_is_progressing() -> None:
    conditions = [
        condition("Ready", "False", "Validating", "validation Job x-validate is running"),
        condition("Reconciling", "True", "Validating", "validation Job x-validate is running"),
        condition("Validated", "Unknown", "Validating", "validation Job x-validate is running"),
    ]
    assert health(resource("ModelVersion", conditions=conditions))[0] == "Progressing"


@pytest.mark.parametrize("reason", ["Validating", "Pending"])
def test_model_version_not_yet_validated_is_progressing(reason: str) -> None:
    conditions = [condition("Ready", "False", reason), condition("Validated", "False", reason)]
    assert health(resource("ModelVersion", conditions=conditions))[0] == "Progressing"


def test_training_run_failed_is_degraded() -> None:
    conditions = [
        condition("Ready", "False", "TrainingFailed", "training failed: ValueError"),
        condition("Succeeded", "False", "TrainingFailed", "training failed: ValueError"),
    ]
    assert health(resource("TrainingRun", conditions=conditions)) == (
        "Degraded",
        "TrainingFailed: training failed: ValueError",
    )


def test_training_run_succeeded_is_healthy() -> None:
    conditions = [
        condition("Ready", "True", "Succeeded", "registered iris v3"),
        condition("Succeeded", "True", "ModelRegistered"),
    ]
    obj = resource("TrainingRun", conditions=conditions, version=3, model_version="iris-v3")
    assert health(obj)[0] == "Healthy"


def test_model_monitor_with_drift_stays_healthy_and_says_so() -> None:
    conditions = [
        condition("Ready", "True", "Monitoring", "checked 2 replica(s)"),
        condition("DriftDetected", "True", "DriftDetected", "features drifted: petal_length"),
    ]
    obj = resource(
        "ModelMonitor",
        conditions=conditions,
        drifted_features=["petal_length"],
        features=[modelmonitor.FeatureDrift(name="petal_length", score=0.4, drifted=True)],
        window_size=500,
    )
    assert health(obj) == ("Healthy", "DriftDetected: features drifted: petal_length")


def test_validated_false_on_other_kinds_is_not_a_failure() -> None:
    """Only ModelVersion reads Validated; only TrainingRun reads Succeeded."""
    conditions = [condition("Ready", "True", "Ok"), condition("Validated", "False", "Rejected")]
    assert health(resource("Dataset", conditions=conditions))[0] == "Healthy"


def test_script_is_lua_5_1_compatible_and_returns_a_table() -> None:
    lua = lupa51.LuaRuntime()
    assert lua.eval("_VERSION") == "Lua 5.1"
    status, message = health({"apiVersion": API_VERSION, "kind": "Dataset", "metadata": {"name": "x"}})
    assert status == "Progressing" and message
