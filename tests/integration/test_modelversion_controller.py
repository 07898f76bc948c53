"""The ModelVersion controller against a real control plane: validation Job, verdicts, lineage, production."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from support.kubelet import FakeKubelet
from support.lifecycle import (
    API_VERSION,
    KubectlSeesReady,
    Objects,
    condition,
    data_job_name,
    dataset_manifest,
    eventually,
    ready_dataset,
    stays,
    trained_run,
)
from support.operator import OperatorProcess


def args_of(job: dict[str, Any]) -> list[str]:
    return list(job["spec"]["template"]["spec"]["containers"][0]["args"])


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_registered_version_is_validated_by_a_restricted_job(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet, kubectl_sees_ready: KubectlSeesReady
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "iris-logreg")
    version = objects.get("ModelVersion", "iris-v1")
    assert version is not None

    job = objects.wait_job("iris-v1-validate")
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "ModelVersion",
        version["metadata"]["uid"],
        True,
    )
    args = args_of(job)
    assert args[:2] == ["validate", "--spec-json"]
    assert json.loads(args[2])["spec"] == version["spec"]
    assert "--production-version" not in args  # nothing serves iris yet
    assert eventually(
        lambda: objects.pods("iris-v1-validate"), what="the validation pod (restricted admits it)"
    )
    validating = objects.wait_condition(
        "ModelVersion", "iris-v1", "Validated", "Unknown", reason="Validating"
    )
    assert condition(validating, "Ready")["status"] == "False"

    with kubectl_sees_ready("modelversion/iris-v1"):
        done = kubelet.complete(objects.namespace, "iris-v1-validate")

    validated = objects.wait_condition("ModelVersion", "iris-v1", "Validated", reason="GatesPassed")
    status = validated["status"]
    assert condition(validated, "Ready")["status"] == "True"
    assert not condition(validated, "Reconciling") and not condition(validated, "Stalled")
    assert status["phase"] == "Validated"
    assert status["metrics"] == done.result["metrics"]
    assert status["reasons"] == done.result["reasons"]
    assert set(status["latency"]) == {"singleRowMs", "batchRowsPerSecond"}
    assert status["validatedAt"] and status["jobName"] == "iris-v1-validate"
    assert status["observedGeneration"] == 1
    assert eventually(lambda: objects.events(name="iris-v1", reason="Validated"), what="the Validated Event")


def test_version_failing_its_gates_is_rejected_and_ready(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet, kubectl_sees_ready: KubectlSeesReady
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "strict", gates={"min": {"accuracy": 0.999}})
    objects.wait_job("iris-v1-validate")

    # A verdict was reached: Ready, even though it is a rejection.
    with kubectl_sees_ready("modelversion/iris-v1"):
        kubelet.complete(objects.namespace, "iris-v1-validate")

    rejected = objects.wait_condition("ModelVersion", "iris-v1", "Validated", "False", reason="GatesFailed")
    assert condition(rejected, "Ready")["status"] == "True"
    assert not condition(rejected, "Stalled")
    assert rejected["status"]["phase"] == "Rejected"
    assert any("below the minimum 0.999" in r for r in rejected["status"]["reasons"])
    assert "below the minimum 0.999" in condition(rejected, "Validated")["message"]
    event = eventually(lambda: objects.events(name="iris-v1", reason="Rejected"), what="the Warning Event")[0]
    assert event["type"] == "Warning"


def test_hand_registered_version_gets_its_lineage_completed_from_the_dataset(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "source")
    trained = objects.get("ModelVersion", "iris-v1")
    assert trained is not None
    # An outside model: only the artifact and the name of the Dataset it was evaluated on.
    objects.create(
        {
            "apiVersion": API_VERSION,
            "kind": "ModelVersion",
            "metadata": {"name": "imported-v1"},
            "spec": {
                "model": "imported",
                "version": 1,
                "artifact": trained["spec"]["artifact"],
                "lineage": {"dataset": "late"},
                "gates": {"min": {"accuracy": 0.8}},
            },
        }
    )

    stalled = objects.wait_condition("ModelVersion", "imported-v1", "Stalled", reason="DatasetNotFound")
    assert "Dataset late (spec.lineage.dataset) does not exist" in condition(stalled, "Ready")["message"]
    assert objects.job("imported-v1-validate") is None

    objects.create(dataset_manifest("late"))
    objects.wait_condition(
        "ModelVersion", "imported-v1", "Ready", "False", reason="DatasetNotReady", timeout=30
    )
    kubelet.complete(objects.namespace, data_job_name(objects, "late"))
    snapshot = objects.wait_condition("Dataset", "late", "Ready")["status"]["snapshot"]

    job = objects.wait_job("imported-v1-validate", timeout=30)
    lineage = json.loads(args_of(job)[2])["spec"]["lineage"]
    assert lineage == {
        "dataset": "late",
        "datasetUri": snapshot["uri"],
        "datasetSha256": snapshot["sha256"],
        "profileUri": snapshot["profileUri"],
    }
    kubelet.complete(objects.namespace, "imported-v1-validate")
    objects.wait_condition("ModelVersion", "imported-v1", "Validated", reason="GatesPassed")


def test_validation_compares_with_the_version_in_production(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "first")
    kubelet.complete(objects.namespace, objects.wait_job("iris-v1-validate")["metadata"]["name"])
    v1 = objects.wait_condition("ModelVersion", "iris-v1", "Validated")
    # A ModelDeployment serving version 1 (no node here, so its status is reported by hand).
    objects.create(
        {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {"model": "iris", "version": 1, "replicas": 1},
        }
    )
    objects.custom.patch_namespaced_custom_object_status(
        "modelcycle.io",
        "v1alpha1",
        objects.namespace,
        "modeldeployments",
        "iris",
        {"status": {"servedVersion": 1, "modelVersion": "iris-v1"}},
    )

    trained_run(
        objects, kubelet, "second", gates={"mustBeatProduction": {"metric": "accuracy", "tolerance": 0.01}}
    )
    job = objects.wait_job("iris-v2-validate")
    args = args_of(job)
    assert flag(args, "--production-version") == "1"
    assert json.loads(flag(args, "--production-metrics") or "{}") == v1["status"]["metrics"]
    assert job["metadata"]["annotations"]["modelcycle.io/production-version"] == "1"

    kubelet.complete(objects.namespace, "iris-v2-validate")
    v2 = objects.wait_condition("ModelVersion", "iris-v2", "Validated", reason="GatesPassed")
    assert v2["status"]["production"] == {
        "version": 1,
        "metric": "accuracy",
        "production": v1["status"]["metrics"]["accuracy"],
        "candidate": v2["status"]["metrics"]["accuracy"],
    }


def test_spec_is_immutable_and_deleting_the_version_collects_its_job(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "run")
    objects.wait_job("iris-v1-validate")

    with pytest.raises(ApiException) as refused:
        objects.patch("ModelVersion", "iris-v1", {"spec": {"metrics": {"accuracy": 1.0}}})
    assert refused.value.status == 422 and "immutable" in str(refused.value.body)

    objects.delete("ModelVersion", "iris-v1")
    eventually(lambda: objects.job("iris-v1-validate") is None, timeout=60, what="GC of the validation Job")
    # A ModelVersion is a record: the run that registered it does not bring it back.
    assert stays(lambda: objects.get("ModelVersion", "iris-v1") is None, seconds=5)
    # The run stays Succeeded: the version it registered was deleted by a user, not by the run.
    run = objects.get("TrainingRun", "run")
    assert condition(run, "Succeeded")["status"] == "True"
