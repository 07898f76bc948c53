"""The TrainingRun controller against a real control plane: training Job, ModelVersion record, failures."""

from __future__ import annotations

import json
import time
from typing import Any

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
    trained_run,
    training_run_manifest,
)
from support.operator import OperatorProcess


def test_run_trains_on_the_snapshot_and_registers_a_model_version(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet, kubectl_sees_ready: KubectlSeesReady
) -> None:
    dataset = ready_dataset(objects, kubelet)
    snapshot = dataset["status"]["snapshot"]
    run = objects.create(training_run_manifest("iris-logreg"))

    job = objects.wait_job("iris-logreg-train")
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainingRun", run["metadata"]["uid"], True)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "train"
    assert json.loads(args[args.index("--spec-json") + 1])["spec"] == run["spec"]
    assert args[args.index("--dataset-uri") + 1] == snapshot["uri"]
    assert args[args.index("--dataset-sha256") + 1] == snapshot["sha256"]
    assert args[args.index("--profile-uri") + 1] == snapshot["profileUri"]
    assert eventually(
        lambda: objects.pods("iris-logreg-train"), what="the training pod (restricted admits it)"
    )
    training = objects.wait_condition("TrainingRun", "iris-logreg", "Ready", "False", reason="Training")
    assert condition(training, "Succeeded")["status"] == "Unknown"
    assert condition(training, "Reconciling")["status"] == "True"

    with kubectl_sees_ready("trainingrun/iris-logreg"):
        done = kubelet.complete(objects.namespace, "iris-logreg-train")

    finished = objects.wait_condition("TrainingRun", "iris-logreg", "Succeeded")
    status = finished["status"]
    assert condition(finished, "Ready")["reason"] == "ModelRegistered"
    assert not condition(finished, "Reconciling") and not condition(finished, "Stalled")
    assert status["modelVersion"] == "iris-v1" and status["version"] == 1
    assert status["phase"] == "Succeeded"
    assert status["metrics"]["accuracy"] == done.result["metrics"]["accuracy"]
    assert status["datasetSha256"] == snapshot["sha256"]
    assert status["observedGeneration"] == finished["metadata"]["generation"]
    assert status["jobName"] == "iris-logreg-train"

    version = objects.get("ModelVersion", "iris-v1")
    assert version is not None
    metadata, spec = version["metadata"], version["spec"]
    assert "ownerReferences" not in metadata  # a record: deleting the run must not delete it
    assert metadata["labels"]["modelcycle.io/model"] == "iris"
    assert metadata["labels"]["modelcycle.io/version"] == "1"
    assert metadata["labels"]["modelcycle.io/training-run"] == "iris-logreg"
    assert metadata["labels"]["modelcycle.io/training-run-uid"] == run["metadata"]["uid"]
    assert spec["model"] == "iris" and spec["version"] == 1
    assert spec["artifact"] == done.result["artifact"]
    assert spec["gates"] == run["spec"]["gates"]
    assert spec["metrics"]["accuracy"] == done.result["metrics"]["accuracy"]
    lineage = spec["lineage"]
    assert lineage["trainingRun"] == "iris-logreg" and lineage["dataset"] == "iris"
    assert lineage["datasetSha256"] == snapshot["sha256"] and lineage["datasetUri"] == snapshot["uri"]
    assert lineage["profileUri"] == snapshot["profileUri"]
    assert lineage["split"]["seed"] == 42
    assert lineage["params"]["max_iter"] == 300
    assert lineage["image"] == job["spec"]["template"]["spec"]["containers"][0]["image"]
    # Events are posted right after the status patch: wait for them too.
    eventually(
        lambda: (
            {"TrainingStarted", "ModelRegistered"}
            <= {e["reason"] for e in objects.events(name="iris-logreg")}
        ),
        what="the TrainingStarted and ModelRegistered Events",
    )


