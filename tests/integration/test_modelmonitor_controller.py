"""ModelMonitor against a real control plane, the real operator, and real model servers.

The serving pods of the ModelDeployment are run here (support.serving.ServingPods): each pod's own
`modelcycle serve` command, reading the model and its training profile from the test's artifact
store, on its own address, reported Ready with that address as podIP. The operator reaches them
the way it does in a cluster, through the API server's pod proxy; the proxy only dials
non-loopback addresses, so on a host without one the operator runs with
`--monitor-stats-access direct` and the pods get 127.0.0.x addresses.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelcycle.builders import meta, serving
from modelcycle.controllers import kube
from support import models
from support.cluster import condition, wait_for
from support.operator import free_port
from support.serving import (
    ServingPods,
    create_version,
    infer,
    serving_addresses,
    validate_version,
)

pytestmark = pytest.mark.timeout(420)

MODEL = "iris"
SHIFTED_FEATURE = "sepal length (cm)"


@dataclass
class Served:
    client: kube.Client
    namespace: str
    pods: ServingPods
    model: models.ModelDir
    operator: Any
    metrics_port: int
    mode: str

    def addresses(self) -> list[str]:
        return self.pods.addresses_of_ready_pods()


def retraining_runs(client: kube.Client, namespace: str, monitor: str = "iris-mon") -> list[dict[str, Any]]:
    runs = client.list(kind="TrainingRun", namespace=namespace, label_selector=f"{meta.MONITOR}={monitor}")
    return sorted(runs, key=lambda r: r["metadata"]["creationTimestamp"])


def monitor_status(client: kube.Client, namespace: str, name: str = "iris-mon") -> dict[str, Any]:
    return dict(
        (client.get_or_none(kind="ModelMonitor", namespace=namespace, name=name) or {}).get("status") or {}
    )


def monitor_condition(
    client: kube.Client, namespace: str, type_: str, name: str = "iris-mon"
) -> dict[str, Any]:
    return condition(client.get_or_none(kind="ModelMonitor", namespace=namespace, name=name), type_)


def create_monitor(
    client: kube.Client, namespace: str, name: str = "iris-mon", **spec: Any
) -> dict[str, Any]:
    return client.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "ModelMonitor",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"deploymentRef": {"name": "iris"}, "intervalSeconds": 5, **spec},
        }
    )


def send(served: Served, rows: np.ndarray) -> None:
    """Split the rows over the ready replicas (each counts its share; the monitor adds them up)."""
    addresses = served.addresses()
    for address, part in zip(addresses, np.array_split(rows, len(addresses)), strict=True):
        if len(part):
            infer(address, MODEL, part.tolist())


def shifted_rows(model: models.ModelDir, n: int, *, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = model.x[rng.integers(0, len(model.x), n)].copy()
    rows[:, 0] += 2.0  # sepal length shifted far beyond the training range
    return rows


def drift_gauges(port: int, namespace: str, monitor: str = "iris-mon") -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if (
            line.startswith("modelcycle_monitor_drift_score{")
            and f'namespace="{namespace}"' in line
            and f'monitor="{monitor}"' in line
        ):
            feature = line.split('feature="', 1)[1].split('"', 1)[0]
            found[feature] = float(line.rsplit(" ", 1)[1])
    return found


@pytest.fixture
def served(
    request: pytest.FixtureRequest,
    api_client: Any,
    namespace: str,
    operator_factory: Any,
    kubelet: Any,
    tmp_path: Path,
) -> Iterator[Served]:
    """Model iris v1 validated and served by real servers on two replicas (one if only one address).

    Parametrize indirectly with "direct" to make the operator reach the pods by IP (127.0.0.x), or
    with a dict of ModelDeployment spec fields (such as `logging`)."""
    param = getattr(request, "param", "auto")
    extra_spec: dict[str, Any] = dict(param) if isinstance(param, dict) else {}
    addresses, mode = serving_addresses(2, mode=param if isinstance(param, str) else "auto")
    if not addresses:
        pytest.skip("no address with port 8080 free to run a model server on")
    metrics_port = free_port()
    operator = operator_factory(
        extra_args=["--metrics-port", str(metrics_port), "--monitor-stats-access", mode]
    )
    client = kube.Client(api_client.configuration)

    model = models.iris_classifier(tmp_path / "model")
    store = kubelet.store()
    model_key = f"models/{namespace}/iris/v1"
    (store / model_key).mkdir(parents=True)
    shutil.copy(model.model_file, store / model_key / "model.skops")
    shutil.copy(model.path / "metadata.json", store / model_key / "metadata.json")
    (store / "profiles").mkdir(exist_ok=True)
    shutil.copy(model.profile_path, store / "profiles" / f"{namespace}-iris.json")

    # The run that produced v1 (its Dataset does not exist, so it and its clones never finish).
    client.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": "iris-run", "namespace": namespace},
            "spec": {
                "datasetRef": {"name": "iris-data"},
                "model": {"name": MODEL},
                "estimator": {
                    "class": "sklearn.linear_model.LogisticRegression",
                    "params": {"max_iter": 500},
                },
                "split": {"testFraction": 0.25, "seed": 3},
            },
        }
    )
    create_version(
        client,
        namespace,
        model=MODEL,
        version=1,
        sha256=model.sha256,
        uri=f"pvc://{model_key}/model.skops",
        lineage={"trainingRun": "iris-run", "profileUri": f"pvc://profiles/{namespace}-iris.json"},
    )
    validate_version(kubelet, namespace, "iris-v1")
    mdep = client.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": namespace},
            "spec": {"model": MODEL, "replicas": len(addresses), **extra_spec},
        }
    )
    with ServingPods(
        client,
        kubelet,
        namespace,
        addresses=addresses,
        selector=serving.pod_selector(mdep),
        log_dir=tmp_path / "serving",
    ) as pods:
        wait_for(
            lambda: (
                condition(client.get(kind="ModelDeployment", namespace=namespace, name="iris"), "Ready").get(
                    "status"
                )
                == "True"
            ),
            timeout=120,
            what=f"ModelDeployment iris Ready (serving pods: {pods.failures or 'starting'})",
        )
        assert len(pods.addresses_of_ready_pods()) == len(addresses)
        yield Served(client, namespace, pods, model, operator, metrics_port, mode)


# --------------------------------------------------------------------------- drift → one retraining run


def test_drift_across_replicas_creates_exactly_one_retraining_run_per_cooldown(served: Served) -> None:
    client, namespace = served.client, served.namespace
    replicas = len(served.addresses())
    per_replica = 150
    create_monitor(
        client,
        namespace,
        drift={"method": "ks", "threshold": 0.05, "minSamples": per_replica * replicas},
        retrain={
            "enabled": True,
            "cooldownSeconds": 3600,
            "maxConcurrent": 3,
            "datasetRef": {"name": "iris-fresh"},
        },
    )
    # No traffic yet: monitoring, but no verdict.
    wait_for(
        lambda: monitor_condition(client, namespace, "DriftDetected").get("reason") == "InsufficientSamples",
        timeout=60,
        what="DriftDetected Unknown (InsufficientSamples)",
    )
    assert monitor_condition(client, namespace, "Ready")["status"] == "True"
    assert retraining_runs(client, namespace) == []

    # Shifted traffic, split over the replicas: only their sum reaches minSamples.
    send(served, shifted_rows(served.model, per_replica * replicas))
    drift = wait_for(
        lambda: (
            (found := monitor_condition(client, namespace, "DriftDetected")).get("status") == "True" and found
        ),
        timeout=60,
        what="DriftDetected=True",
    )
    assert SHIFTED_FEATURE in drift["message"]
    status = monitor_status(client, namespace)
    assert status["windowSize"] == per_replica * replicas
    assert status["servedVersion"] == 1
    assert status["driftedFeatures"] == [SHIFTED_FEATURE]
    by_name = {f["name"]: f for f in status["features"]}
    assert by_name[SHIFTED_FEATURE]["drifted"] is True
    assert by_name[SHIFTED_FEATURE]["pValue"] < 0.05
    assert sum(f["drifted"] for f in status["features"]) == 1

    # Exactly one retraining run: a clone of the source run on the fresh Dataset, no owner.
    runs = wait_for(lambda: retraining_runs(client, namespace), timeout=30, what="a retraining run")
    assert len(runs) == 1
    run = runs[0]
    source = client.get(kind="TrainingRun", namespace=namespace, name="iris-run")
    assert run["spec"] == {**source["spec"], "datasetRef": {"name": "iris-fresh"}}
    assert "ownerReferences" not in run["metadata"]
    labels = run["metadata"]["labels"]
    assert labels[meta.TRIGGER] == "drift"
    assert labels[meta.SOURCE_RUN] == "iris-run"
    assert labels[meta.MONITOR] == "iris-mon"
    status = monitor_status(client, namespace)
    assert status["retrainRuns"] == [run["metadata"]["name"]]
    assert status["lastRetrainTime"]

    # The drift score is exported per feature.
    gauges = wait_for(lambda: drift_gauges(served.metrics_port, namespace), timeout=20, what="drift gauges")
    assert gauges[SHIFTED_FEATURE] == pytest.approx(by_name[SHIFTED_FEATURE]["score"])

    # Drift persists for several checks: still one run (cooldown).
    checked = status["lastCheckTime"]
    wait_for(
        lambda: monitor_status(client, namespace).get("lastCheckTime", checked) > checked,
        timeout=30,
        what="another check",
    )
    time.sleep(6)
    assert len(retraining_runs(client, namespace)) == 1
    ready = monitor_condition(client, namespace, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CoolingDown")

    # A crash that also loses the monitor's status: the labelled run still holds the cooldown.
    served.operator.kill()
    client.patch(
        kind="ModelMonitor",
        namespace=namespace,
        name="iris-mon",
        subresource="status",
        patch={"status": {"lastRetrainTime": None, "retrainRuns": None, "lastCheckTime": None}},
    )
    served.operator.start()
    wait_for(
        lambda: monitor_status(client, namespace).get("lastCheckTime"),
        timeout=60,
        what="a check after the restart",
    )
    time.sleep(6)
    assert len(retraining_runs(client, namespace)) == 1
    assert monitor_condition(client, namespace, "DriftDetected")["status"] == "True"

    # Deleting the monitor keeps the run (a record) and removes the monitor's series.
    client.delete(kind="ModelMonitor", namespace=namespace, name="iris-mon")
    wait_for(lambda: drift_gauges(served.metrics_port, namespace) == {}, timeout=30, what="gauges removed")
    assert len(retraining_runs(client, namespace)) == 1


def test_retraining_never_exceeds_max_concurrent(served: Served) -> None:
    client, namespace = served.client, served.namespace
    cooldown = 6
    create_monitor(
        client,
        namespace,
        drift={"method": "psi", "threshold": 0.2, "minSamples": 100},
        retrain={"enabled": True, "cooldownSeconds": cooldown, "maxConcurrent": 2},
    )
    send(served, shifted_rows(served.model, 200, seed=1))
    wait_for(lambda: len(retraining_runs(client, namespace)) >= 2, timeout=90, what="two retraining runs")
    # None of them can finish (their Dataset is missing): no third one however long drift lasts.
    deadline = time.monotonic() + 3 * cooldown
    while time.monotonic() < deadline:
        assert len(retraining_runs(client, namespace)) <= 2
        time.sleep(1)
    runs = retraining_runs(client, namespace)
    assert len(runs) == 2
    created = [
        datetime.datetime.fromisoformat(r["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        for r in runs
    ]
    assert (created[1] - created[0]).total_seconds() >= cooldown - 1  # second-resolution timestamps
    ready = monitor_condition(client, namespace, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "MaxConcurrent")
    assert "2 run(s) still in progress" in ready["message"]


def test_performance_drop_from_feedback_triggers_retraining(served: Served) -> None:
    client, namespace = served.client, served.namespace
    create_monitor(
        client,
        namespace,
        drift={"minSamples": 50, "threshold": 0.001},
        performance={"metric": "accuracy", "min": 0.8},
        retrain={"enabled": True, "cooldownSeconds": 3600},
    )
    # In-distribution traffic (the training rows themselves, shuffled so that any replica's share
    # is a fair sample too): no drift. And labels that disagree with every prediction.
    _degrade(served)
    degraded = wait_for(
        lambda: (
            (found := monitor_condition(client, namespace, "PerformanceDegraded")).get("status") == "True"
            and found
        ),
        timeout=60,
        what="PerformanceDegraded=True",
    )
    assert "accuracy" in degraded["message"]
    assert monitor_condition(client, namespace, "DriftDetected")["status"] == "False"
    assert monitor_status(client, namespace)["performance"]["accuracy"] == 0.0
    runs = wait_for(lambda: retraining_runs(client, namespace), timeout=30, what="a retraining run")
    assert [r["metadata"]["labels"][meta.TRIGGER] for r in runs] == ["performance"]


@pytest.mark.parametrize("served", ["direct"], indirect=True)
def test_direct_stats_access_reads_the_pods_by_ip(served: Served) -> None:
    """`--monitor-stats-access direct`: HTTP to podIP:8080 instead of the pod proxy (for a node whose
    pods have loopback addresses, which the API server's proxy refuses)."""
    client, namespace = served.client, served.namespace
    assert served.mode == "direct"
    assert all(a.startswith("127.") for a in served.addresses())
    create_monitor(client, namespace, drift={"method": "jsd", "threshold": 0.1, "minSamples": 100})
    send(served, shifted_rows(served.model, 200, seed=2))
    # (a check may fall between the two replicas' shares: wait for the one that sees both)
    wait_for(
        lambda: monitor_status(client, namespace).get("windowSize") == 200, timeout=60, what="200 rows seen"
    )
    drift = monitor_condition(client, namespace, "DriftDetected")
    assert drift["status"] == "True"
    assert SHIFTED_FEATURE in drift["message"]
    assert retraining_runs(client, namespace) == []  # retrain not enabled


# --------------------------------------------------------------------------- bad references


def test_missing_deployment_stalls_and_recovers(api_client: Any, namespace: str, operator: Any) -> None:
    client = kube.Client(api_client.configuration)
    create_monitor(client, namespace)
    stalled = wait_for(
        lambda: (found := monitor_condition(client, namespace, "Stalled")).get("status") == "True" and found,
        timeout=60,
        what="Stalled",
    )
    assert stalled["reason"] == "DeploymentNotFound"
    assert monitor_condition(client, namespace, "Ready")["status"] == "False"
    events = client.list(kind="Event", namespace=namespace)
    assert any(e["reason"] == "DeploymentNotFound" and e["type"] == "Warning" for e in events)

    client.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": namespace},
            "spec": {"model": MODEL},
        }
    )
    # Recovered (retried with backoff): no longer Stalled, waiting for the deployment to serve.
    waiting = wait_for(
        lambda: (
            monitor_condition(client, namespace, "Stalled") == {}
            and (found := monitor_condition(client, namespace, "Ready")).get("reason")
            == "WaitingForDeployment"
            and found
        ),
        timeout=60,
        what="the monitor waiting for its deployment",
    )
    assert waiting["status"] == "False"
    assert monitor_condition(client, namespace, "DriftDetected")["status"] == "Unknown"


