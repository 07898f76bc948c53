"""`modelcycle validate`: integrity first, holdout metrics, gates, production comparison, latency, publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from workload_helpers import (
    assert_store_clean,
    builtin,
    model_version,
    run_cli,
    run_inproc,
    snapshot_inproc,
    store_files,
    train_inproc,
    training_run,
)

from modelcycle.api.common import Gates
from modelcycle.workloads import validate

CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "iris",
        "sklearn.linear_model.LogisticRegression",
        {"max_iter": 1000},
        {"min": {"accuracy": 0.9, "roc_auc": 0.95}},
    ),
    (
        "wine",
        "sklearn.ensemble.RandomForestClassifier",
        {"n_estimators": 20},
        {"min": {"f1_macro": 0.85}, "max": {"log_loss": 0.6}},
    ),
    ("diabetes", "sklearn.linear_model.Ridge", {"alpha": 0.1}, {"max": {"rmse": 65.0}, "min": {"r2": 0.3}}),
]


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]]:
    store = tmp_path_factory.mktemp("validate-store")
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name, estimator, params, _ in CASES:
        snap = snapshot_inproc(builtin(name), store)
        out[name] = (
            snap,
            train_inproc(training_run(estimator, params, name=f"{name}-run", model=name), snap, store),
        )
    return store, out


@pytest.mark.parametrize(("name", "estimator", "params", "gates"), CASES)
def test_cli_validates_and_publishes(
    tmp_path: Path,
    trained: tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]],
    name: str,
    estimator: str,
    params: dict[str, Any],
    gates: dict[str, Any],
) -> None:
    store, models = trained
    snap, result = models[name]
    version = model_version(result, snap, model=name, version=3, gates=gates)
    out = run_cli(["validate", "--spec-json", json.dumps(version), "--publish"], store=store, tmp=tmp_path)
    assert out.code == 0, out
    assert out.result["ok"] is True and out.result["validated"] is True, out.result
    # the holdout rows are training's: the same metrics, recomputed
    assert out.result["metrics"] == pytest.approx(result["metrics"], rel=1e-9)
    assert len(out.result["reasons"]) == sum(len(v) for v in gates.values())
    latency = out.result["latency"]
    assert latency["singleRowMs"] > 0 and latency["batchRowsPerSecond"] > 100
    assert out.result["publishedUri"] == f"pvc://models/ml/{name}/v3/model.skops"
    published = store / f"models/ml/{name}/v3"
    run_dir = store / f"models/ml/{name}/runs/{name}-run"
    assert (published / "model.skops").read_bytes() == (run_dir / "model.skops").read_bytes()
    meta = json.loads((published / "metadata.json").read_text())
    assert meta["publishedVersion"] == 3 and meta["sourceUri"] == result["artifact"]["uri"]
    assert meta["sha256"] == result["artifact"]["sha256"] and meta["features"]
    assert json.loads(out.log_text or "") == out.result
    assert_store_clean(store)


def test_cli_refuses_a_corrupted_artifact(
    tmp_path: Path, trained: tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]]
) -> None:
    store, models = trained
    snap, result = models["iris"]
    # a copy of the artifact with one byte flipped, at its own place in the store
    data = bytearray((store / "models/ml/iris/runs/iris-run/model.skops").read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped = store / "models/ml/iris/runs/flipped/model.skops"
    flipped.parent.mkdir(parents=True)
    flipped.write_bytes(bytes(data))
    corrupted = dict(
        result, artifact=dict(result["artifact"], uri="pvc://models/ml/iris/runs/flipped/model.skops")
    )
    version = model_version(corrupted, snap, model="iris", version=9)
    before = store_files(store)
    out = run_cli(["validate", "--spec-json", json.dumps(version), "--publish"], store=store, tmp=tmp_path)
    assert out.code == 1, out
    assert out.result == {"ok": False, "reason": "ArtifactCorrupted", "message": out.result["message"]}
    assert "expected " + result["artifact"]["sha256"] in out.result["message"]
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {out.result['message']}"
    ]
    assert store_files(store) == before  # nothing published
    flipped.unlink()
    flipped.parent.rmdir()


def test_failing_gates_reject_without_publishing(
    trained: tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    store, models = trained
    snap, result = models["diabetes"]
    version = model_version(
        result, snap, model="diabetes", version=5, gates={"max": {"rmse": 10}, "min": {"r2": 0.99}}
    )
    before = store_files(store)
    out = run_inproc(["validate", "--spec-json", json.dumps(version), "--publish"], store=store)
    assert out.code == 0 and out.result["ok"] is True and out.result["validated"] is False, out
    assert len(out.result["reasons"]) == 2
    assert (
        out.result["reasons"][0].startswith("r2 ") and "is below the minimum 0.99" in out.result["reasons"][0]
    )
    assert (
        out.result["reasons"][1].startswith("rmse ") and "is above the maximum 10" in out.result["reasons"][1]
    )
    assert "publishedUri" not in out.result
    assert store_files(store) == before


def test_must_beat_production_through_the_cli(
    trained: tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    store, models = trained
    snap, result = models["diabetes"]
    rmse = result["metrics"]["rmse"]
    gates = {"mustBeatProduction": {"metric": "rmse", "tolerance": 0.5}}
    version = model_version(result, snap, model="diabetes", version=6, gates=gates)
    args = ["validate", "--spec-json", json.dumps(version), "--production-version", "2"]
    worse = run_inproc([*args, "--production-metrics", json.dumps({"rmse": rmse - 1.0})], store=store)
    assert worse.code == 0 and worse.result["validated"] is False, worse
    assert worse.result["production"] == {
        "version": 2,
        "metric": "rmse",
        "production": rmse - 1.0,
        "candidate": rmse,
    }
    within = run_inproc([*args, "--production-metrics", json.dumps({"rmse": rmse - 0.4})], store=store)
    assert within.result["validated"] is True, within
    out = run_inproc([*args[:-2], "--production-metrics", "{}"], store=store)
    assert out.code == 2 and out.result["reason"] == "InvalidSpec"
    out = run_inproc([*args, "--production-metrics", "[1]"], store=store)
    assert out.code == 2 and out.result["reason"] == "InvalidSpec"


def test_the_production_artifact_is_evaluated_on_the_candidates_holdout_which_is_reported(
    trained: tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    store, models = trained
    snap, champion = models["iris"]
    weak = train_inproc(
        training_run(
            "sklearn.tree.DecisionTreeClassifier", {"max_depth": 1}, name="iris-stump", model="iris"
        ),
        snap,
        store,
    )
    gates = {"mustBeatProduction": {"metric": "accuracy", "tolerance": 0.0}}
    version = model_version(weak, snap, model="iris", version=7, gates=gates)
    # Production's recorded number is stale (say, from before a change): 0.1. On the same rows as
    # the candidate, the champion scores what it scores now, and the stump does not beat it.
    args = ["validate", "--spec-json", json.dumps(version), "--production-version", "2"]
    args += ["--production-metrics", json.dumps({"accuracy": 0.1})]
    recorded = run_inproc(args, store=store)
    assert recorded.result["validated"] is True, recorded
    assert "productionEvaluated" not in recorded.result["holdout"]
    champion_args = ["--production-artifact-uri", champion["artifact"]["uri"]]
    champion_args += ["--production-artifact-sha256", champion["artifact"]["sha256"]]
    evaluated = run_inproc([*args, *champion_args], store=store)
    assert evaluated.code == 0 and evaluated.result["validated"] is False, evaluated
    assert evaluated.result["production"]["production"] == pytest.approx(champion["metrics"]["accuracy"])
    assert evaluated.result["holdout"] == {
        "datasetSha256": snap["sha256"],
        "rows": 30,
        "testFraction": 0.2,
        "seed": 42,
        "productionEvaluated": True,
    }
    wrong_sha = run_inproc([*args, *champion_args[:-1], "0" * 64], store=store)
    assert wrong_sha.code == 1 and wrong_sha.result["reason"] == "ArtifactCorrupted"
    alone = run_inproc(["validate", "--spec-json", json.dumps(version), *champion_args], store=store)
    assert alone.code == 2 and alone.result["reason"] == "InvalidSpec"


def test_apply_gates_directions_and_tolerance() -> None:
    gates = Gates.model_validate({"mustBeatProduction": {"metric": "accuracy", "tolerance": 0.01}})
    assert validate.apply_gates({"accuracy": 0.90}, gates, (1, {"accuracy": 0.905}))[0] is True
    assert validate.apply_gates({"accuracy": 0.89}, gates, (1, {"accuracy": 0.905}))[0] is False
    passed, reasons, comparison = validate.apply_gates({"accuracy": 0.5}, gates, None)
    assert (
        passed
        and reasons == ["mustBeatProduction: no version in production to compare with"]
        and comparison is None
    )
    for metric in ("rmse", "mae", "log_loss"):
        lower = Gates.model_validate({"mustBeatProduction": {"metric": metric}})
        assert validate.apply_gates({metric: 1.0}, lower, (1, {metric: 1.0}))[0] is True
        assert validate.apply_gates({metric: 1.1}, lower, (1, {metric: 1.0}))[0] is False
        assert validate.apply_gates({metric: 0.9}, lower, (1, {metric: 1.0}))[0] is True
    missing = Gates.model_validate({"min": {"roc_auc": 0.9}})
    passed, reasons, _ = validate.apply_gates({"accuracy": 1.0}, missing)
    assert not passed and reasons == ["gate min.roc_auc: the metric roc_auc was not computed for this model"]
    assert validate.apply_gates({"accuracy": 1.0}, None) == (True, ["no gates configured"], None)


def test_publish_refuses_to_overwrite_another_version(
    trained: tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    store, models = trained
    iris_snap, iris = models["iris"]
    first = model_version(iris, iris_snap, model="iris", version=7)
    out = run_inproc(["validate", "--spec-json", json.dumps(first), "--publish"], store=store)
    assert out.code == 0 and out.result["publishedUri"] == "pvc://models/ml/iris/v7/model.skops"
    again = run_inproc(["validate", "--spec-json", json.dumps(first), "--publish"], store=store)
    assert again.code == 0 and again.result["publishedUri"] == out.result["publishedUri"]  # idempotent
    # another artifact claiming v7 of the same model
    other = train_inproc(
        training_run("sklearn.tree.DecisionTreeClassifier", name="other", model="iris"), iris_snap, store
    )
    clash = model_version(other, iris_snap, model="iris", version=7)
    out = run_inproc(["validate", "--spec-json", json.dumps(clash), "--publish"], store=store)
    assert out.code == 1 and out.result["reason"] == "VersionConflict", out
    assert (store / "models/ml/iris/v7/model.skops").read_bytes() == (
        store / "models/ml/iris/runs/iris-run/model.skops"
    ).read_bytes()


def test_missing_lineage_artifact_or_dataset(
    trained: tuple[Path, dict[str, tuple[dict[str, Any], dict[str, Any]]]],
) -> None:
    store, models = trained
    snap, result = models["wine"]
    version = model_version(result, snap, model="wine")
    del version["spec"]["lineage"]
    out = run_inproc(["validate", "--spec-json", json.dumps(version)], store=store)
    assert out.code == 2 and "lineage.datasetUri is required" in out.result["message"]
    version = model_version(
        dict(result, artifact=dict(result["artifact"], uri="pvc://models/none/model.skops")), snap
    )
    out = run_inproc(["validate", "--spec-json", json.dumps(version)], store=store)
    assert out.code == 1 and out.result["reason"] == "ArtifactUnavailable"
    # the dataset must be the one the model was trained on: a different snapshot is refused
    other_snap, _ = models["iris"]
    version = model_version(result, dict(snap, sha256=other_snap["sha256"]), model="wine")
    out = run_inproc(["validate", "--spec-json", json.dumps(version)], store=store)
    assert out.code == 1 and out.result["reason"] == "DatasetCorrupted"
    version = model_version(result, other_snap, model="wine")
    out = run_inproc(["validate", "--spec-json", json.dumps(version)], store=store)
    assert out.code == 1 and out.result["reason"] == "FeatureMismatch"
