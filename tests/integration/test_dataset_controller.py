"""The Dataset controller against a real control plane: data Job, snapshot, spec edits, failures, GC."""

from __future__ import annotations

import json
import re

from support.kubelet import FakeKubelet
from support.lifecycle import (
    KubectlSeesReady,
    Objects,
    condition,
    data_job_name,
    dataset_manifest,
    eventually,
    ready_dataset,
    stays,
)
from support.operator import OperatorProcess

DATA_JOB = re.compile(r"^iris-data-[0-9a-f]{8}$")


def test_dataset_runs_a_restricted_data_job_and_records_the_snapshot(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet, kubectl_sees_ready: KubectlSeesReady
) -> None:
    created = objects.create(dataset_manifest("iris", validation={"minRows": 100}))

    job_name = data_job_name(objects, "iris")
    assert DATA_JOB.match(job_name)
    job = objects.wait_job(job_name)
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Dataset",
        "iris",
        created["metadata"]["uid"],
        True,
    )
    assert job["metadata"]["labels"]["modelcycle.io/owner"] == "iris"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["modelcycle"]
    assert container["args"][:2] == ["data", "--spec-json"]
    assert json.loads(container["args"][2])["spec"] == created["spec"]
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    # The restricted namespace admitted the Job's pod (it would be refused otherwise).
    assert eventually(lambda: objects.pods(job_name), what="the data Job's pod")
    assert not objects.events(name=job_name, reason="FailedCreate")

    running = objects.wait_condition("Dataset", "iris", "Reconciling")
    assert condition(running, "Ready")["status"] == "False"
    assert condition(running, "Ready")["reason"] == "Snapshotting"

    with kubectl_sees_ready("dataset/iris"):
        done = kubelet.complete(objects.namespace, job_name)

    ready = objects.wait_condition("Dataset", "iris", "Validated")
    status = ready["status"]
    assert condition(ready, "Ready")["reason"] == "SnapshotReady"
    assert not condition(ready, "Reconciling") and not condition(ready, "Stalled")
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    assert status["phase"] == "Ready"
    assert status["jobName"] == job_name
    snapshot = status["snapshot"]
    for key in ("sha256", "uri", "rows", "columns", "task", "profileUri", "profileSha256"):
        assert snapshot[key] == done.result[key], key
    assert snapshot["rows"] == 150 and snapshot["task"] == "classification"
    assert snapshot["takenAt"]
    assert status["violations"] == []
    # Events are posted right after the status patch: wait for them too.
    eventually(
        lambda: {"SnapshotStarted", "SnapshotReady"} <= {e["reason"] for e in objects.events(name="iris")},
        what="the SnapshotStarted and SnapshotReady Events",
    )