# --------------------------------------------------------------------------- retraining on recent traffic


def _base_dataset_and_logs(served: Served, kubelet: Any, *, labelled: int) -> None:
    """The served version's Dataset (`iris-data`, Ready) and what the deployment logged: 150 iris
    requests, the first `labelled` of them labelled (written by the servers' own logger)."""
    from modelcycle.workloads import serve_logging
    from modelcycle.workloads.store import LocalStore

    client, namespace = served.client, served.namespace
    client.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "iris-data", "namespace": namespace},
            "spec": {"source": {"builtin": {"name": "iris"}}, "target": "target"},
        }
    )
    job = wait_for(
        lambda: (
            client.get(kind="Dataset", namespace=namespace, name="iris-data").get("status", {}).get("jobName")
        ),
        timeout=60,
        what="the base Dataset's data Job",
    )
    kubelet.complete(namespace, job)
    logger = serve_logging.InferenceLogger(
        serve_logging.LogConfig(store=LocalStore(kubelet.store()), namespace=namespace, deployment="iris"),
        model_name=MODEL,
        model_version="1",
        features=served.model.features,
    )
    x, y = served.model.x, np.asarray(served.model.y)
    for i in range(150):
        logger.log_request(f"t-{i}", x[i : i + 1], np.array([y[i]]))
    for i in range(labelled):
        logger.log_feedback(f"t-{i}", [int(y[i])])
    assert logger.close()


