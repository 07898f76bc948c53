"""A restart at any point never duplicates a Job or a ModelVersion.

The operator is SIGKILLed (no cleanup at all) the moment it has created something, seen through a
watch, and started again; afterwards there must be exactly one of each thing, and the objects
must reach the right final condition. The window between "created the ModelVersion" and "wrote
the TrainingRun's status" is too short to hit reliably with a kill, so one test holds it open:
the first operator may not write TrainingRun status at all (RBAC), creates the ModelVersion,
fails to record it (again and again, with backoff), and is killed; the next one must adopt it.
"""

from __future__ import annotations

from typing import Any

from modelcycle import GROUP, VERSION
from modelcycle.builders import jobs
from modelcycle.controllers import rbac
from support.kubelet import FakeKubelet
from support.lifecycle import (
    Objects,
    condition,
    dataset_manifest,
    eventually,
    ready_dataset,
    stays,
    trained_run,
    training_run_manifest,
    wait_for_added,
)
from support.operator import OperatorFactory, OperatorProcess, ServiceAccountFactory


def kill_when_job_appears(operator: OperatorProcess, objects: Objects, name: str) -> dict[str, Any]:
    job = wait_for_added(objects.batch.list_namespaced_job, objects.namespace, name=name)
    operator.kill()
    return job


def kill_when_version_appears(operator: OperatorProcess, objects: Objects, name: str) -> dict[str, Any]:
    version = wait_for_added(
        objects.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        objects.namespace,
        "modelversions",
        name=name,
    )
    operator.kill()
    return version


def test_kill_right_after_the_data_job_is_created(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    objects.create(dataset_manifest("iris"))
    job = kill_when_job_appears(operator, objects, expected_data_job(objects))

    operator.start()
    assert stays(
        lambda: [j["metadata"]["uid"] for j in objects.jobs()] == [job["metadata"]["uid"]], seconds=5
    )
    kubelet.complete(objects.namespace, job["metadata"]["name"])
    ready = objects.wait_condition("Dataset", "iris", "Ready")
    assert ready["status"]["jobName"] == job["metadata"]["name"]
    assert [j["metadata"]["uid"] for j in objects.jobs()] == [job["metadata"]["uid"]]


def expected_data_job(objects: Objects) -> str:
    """Dataset iris's data Job name as the operator computes it (known before any status is written)."""
    dataset = objects.get("Dataset", "iris")
    assert dataset is not None
    return jobs.data_job_name(dataset)


def test_kill_right_after_the_training_job_and_right_after_the_model_version(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    run = objects.create(training_run_manifest("iris-logreg"))

    job = kill_when_job_appears(operator, objects, "iris-logreg-train")
    operator.start()
    assert stays(
        lambda: (
            (objects.job("iris-logreg-train") or {}).get("metadata", {}).get("uid") == job["metadata"]["uid"]
        ),
        seconds=4,
    )
    objects.wait_condition("TrainingRun", "iris-logreg", "Ready", "False", reason="Training")

    kubelet.complete(objects.namespace, "iris-logreg-train")
    version = kill_when_version_appears(operator, objects, "iris-v1")
    operator.start()

    finished = objects.wait_condition("TrainingRun", "iris-logreg", "Succeeded")
    assert finished["status"]["modelVersion"] == "iris-v1" and finished["status"]["version"] == 1
    assert finished["status"]["metrics"]  # adopted after the restart: metrics from the ModelVersion

    def one_version() -> bool:
        versions = objects.list("ModelVersion")
        return [v["metadata"]["uid"] for v in versions] == [version["metadata"]["uid"]]

    assert stays(one_version, seconds=5)
    assert version["metadata"]["labels"]["modelcycle.io/training-run-uid"] == run["metadata"]["uid"]
    assert [j["metadata"]["name"] for j in objects.jobs() if j["metadata"]["name"].endswith("-train")] == [
        "iris-logreg-train"
    ]


def test_kill_right_after_the_validation_job_is_created(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    objects.create(training_run_manifest("iris-logreg"))
    objects.wait_job("iris-logreg-train")
    kubelet.complete(objects.namespace, "iris-logreg-train")

    job = kill_when_job_appears(operator, objects, "iris-v1-validate")
    operator.start()
    assert stays(
        lambda: (
            (objects.job("iris-v1-validate") or {}).get("metadata", {}).get("uid") == job["metadata"]["uid"]
        ),
        seconds=4,
    )
    kubelet.complete(objects.namespace, "iris-v1-validate")
    validated = objects.wait_condition("ModelVersion", "iris-v1", "Validated")
    assert condition(validated, "Ready")["status"] == "True"
    assert len([j for j in objects.jobs() if j["metadata"]["name"].endswith("-validate")]) == 1


def test_a_model_version_created_but_never_recorded_is_adopted_not_duplicated(
    operator_factory: OperatorFactory,
    service_account_kubeconfig_factory: ServiceAccountFactory,
    objects: Objects,
    kubelet: FakeKubelet,
) -> None:
    # The first operator may do everything but write TrainingRun status.
    rules = []
    for rule in rbac.cluster_role()["rules"]:
        resources = [r for r in rule["resources"] if r != "trainingruns/status"]
        if resources:
            rules.append({**rule, "resources": resources})
    crippled = operator_factory(kubeconfig_path=service_account_kubeconfig_factory(rules))

    ready_dataset(objects, kubelet)
    objects.create(training_run_manifest("iris-logreg"))
    objects.wait_job("iris-logreg-train")
    kubelet.complete(objects.namespace, "iris-logreg-train")
    eventually(lambda: objects.get("ModelVersion", "iris-v1"), timeout=30, what="the ModelVersion")
    # It keeps failing to record the result; each retry finds its ModelVersion by the run's uid.
    assert stays(lambda: len(objects.list("ModelVersion")) == 1, seconds=8)
    run = objects.get("TrainingRun", "iris-logreg")
    assert run is not None and "modelVersion" not in (run.get("status") or {})
    assert 'cannot patch resource "trainingruns/status"' in crippled.log_text()
    crippled.kill()

    operator_factory()
    finished = objects.wait_condition("TrainingRun", "iris-logreg", "Succeeded")
    assert finished["status"]["modelVersion"] == "iris-v1"
    assert stays(
        lambda: [v["metadata"]["name"] for v in objects.list("ModelVersion")] == ["iris-v1"], seconds=4
    )


def test_status_is_the_only_thing_the_operator_writes_on_user_objects(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    dataset = ready_dataset(objects, kubelet)
    run = trained_run(objects, kubelet, "iris-logreg")
    for obj in (dataset, run):
        metadata = obj["metadata"]
        assert "finalizers" not in metadata
        assert not metadata.get("annotations")
        assert metadata["generation"] == 1  # the spec was never written
        status_writers = [m for m in metadata.get("managedFields") or [] if m.get("subresource") == "status"]
        assert status_writers, "status is written through the status subresource"
