"""A Dataset built from served traffic, against a real control plane: the data Job joins the
inference logs in the artifact store with their labels, merges the base Dataset's snapshot, and the
join statistics reach status; too little labelled traffic stalls with its own reason."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from modelcycle.workloads import serve_logging
from modelcycle.workloads.store import LocalStore
from support.kubelet import FakeKubelet
from support.lifecycle import (
    Objects,
    condition,
    data_job_name,
    dataset_manifest,
    eventually,
    ready_dataset,
    stays,
)
from support.operator import OperatorProcess

IRIS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def log_traffic(kubelet: FakeKubelet, namespace: str, *, requests: int, labelled: int) -> None:
    """What a serving pod of ModelDeployment `iris` would have logged: `requests` one-row requests,
    the first `labelled` of them labelled, one label for an id never logged, one torn segment."""
    store = LocalStore(kubelet.store())
    logger = serve_logging.InferenceLogger(
        serve_logging.LogConfig(store=store, namespace=namespace, deployment="iris", replica="iris-abc"),
        model_name="iris",
        model_version="1",
        features=IRIS,
    )
    rng = np.random.default_rng(0)
    for i in range(requests):
        logger.log_request(f"req-{i}", rng.uniform(0.5, 7.0, size=(1, 4)), np.array([i % 3]))
    for i in range(labelled):
        logger.log_feedback(f"req-{i}", [(i + 1) % 3])
    logger.log_feedback("never-served", [1])
    assert logger.close()
    torn = serve_logging.stream_prefix("requests", namespace, "iris") + "date=2026-01-01/0-torn.parquet"
    store.put_bytes(torn, b"PAR1 half a segment")


def traffic_manifest(name: str, **traffic: object) -> dict[str, object]:
    manifest = dataset_manifest(name)
    manifest["spec"]["source"] = {"traffic": {"deployment": "iris", **traffic}}  # type: ignore[index]
    return manifest


def test_a_traffic_dataset_joins_logs_with_labels_merges_the_base_and_reports_the_join(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    base = ready_dataset(objects, kubelet, "base")
    log_traffic(kubelet, objects.namespace, requests=60, labelled=40)
    objects.create(traffic_manifest("recent", mergeWith={"dataset": "base", "share": 0.2}))

    job_name = data_job_name(objects, "recent")
    job = objects.wait_job(job_name)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    merge_at = args.index("--merge-snapshot-uri")
    assert args[merge_at + 1 : merge_at + 4] == [
        base["status"]["snapshot"]["uri"],
        "--merge-snapshot-sha256",
        base["status"]["snapshot"]["sha256"],
    ]
    done = kubelet.complete(objects.namespace, job_name)

    ready = objects.wait_condition("Dataset", "recent", "Validated")
    status = ready["status"]
    assert status["snapshot"]["sha256"] == done.result["sha256"]
    assert status["snapshot"]["rows"] == 50 and status["snapshot"]["task"] == "classification"
    traffic = status["traffic"]
    assert {
        k: traffic[k] for k in ("logged", "labelled", "joined", "unmatchedLabels", "corruptSegments")
    } == {
        "logged": 60,
        "labelled": 41,
        "joined": 40,
        "unmatchedLabels": 1,
        "corruptSegments": 1,
    }
    assert traffic["mergedRows"] == 10 and traffic["mergedSnapshot"] == base["status"]["snapshot"]["sha256"]
    snapshot_file = kubelet.store() / status["snapshot"]["uri"].removeprefix("pvc://")
    assert pq.read_table(snapshot_file).num_rows == 50


def test_too_few_labelled_rows_stall_with_the_join_statistics_and_no_snapshot(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    log_traffic(kubelet, objects.namespace, requests=30, labelled=3)
    objects.create(traffic_manifest("recent", minLabelledRows=20))

    job_name = data_job_name(objects, "recent")
    done = kubelet.complete(objects.namespace, job_name, expect_exit=1)
    assert done.result["reason"] == "TooFewLabelledRows"

    stalled = objects.wait_condition("Dataset", "recent", "Stalled", reason="TooFewLabelledRows")
    assert condition(stalled, "Ready")["status"] == "False"
    assert "3 labelled rows" in condition(stalled, "Stalled")["message"]
    assert stalled["status"]["traffic"]["joined"] == 3
    assert stalled["status"]["traffic"]["unmatchedLabels"] == 1
    assert not (stalled["status"].get("snapshot") or {}).get("sha256")


def test_a_merge_waits_for_the_other_dataset_before_starting_a_job(
    operator: OperatorProcess, objects: Objects, kubelet: FakeKubelet
) -> None:
    log_traffic(kubelet, objects.namespace, requests=20, labelled=20)
    objects.create(traffic_manifest("recent", mergeWith={"dataset": "later", "share": 0.5}))

    waiting = objects.wait_condition("Dataset", "recent", "Reconciling", reason="WaitingForDataset")
    assert "later" in condition(waiting, "Reconciling")["message"]
    assert stays(lambda: not objects.jobs(), seconds=4)

    ready_dataset(objects, kubelet, "later")
    job_name = eventually(
        lambda: next(
            (
                j["metadata"]["name"]
                for j in objects.jobs()
                if j["metadata"]["name"].startswith("recent-data-")
            ),
            None,
        ),
        what="the traffic Dataset's data Job once its merge source is Ready",
    )
    kubelet.complete(objects.namespace, job_name)
    ready = objects.wait_condition("Dataset", "recent", "Ready")
    assert ready["status"]["traffic"]["mergedRows"] == 20