def _degrade(served: Served) -> None:
    """In-distribution traffic (no drift), then labels that disagree with every prediction, on
    every replica: accuracy 0."""
    send(served, np.random.default_rng(5).permutation(served.model.x))
    for address in served.addresses():
        body = {"predictions": [0] * 60, "labels": [1] * 60}
        host = f"[{address}]" if ":" in address else address
        request = urllib.request.Request(
            f"http://{host}:8080/v2/models/{MODEL}/feedback",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def _traffic_dataset(client: kube.Client, namespace: str) -> dict[str, Any]:
    found = client.list(kind="Dataset", namespace=namespace, label_selector=f"{meta.MONITOR}=iris-mon")
    return found[0] if found else {}


def test_a_performance_drop_retrains_on_recent_labelled_traffic_after_its_dataset_is_ready(
    served: Served, kubelet: Any
) -> None:
    client, namespace = served.client, served.namespace
    _base_dataset_and_logs(served, kubelet, labelled=120)
    create_monitor(
        client,
        namespace,
        drift={"minSamples": 50, "threshold": 0.001},
        performance={"metric": "accuracy", "min": 0.8},
        retrain={
            "enabled": True,
            "cooldownSeconds": 3600,
            "traffic": {"window": {"lastRows": 100}, "baseShare": 0.2, "minLabelledRows": 50},
        },
    )
    _degrade(served)
    dataset = wait_for(lambda: _traffic_dataset(client, namespace), timeout=60, what="the traffic Dataset")
    assert dataset["spec"]["source"]["traffic"] == {
        "deployment": "iris",
        "window": {"lastRows": 100},
        "minLabelledRows": 50,
        "mergeWith": {"dataset": "iris-data", "share": 0.2},
    }
    assert dataset["spec"]["target"] == "target"
    assert "ownerReferences" not in dataset["metadata"]
    collecting = wait_for(
        lambda: (
            (found := monitor_condition(client, namespace, "Ready")).get("reason") == "CollectingTraffic"
            and found
        ),
        timeout=30,
        what="Ready=CollectingTraffic",
    )
    assert dataset["metadata"]["name"] in collecting["message"]
    assert retraining_runs(client, namespace) == []  # no run before the Dataset is Ready

    name = dataset["metadata"]["name"]
    job = wait_for(
        lambda: client.get(kind="Dataset", namespace=namespace, name=name).get("status", {}).get("jobName"),
        timeout=60,
        what="the traffic Dataset's data Job",
    )
    kubelet.complete(namespace, job)
    [run] = wait_for(lambda: retraining_runs(client, namespace), timeout=60, what="the retraining run")
    assert run["spec"]["datasetRef"] == {"name": name}
    ready = client.get(kind="Dataset", namespace=namespace, name=name)
    annotations = run["metadata"]["annotations"]
    assert annotations["modelcycle.io/traffic-dataset-sha256"] == ready["status"]["snapshot"]["sha256"]
    base = client.get(kind="Dataset", namespace=namespace, name="iris-data")
    assert annotations["modelcycle.io/base-dataset-sha256"] == base["status"]["snapshot"]["sha256"]
    assert ready["status"]["traffic"]["joined"] == 100 and ready["status"]["traffic"]["mergedRows"] == 25


def test_too_few_labelled_rows_in_the_window_create_no_run(served: Served, kubelet: Any) -> None:
    client, namespace = served.client, served.namespace
    _base_dataset_and_logs(served, kubelet, labelled=10)
    create_monitor(
        client,
        namespace,
        drift={"minSamples": 50, "threshold": 0.001},
        performance={"metric": "accuracy", "min": 0.8},
        retrain={"enabled": True, "cooldownSeconds": 3600, "traffic": {"minLabelledRows": 50}},
    )
    _degrade(served)
    dataset = wait_for(lambda: _traffic_dataset(client, namespace), timeout=60, what="the traffic Dataset")
    name = dataset["metadata"]["name"]
    job = wait_for(
        lambda: client.get(kind="Dataset", namespace=namespace, name=name).get("status", {}).get("jobName"),
        timeout=60,
        what="the traffic Dataset's data Job",
    )
    kubelet.complete(namespace, job, expect_exit=1)
    reported = wait_for(
        lambda: (
            (found := monitor_condition(client, namespace, "Ready")).get("reason") == "TooFewLabelledRows"
            and found
        ),
        timeout=60,
        what="Ready=TooFewLabelledRows",
    )
    assert "10 labelled rows" in reported["message"]
    time.sleep(6)  # a monitor interval later, still no run
    assert retraining_runs(client, namespace) == []


def _post(address: str, path: str, body: Any) -> dict[str, Any]:
    host = f"[{address}]" if ":" in address else address
    request = urllib.request.Request(
        f"http://{host}:8080/v2/models/{MODEL}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


@pytest.mark.parametrize("served", [{"logging": {"sampleRate": 1, "flushIntervalSeconds": 1}}], indirect=True)
def test_served_requests_and_labels_sent_to_another_replica_join_into_a_traffic_dataset(
    served: Served, kubelet: Any
) -> None:
    """The serving pods (their real `modelcycle serve` args, logging on) log what they serve; each
    label goes to a replica other than the one that served its request; the data Job joins them."""
    client, namespace = served.client, served.namespace
    addresses = served.addresses()
    x, y = served.model.x, np.asarray(served.model.y)
    for i in range(40):
        served_by = addresses[i % len(addresses)]
        body = {
            "id": f"req-{i}",
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, x.shape[1]],
                    "datatype": "FP64",
                    "data": x[i : i + 1].tolist(),
                }
            ],
        }
        _post(served_by, "infer", body)
    for i in range(30):
        elsewhere = addresses[(i + 1) % len(addresses)]
        answer = _post(elsewhere, "feedback", {"id": f"req-{i}", "labels": [int(y[i])]})
        assert answer["persisted"] == 1
    _post(addresses[0], "feedback", {"id": "never-served", "labels": [0]})
    time.sleep(3)  # flushIntervalSeconds 1: every segment is written by now
    client.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "recent", "namespace": namespace},
            "spec": {
                "source": {"traffic": {"deployment": "iris", "minLabelledRows": 20}},
                "target": "target",
            },
        }
    )
    job = wait_for(
        lambda: (
            client.get(kind="Dataset", namespace=namespace, name="recent").get("status", {}).get("jobName")
        ),
        timeout=60,
        what="the traffic Dataset's data Job",
    )
    kubelet.complete(namespace, job)
    ready = wait_for(
        lambda: (
            (found := client.get(kind="Dataset", namespace=namespace, name="recent"))
            .get("status", {})
            .get("snapshot", {})
            .get("sha256")
            and found
        ),
        timeout=60,
        what="the traffic Dataset's snapshot",
    )
    traffic = ready["status"]["traffic"]
    assert (traffic["logged"], traffic["labelled"], traffic["joined"], traffic["unmatchedLabels"]) == (
        40,
        31,
        30,
        1,
    )
    assert ready["status"]["snapshot"]["rows"] == 30
    segments = sorted((kubelet.store() / "inference-logs" / namespace / "iris").rglob("*.parquet"))
    assert segments and not any(p.name.startswith(".") for p in segments)