def test_missing_dataset_stalls_with_an_event_and_recovers_when_it_appears(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    objects.create(training_run_manifest("early", dataset="later"))

    stalled = objects.wait_condition("TrainingRun", "early", "Stalled", reason="DatasetNotFound")
    assert condition(stalled, "Ready") == {
        **condition(stalled, "Ready"),
        "status": "False",
        "reason": "DatasetNotFound",
    }
    assert "Dataset later does not exist" in condition(stalled, "Stalled")["message"]
    event = eventually(
        lambda: objects.events(name="early", reason="DatasetNotFound"), what="the Warning Event"
    )[0]
    assert event["type"] == "Warning"
    # Retried with backoff (at most 10 s here), but never a Job, and a single Event per episode.
    time.sleep(4)
    assert objects.job("early-train") is None
    assert len(objects.events(name="early", reason="DatasetNotFound")) == 1

    objects.create(dataset_manifest("later"))
    waiting = objects.wait_condition(
        "TrainingRun", "early", "Ready", "False", reason="DatasetNotReady", timeout=30
    )
    assert not condition(waiting, "Stalled")
    assert condition(waiting, "Succeeded")["reason"] == "WaitingForDataset"
    kubelet.complete(objects.namespace, data_job_name(objects, "later"))
    objects.wait_job("early-train", timeout=30)
    kubelet.complete(objects.namespace, "early-train")
    objects.wait_condition("TrainingRun", "early", "Succeeded")


def test_training_failure_is_reported_not_retried_and_a_spec_fix_retrains(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    objects.create(training_run_manifest("bad", estimator={"class": "os.system", "params": {}}))
    first = objects.wait_job("bad-train")
    done = kubelet.complete(objects.namespace, "bad-train", expect_exit=1)
    assert done.result["reason"] == "UnknownEstimator"

    failed = objects.wait_condition("TrainingRun", "bad", "Succeeded", "False", reason="UnknownEstimator")
    assert condition(failed, "Ready")["status"] == "False"
    assert condition(failed, "Stalled")["status"] == "True"
    assert "not allowed" in condition(failed, "Succeeded")["message"]
    assert failed["status"]["phase"] == "Failed"
    event = eventually(lambda: objects.events(name="bad", reason="TrainingFailed"), what="the Warning Event")[
        0
    ]
    assert event["type"] == "Warning" and "not allowed" in event["message"]
    # Not retried: one pod (the pod failure policy failed the Job on exit code 1), no ModelVersion.
    assert stays(lambda: len(objects.pods("bad-train")) == 1 and not objects.list("ModelVersion"), seconds=4)

    objects.patch(
        "TrainingRun", "bad", {"spec": {"estimator": {"class": "sklearn.linear_model.LogisticRegression"}}}
    )

    def replaced() -> bool:
        job = objects.job("bad-train")
        return job is not None and job["metadata"]["uid"] != first["metadata"]["uid"]

    eventually(replaced, timeout=30, what="the training Job replaced for the fixed spec")
    kubelet.complete(objects.namespace, "bad-train")
    succeeded = objects.wait_condition("TrainingRun", "bad", "Succeeded")
    assert succeeded["status"]["observedGeneration"] == 2
    assert not condition(succeeded, "Stalled")
    assert [v["metadata"]["name"] for v in objects.list("ModelVersion")] == ["iris-v1"]


def test_spec_edit_after_registration_does_not_train_again(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "once")
    job_uid = objects.job("once-train")["metadata"]["uid"]  # type: ignore[index]

    objects.patch("TrainingRun", "once", {"spec": {"estimator": {"params": {"C": 0.5}}}})

    def noted(obj: dict[str, Any]) -> bool:
        return (
            obj["status"].get("observedGeneration") == 2
            and "create a new TrainingRun" in condition(obj, "Ready")["message"]
        )

    edited = objects.wait("TrainingRun", "once", noted, what="the spec edit acknowledged")
    assert condition(edited, "Ready")["status"] == "True"
    assert condition(edited, "Ready")["observedGeneration"] == 2
    assert stays(lambda: objects.job("once-train")["metadata"]["uid"] == job_uid, seconds=4)  # type: ignore[index]
    assert len(objects.list("ModelVersion")) == 1


def test_deleting_the_run_collects_its_job_but_keeps_the_model_version(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "gone")

    objects.delete("TrainingRun", "gone")

    eventually(lambda: objects.job("gone-train") is None, timeout=60, what="GC of the training Job")
    eventually(lambda: not objects.pods("gone-train"), timeout=60, what="GC of the training pod")
    assert objects.get("ModelVersion", "iris-v1") is not None