def test_spec_edit_starts_a_new_data_job_and_observed_generation_follows(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    objects.create(dataset_manifest("iris"))
    first = data_job_name(objects, "iris")
    kubelet.complete(objects.namespace, first)
    objects.wait_condition("Dataset", "iris", "Ready")

    edited = objects.patch("Dataset", "iris", {"spec": {"validation": {"minRows": 120}}})
    assert edited["metadata"]["generation"] == 2

    def new_job() -> str | None:
        obj = objects.get("Dataset", "iris") or {}
        name = (obj.get("status") or {}).get("jobName")
        return name if name and name != first else None

    second = eventually(new_job, what="a data Job for the edited spec")
    assert DATA_JOB.match(second)
    # A snapshot of the old spec does not describe the new one: not Ready while it is re-taken.
    snapshotting = objects.wait_condition("Dataset", "iris", "Ready", "False", reason="Snapshotting")
    assert snapshotting["status"]["observedGeneration"] == 2
    assert condition(snapshotting, "Ready")["observedGeneration"] == 2

    kubelet.complete(objects.namespace, second)
    ready = objects.wait_condition("Dataset", "iris", "Ready")
    assert ready["status"]["observedGeneration"] == 2
    assert ready["status"]["jobName"] == second
    # The data Job of the old spec is history now.
    eventually(
        lambda: [j["metadata"]["name"] for j in objects.jobs()] == [second], what="the old data Job deleted"
    )


def test_failed_validation_stalls_with_the_violations_and_recovers_after_a_fix(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    objects.create(
        dataset_manifest(
            "iris",
            validation={"minRows": 1000},
            schema=[{"name": "petal width (cm)", "min": 0, "max": 1}],
            features=["petal width (cm)"],
        )
    )
    job_name = data_job_name(objects, "iris")
    done = kubelet.complete(objects.namespace, job_name, expect_exit=1)
    assert done.result["reason"] == "ValidationFailed"

    stalled = objects.wait_condition("Dataset", "iris", "Stalled", reason="ValidationFailed")
    assert condition(stalled, "Ready")["status"] == "False"
    assert condition(stalled, "Validated") == {
        **condition(stalled, "Validated"),
        "status": "False",
        "reason": "ValidationFailed",
    }
    violations = stalled["status"]["violations"]
    assert any("minRows is 1000" in v for v in violations)
    assert any("above max 1" in v for v in violations)
    message = condition(stalled, "Stalled")["message"]
    assert "minRows is 1000" in message and "violation" in message
    assert stalled["status"]["phase"] == "Invalid"
    # Exit code 1 means a retry will not help: the pod failure policy failed the Job at once.
    objects.wait_job_finished(job_name)
    assert len(objects.pods(job_name)) == 1
    warnings = eventually(
        lambda: objects.events(name="iris", reason="ValidationFailed"), what="the Warning Event"
    )
    assert warnings[0]["type"] == "Warning"

    objects.patch(
        "Dataset", "iris", {"spec": {"validation": {"minRows": 100}, "schema": None, "features": None}}
    )
    fixed = eventually(
        lambda: (objects.get("Dataset", "iris") or {})["status"].get("jobName") != job_name,
        what="a new data Job after the fix",
    )
    assert fixed
    kubelet.complete(objects.namespace, data_job_name(objects, "iris"))
    ready = objects.wait_condition("Dataset", "iris", "Ready")
    assert not condition(ready, "Stalled")
    assert condition(ready, "Validated")["status"] == "True"
    assert ready["status"]["violations"] == []
    assert ready["status"]["observedGeneration"] == 2


def test_a_failure_other_than_validation_is_reported_with_the_workloads_reason(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    # A ConfigMap source whose ConfigMap does not exist: the source is unavailable.
    objects.create(dataset_manifest("iris", source={"configMap": {"name": "absent", "key": "data.csv"}}))
    job_name = data_job_name(objects, "iris")
    kubelet.fail(
        objects.namespace,
        job_name,
        result={
            "ok": False,
            "reason": "SourceUnavailable",
            "message": "ConfigMap absent file data.csv does not exist",
        },
    )
    stalled = objects.wait_condition("Dataset", "iris", "Stalled", reason="SourceUnavailable")
    assert "does not exist" in condition(stalled, "Ready")["message"]
    assert stalled["status"]["phase"] == "Failed"


def test_a_recorded_snapshot_survives_the_loss_of_its_jobs_pods(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready = ready_dataset(objects, kubelet)
    job_name = ready["status"]["jobName"]
    for pod in objects.pods(job_name):
        objects.core.delete_namespaced_pod(pod["metadata"]["name"], objects.namespace, grace_period_seconds=0)
    eventually(lambda: not objects.pods(job_name), what="the pods gone")

    # Several resyncs later the status is still the record of that Job's result.
    assert stays(
        lambda: condition(objects.get("Dataset", "iris"), "Ready").get("reason") == "SnapshotReady", seconds=8
    )
    assert objects.get("Dataset", "iris")["status"]["snapshot"] == ready["status"]["snapshot"]  # type: ignore[index]
    assert not objects.events(name="iris", reason="ResultMissing")


def test_deleting_the_dataset_garbage_collects_its_jobs_and_pods(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    objects.create(dataset_manifest("iris"))
    job_name = data_job_name(objects, "iris")
    eventually(lambda: objects.pods(job_name), what="the data Job's pod")

    objects.delete("Dataset", "iris")

    eventually(lambda: not objects.jobs(), timeout=60, what="the garbage collector to delete the Job")
    eventually(lambda: not objects.pods(), timeout=60, what="the garbage collector to delete the pod")


def test_refresh_seconds_puts_the_refresh_period_in_the_job_name(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    import time

    objects.create(dataset_manifest("iris", refreshSeconds=3600))
    job_name = data_job_name(objects, "iris")
    epoch = int(time.time() // 3600)
    assert re.match(rf"^iris-data-[0-9a-f]{{8}}-({epoch}|{epoch + 1})$", job_name)
    kubelet.complete(objects.namespace, job_name)
    objects.wait_condition("Dataset", "iris", "Ready")
