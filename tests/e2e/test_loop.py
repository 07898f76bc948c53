"""The whole loop on the real node, with the operator in-cluster: iris (classification, rolling) and
diabetes (regression, canary, feedback labels).

Data Job → Dataset Ready → training Job → ModelVersion registered → validation Job → Validated →
Deployment serving over OIP v2 (predictions compared with the model loaded directly from its
artifact through the safe loader) → shifted traffic → DriftDetected → retraining TrainingRun →
new version validated against production → rolled out while a client keeps sending requests to
the Service's ready endpoints: every request must succeed, and each answer must be what the
version that answered predicts.

The client sends to each of the Service's ready endpoints in turn, at each request, so every
replica answers and a failed one is noticed; see modelcycle.local.traffic for where that list
comes from (the EndpointSlices kube-proxy routes by).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

from modelcycle.builders import serving
from modelcycle.local import traffic
from modelcycle.workloads.store import sha256_file
from support.loop import (
    DATASET_READY,
    DEPLOYMENT_SERVING,
    RUN_REGISTERED,
    VERSION_VALIDATED,
    Cluster,
    ServedModels,
    assert_conditions,
    assert_one_job_and_one_version,
    assert_pods_ran_on_node,
    assert_rollout_lost_no_request,
    example,
    features_and_rows,
    patched,
    serves,
    shifted,
)

pytestmark = pytest.mark.timeout(1200)

MONITOR_INTERVAL = 5
SHA256 = r"^[0-9a-f]{64}$"


def test_iris_classification_loop(new_cluster: Any) -> None:
    c: Cluster = new_cluster("iris")
    ex = example("iris")
    monitor = patched(
        ex["ModelMonitor"], {"intervalSeconds": MONITOR_INTERVAL, "retrain": {"cooldownSeconds": 900}}
    )
    for doc in (ex["Dataset"], ex["TrainingRun"], ex["ModelDeployment"], monitor, ex["ModelVersion"]):
        c.apply(doc)

    # --- Dataset -----------------------------------------------------------------------------------
    ds = c.wait_condition("Dataset", "iris", "Ready", timeout=300)
    assert_conditions(ds, DATASET_READY)
    snap = ds["status"]["snapshot"]
    assert (snap["rows"], snap["columns"], snap["task"]) == (150, 5, "classification")
    assert len(snap["sha256"]) == 64
    assert len(c.snapshot(ds)) == 150

    # --- TrainingRun → ModelVersion ------------------------------------------------------------------
    run = c.wait_condition("TrainingRun", "iris-logreg", "Succeeded", timeout=300)
    assert_conditions(run, RUN_REGISTERED)
    assert run["status"]["modelVersion"] == "iris-v1" and run["status"]["version"] == 1
    assert run["status"]["datasetSha256"] == snap["sha256"]
    assert run["status"]["metrics"]["accuracy"] >= 0.85
    assert c.history is not None
    assert c.history.saw("TrainingRun", "iris-logreg", "Ready", "False", "Training"), c.history.dump()
    assert c.history.saw("TrainingRun", "iris-logreg", "Reconciling", "True"), c.history.dump()
    _, mv1 = assert_one_job_and_one_version(c, "iris-logreg")

    mv1 = c.wait_condition("ModelVersion", "iris-v1", "Validated", timeout=300)
    assert_conditions(mv1, VERSION_VALIDATED)
    assert not mv1["metadata"].get("ownerReferences"), "a ModelVersion is a record, never a child"
    lineage = mv1["spec"]["lineage"]
    assert (lineage["trainingRun"], lineage["dataset"], lineage["datasetSha256"]) == (
        "iris-logreg",
        "iris",
        snap["sha256"],
    )
    assert sha256_file(c.artifact_path(mv1["spec"]["artifact"]["uri"])) == mv1["spec"]["artifact"]["sha256"]
    assert mv1["status"]["metrics"]["accuracy"] == pytest.approx(run["status"]["metrics"]["accuracy"])

    # The imported version points at an artifact nobody copied: rejected, with the reason.
    imported = c.wait_condition("ModelVersion", "iris-imported-v1", "Stalled", timeout=300)
    assert_conditions(
        imported,
        {
            "Ready": ("False", "ArtifactUnavailable"),
            "Validated": ("False", "ArtifactUnavailable"),
            "Stalled": ("True", "ArtifactUnavailable"),
        },
    )

    # --- ModelDeployment serving v1 ------------------------------------------------------------------
    mdep = c.wait("ModelDeployment", "iris", serves(1), what="Ready serving v1", timeout=300)
    assert_conditions(mdep, DEPLOYMENT_SERVING)
    assert (mdep["status"]["replicas"], mdep["status"]["readyReplicas"]) == (2, 2)
    assert mdep["status"]["url"] == f"http://iris.{c.namespace}.svc.cluster.local/v2/models/iris"

    with traffic.ServiceEndpoints(c.kube, c.namespace, "iris") as endpoints:
        endpoints.wait_for(lambda e: len(e) == 2, timeout=60, what="two ready endpoints")
        client = traffic.OipClient(endpoints, "iris")
        features = [f["name"] for f in client.get("")["parameters"]["features"]]
        rows, _ = features_and_rows(c, ds, features)
        models = ServedModels(c, "iris", features, "classification")

        # --- predictions, compared with the model loaded from its artifact --------------------------
        local_model = models.get("1")
        pods = set()
        for start in range(0, len(rows), 10):
            batch = rows[start : start + 10]
            result = client.infer(batch, outputs=("predict", "predict_proba"))
            pods.add(result.endpoint.pod)
            assert result.model_version == "1"
            assert models.mismatch("1", batch, result.predictions) is None
            proba = np.asarray(result.output("predict_proba"), dtype=np.float64).reshape(len(batch), -1)
            expected = local_model.predict_proba(_model_input(local_model, batch, features))
            np.testing.assert_allclose(proba, expected, rtol=1e-9, atol=1e-12)
        assert len(pods) == 2, "round-robin over both ready pods"

        # --- drift ---------------------------------------------------------------------------------
        drifted_rows = shifted(rows, stds=1.5)
        for start in range(0, 400, 10):
            client.infer([drifted_rows[(start + i) % len(drifted_rows)] for i in range(10)])
        for endpoint in endpoints.ready():
            report = client.get("/drift", endpoint=endpoint)
            assert report["drifted"] is True, report
        mon = c.wait_condition("ModelMonitor", "iris", "DriftDetected", timeout=120)
        # Ready's reason says what the monitor did about the drift (it created the retraining run).
        retraining = frozenset({"RetrainCreated", "CoolingDown", "MaxConcurrent", "Monitoring"})
        assert_conditions(mon, {"Ready": ("True", retraining), "DriftDetected": ("True", "DriftDetected")})
        assert mon["status"]["windowSize"] >= 200 and mon["status"]["servedVersion"] == 1
        assert set(mon["status"]["driftedFeatures"]) == set(features)
        assert all(f["drifted"] and f["pValue"] < 0.05 for f in mon["status"]["features"])
        retrain_name = mon["status"]["retrainRuns"][-1]

        # --- retraining and the rolling rollout, under traffic -------------------------------------
        retrain = c.must("TrainingRun", retrain_name)
        labels_ = retrain["metadata"]["labels"]
        assert (labels_["modelcycle.io/monitor"], labels_["modelcycle.io/trigger"]) == ("iris", "drift")
        assert labels_["modelcycle.io/source-run"] == "iris-logreg"
        assert not retrain["metadata"].get("ownerReferences"), "a retraining run is a record, not a child"

        def steady(n: int) -> list[list[float]]:
            return [rows[(n * 3 + i) % len(rows)] for i in range(3)]

        with traffic.Traffic(
            client, steady, check=lambda r, b: models.mismatch(r.model_version, b, r.predictions)
        ) as load:
            retrain = c.wait_condition("TrainingRun", retrain_name, "Succeeded", timeout=300)
            assert_conditions(retrain, RUN_REGISTERED)
            assert retrain["status"]["modelVersion"] == "iris-v2"
            mv2 = c.wait_condition("ModelVersion", "iris-v2", "Validated", timeout=300)
            assert_conditions(mv2, VERSION_VALIDATED)
            assert mv2["status"]["production"]["version"] == 1
            assert mv2["spec"]["lineage"]["trainingRun"] == retrain_name
            c.wait("ModelDeployment", "iris", serves(2), what="Ready serving v2", timeout=300)
            time.sleep(1)
            stats = load.stop()
    assert stats.total > 100
    assert_rollout_lost_no_request(stats)

    # --- the final state of every object -----------------------------------------------------------
    assert c.history.saw("ModelDeployment", "iris", "Ready", "False", "RollingOut"), c.history.dump()
    mdep = c.must("ModelDeployment", "iris")
    assert_conditions(mdep, DEPLOYMENT_SERVING)
    assert mdep["status"]["modelVersion"] == "iris-v2"
    assert [(h["version"], h["outcome"]) for h in mdep["status"]["history"]][-2:] == [
        (1, "Superseded"),
        (2, "Serving"),
    ]
    deployments = c.list("Deployment")
    assert [d["metadata"]["name"] for d in deployments] == ["iris"], "rolling: one Deployment, no canary"
    assert deployments[0]["spec"]["template"]["metadata"]["labels"]["modelcycle.io/version"] == "2"
    for name in ("iris-logreg", retrain_name):
        assert_one_job_and_one_version(c, name)
    assert sorted(v["metadata"]["name"] for v in c.list("ModelVersion")) == [
        "iris-imported-v1",
        "iris-v1",
        "iris-v2",
    ]
    assert_conditions(c.must("Dataset", "iris"), DATASET_READY)
    mon = c.must("ModelMonitor", "iris")
    assert mon["status"]["retrainRuns"] == [retrain_name], "one retraining run per cooldown"
    assert_pods_ran_on_node(c)


def test_diabetes_regression_loop_with_canary_and_feedback(new_cluster: Any) -> None:
    c: Cluster = new_cluster("diabetes")
    ex = example("diabetes")
    # Demo-sized timings; the replicas, weight, methods and thresholds are the example's.
    mdep_doc = patched(ex["ModelDeployment"], {"strategy": {"canary": {"promoteAfterSeconds": 10}}})
    monitor = patched(ex["ModelMonitor"], {"intervalSeconds": MONITOR_INTERVAL})
    for doc in (ex["Dataset"], ex["TrainingRun"], mdep_doc, monitor):
        c.apply(doc)
    replicas = int(mdep_doc["spec"]["replicas"])
    # During the canary the replicas are split between the tracks as the weight says.
    split = serving.canary_split(replicas, int(mdep_doc["spec"]["strategy"]["canary"]["weight"]))

    ds = c.wait_condition("Dataset", "diabetes", "Ready", timeout=300)
    assert_conditions(ds, DATASET_READY)
    assert (ds["status"]["snapshot"]["rows"], ds["status"]["snapshot"]["task"]) == (442, "regression")

    run = c.wait_condition("TrainingRun", "diabetes-ridge", "Succeeded", timeout=300)
    assert_conditions(run, RUN_REGISTERED)
    assert run["status"]["bestParams"]["alpha"] in (0.1, 1.0, 10.0), (
        "the grid search picked one of its values"
    )
    assert run["status"]["metrics"]["rmse"] <= 60
    mv1 = c.wait_condition("ModelVersion", "diabetes-v1", "Validated", timeout=300)
    assert_conditions(mv1, VERSION_VALIDATED)
    assert_one_job_and_one_version(c, "diabetes-ridge")

    mdep = c.wait("ModelDeployment", "diabetes", serves(1), what="Ready serving v1", timeout=300)
    assert_conditions(mdep, DEPLOYMENT_SERVING)

    with traffic.ServiceEndpoints(c.kube, c.namespace, "diabetes") as endpoints:
        endpoints.wait_for(lambda e: len(e) == replicas, timeout=120, what=f"{replicas} ready endpoints")
        client = traffic.OipClient(endpoints, "diabetes")
        features = [f["name"] for f in client.get("")["parameters"]["features"]]
        rows, labels = features_and_rows(c, ds, features)
        models = ServedModels(c, "diabetes", features, "regression")

        # --- predictions and feedback labels ---------------------------------------------------------
        errors: list[float] = []
        for start in range(0, len(rows), 8):
            batch, truth = rows[start : start + 8], labels[start : start + 8]
            request_id = f"req-{start}"
            result = client.infer(batch, request_id=request_id)
            assert models.mismatch("1", batch, result.predictions) is None
            feedback = client.feedback([{"id": request_id, "labels": truth}], endpoint=result.endpoint)
            assert feedback["accepted"] == len(batch), feedback
            errors += [float(p) - float(t) for p, t in zip(result.predictions, truth, strict=True)]
        rmse = math.sqrt(sum(e * e for e in errors) / len(errors))

        def performance_reported(o: dict[str, Any]) -> bool:
            perf = (o.get("status") or {}).get("performance") or {}
            return perf.get("count") == len(rows)

        mon = c.wait(
            "ModelMonitor", "diabetes", performance_reported, what="live rmse from the labels", timeout=120
        )
        assert mon["status"]["performance"]["rmse"] == pytest.approx(rmse, rel=1e-6)
        assert_conditions(
            mon,
            {
                "Ready": ("True", "Monitoring"),
                "DriftDetected": ("False", "NoDrift"),
                "PerformanceDegraded": ("False", "WithinTarget"),
            },
        )

        # --- drift on the monitored features (PSI) -----------------------------------------------------
        watched = list(monitor["spec"]["drift"]["features"])
        drifted_rows = shifted(rows, stds=2.0, columns=[features.index(f) for f in watched])
        for start in range(0, 600, 10):
            client.infer([drifted_rows[(start + i) % len(drifted_rows)] for i in range(10)])
        mon = c.wait_condition("ModelMonitor", "diabetes", "DriftDetected", timeout=120)
        assert set(mon["status"]["driftedFeatures"]) <= set(watched) and mon["status"]["driftedFeatures"]
        assert all(f["psi"] > 0.2 for f in mon["status"]["features"] if f["drifted"])
        retrain_name = mon["status"]["retrainRuns"][-1]

        # --- canary rollout under traffic ----------------------------------------------------------------
        def steady(n: int) -> list[list[float]]:
            return [rows[(n * 2 + i) % len(rows)] for i in range(2)]

        canary_seen: list[dict[str, Any]] = []

        def watch_canary() -> None:
            obj = c.get("ModelDeployment", "diabetes")
            if obj and (obj.get("status") or {}).get("canaryVersion") == 2 and not canary_seen:
                canary_seen.append(obj)

        with traffic.Traffic(
            client, steady, check=lambda r, b: models.mismatch(r.model_version, b, r.predictions)
        ) as load:
            c.wait_condition("TrainingRun", retrain_name, "Succeeded", timeout=300)
            mv2 = c.wait_condition("ModelVersion", "diabetes-v2", "Validated", timeout=300)
            assert_conditions(mv2, VERSION_VALIDATED)
            c.wait(
                "ModelDeployment",
                "diabetes",
                serves(2),
                what="Ready serving v2",
                timeout=400,
                while_waiting=watch_canary,
            )
            time.sleep(1)
            stats = load.stop()
    assert_rollout_lost_no_request(stats)
    assert canary_seen, "the new version went through a canary phase"
    assert canary_seen[0]["status"]["servedVersion"] == 1
    assert canary_seen[0]["status"]["replicas"] == sum(split), canary_seen[0]["status"]
    assert canary_seen[0]["status"]["canaryShare"] == serving.canary_share(*split), canary_seen[0]["status"]
    assert c.history is not None and c.history.saw(
        "ModelDeployment", "diabetes", "Ready", "False", "CanaryInProgress"
    )
    mdep = c.must("ModelDeployment", "diabetes")
    assert_conditions(mdep, DEPLOYMENT_SERVING)
    assert "canaryVersion" not in mdep["status"] or mdep["status"]["canaryVersion"] is None
    assert [d["metadata"]["name"] for d in c.list("Deployment")] == ["diabetes"], "the canary is gone"
    for name in ("diabetes-ridge", retrain_name):
        assert_one_job_and_one_version(c, name)
    assert_pods_ran_on_node(c)


def _model_input(model: Any, rows: list[list[float]], features: list[str]) -> Any:
    import pandas as pd

    x = np.asarray(rows, dtype=np.float64)
    return pd.DataFrame(x, columns=features) if getattr(model, "feature_names_in_", None) is not None else x
