"""`modelcycle train`: estimator allowlist, pipeline, split, metrics, artifact + metadata, refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from workload_helpers import (
    assert_store_clean,
    builtin,
    dataset,
    run_cli,
    run_inproc,
    snapshot_inproc,
    store_files,
    train_args,
    training_run,
)

from modelcycle.workloads import safeload, train
from modelcycle.workloads import snapshot as snap_mod
from modelcycle.workloads import store as store_mod


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    store = tmp_path_factory.mktemp("train-store")
    return store, {name: snapshot_inproc(builtin(name), store) for name in ("iris", "wine", "diabetes")}


CASES = [
    (
        "iris",
        "sklearn.linear_model.LogisticRegression",
        {"max_iter": 1000},
        [{"type": "standardScaler"}],
        {"accuracy", "f1_macro", "roc_auc", "log_loss"},
    ),
    (
        "wine",
        "sklearn.ensemble.RandomForestClassifier",
        {"n_estimators": 20},
        None,
        {"accuracy", "f1_macro", "roc_auc", "log_loss"},
    ),
    (
        "diabetes",
        "sklearn.linear_model.Ridge",
        {"alpha": 0.5},
        [{"type": "minMaxScaler"}],
        {"rmse", "mae", "r2"},
    ),
]


@pytest.mark.parametrize(("name", "estimator", "params", "preprocessing", "metrics"), CASES)
def test_cli_trains_on_builtin_datasets(
    tmp_path: Path,
    snapshots: tuple[Path, dict[str, dict[str, Any]]],
    name: str,
    estimator: str,
    params: dict[str, Any],
    preprocessing: list[dict[str, Any]] | None,
    metrics: set[str],
) -> None:
    store, snaps = snapshots
    extra = {"preprocessing": preprocessing} if preprocessing else {}
    run = training_run(estimator, params, name=f"{name}-run", model=name, **extra)
    out = run_cli(train_args(run, snaps[name]), store=store, tmp=tmp_path)
    assert out.code == 0, out
    result = out.result
    task = snaps[name]["task"]
    assert result["ok"] is True and result["task"] == task
    assert set(result["metrics"]) == metrics
    assert result["datasetSha256"] == snaps[name]["sha256"]
    assert result["artifact"]["uri"] == f"pvc://models/ml/{name}/runs/{name}-run/model.skops"
    assert result["artifact"]["format"] == "skops"
    assert result["metadataUri"] == f"pvc://models/ml/{name}/runs/{name}-run/metadata.json"
    assert result["bestParams"] is None
    for key, value in params.items():
        assert result["params"][key] == value
    if "random_state" in result["params"]:
        assert result["params"]["random_state"] == 42  # the split seed
    assert json.loads(out.log_text or "") == result
    if task == "classification":
        assert result["metrics"]["accuracy"] > 0.85
    else:
        assert 0.3 < result["metrics"]["r2"] < 0.7 and result["metrics"]["rmse"] < 65
    # the artifact: sha256 as reported, safe to load, metadata complete
    artifact = (store / f"models/ml/{name}/runs/{name}-run/model.skops").read_bytes()
    assert store_mod.sha256_bytes(artifact) == result["artifact"]["sha256"]
    model = safeload.load_model(artifact, expected_sha256=result["artifact"]["sha256"])
    metadata = json.loads((store / f"models/ml/{name}/runs/{name}-run/metadata.json").read_text())
    assert metadata["sha256"] == result["artifact"]["sha256"] and metadata["file"] == "model.skops"
    assert metadata["task"] == task and metadata["target"] == "target"
    assert metadata["dataset"] == {"uri": snaps[name]["uri"], "sha256": snaps[name]["sha256"]}
    assert metadata["profile"] == {"uri": snaps[name]["profileUri"], "sha256": snaps[name]["profileSha256"]}
    assert metadata["metrics"] == result["metrics"]
    assert {"python", "scikit-learn", "skops", "numpy", "scipy", "pandas"} <= set(metadata["libraries"])
    snap = snap_mod.from_parquet((store / snaps[name]["uri"][len("pvc://") :]).read_bytes())
    assert [f["name"] for f in metadata["features"]] == snap.feature_names
    assert all(f["dtype"] == "float64" and f["kind"] == "numeric" for f in metadata["features"])
    if task == "classification":
        assert metadata["classes"] == sorted(set(snap.y().tolist()))
    assert len(model.predict(snap.X().head(5))) == 5
    assert_store_clean(store)


@pytest.mark.parametrize("path", ["os.system", "subprocess.Popen", "builtins.eval", "sklearnx.Foo"])
def test_cli_refuses_estimators_outside_the_allowlist(
    tmp_path: Path, snapshots: tuple[Path, dict[str, dict[str, Any]]], path: str
) -> None:
    store, snaps = snapshots
    before = store_files(store)
    out = run_inproc(train_args(training_run(path, name="evil"), snaps["iris"]), store=store)
    assert out.code == 1 and out.result["reason"] == "UnknownEstimator", out
    assert f"estimator class {path!r} is not allowed" in out.result["message"]
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {out.result['message']}"
    ]
    assert store_files(store) == before


def test_refused_estimator_module_is_never_imported(
    tmp_path: Path, snapshots: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    """A module that leaves a marker when imported, on the subprocess's path: refused, marker absent."""
    store, snaps = snapshots
    marker = tmp_path / "imported.marker"
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "evilmod.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\nclass Estimator: pass\n"
    )
    before = store_files(store)
    out = run_cli(
        train_args(training_run("evilmod.Estimator", name="evil"), snaps["iris"]),
        store=store,
        tmp=tmp_path,
        env={"PYTHONPATH": str(pkg)},
    )
    assert out.code == 1 and out.result["reason"] == "UnknownEstimator", out
    assert not marker.exists()
    assert store_files(store) == before
    # an administrator can extend the allowlist: then it is imported (and refused as a non-estimator)
    out = run_cli(
        train_args(training_run("evilmod.Estimator", name="evil"), snaps["iris"]),
        store=store,
        tmp=tmp_path,
        env={"PYTHONPATH": str(pkg), "MODELCYCLE_ESTIMATOR_PREFIXES": "evilmod"},
    )
    assert out.code == 1 and out.result["reason"] == "UnknownEstimator"
    assert "is not a scikit-learn estimator class" in out.result["message"]
    assert marker.exists()
    assert store_files(store) == before


def test_allowlist_check_runs_before_any_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        train.importlib,
        "import_module",
        lambda name: pytest.fail(f"imported {name}"),
    )
    for path in ("os.system", "subprocess.Popen", "sklearn._private.X", "sklearn.utils._testing.Thing"):
        with pytest.raises(train.UnknownEstimator):
            train.resolve_estimator(path)


def test_non_estimators_and_task_mismatch_are_refused(
    snapshots: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    store, snaps = snapshots
    cases = [
        ("sklearn.datasets.load_iris", None, "UnknownEstimator", "is not a scikit-learn estimator class"),
        ("sklearn.linear_model.NoSuchModel", None, "UnknownEstimator", "has no 'NoSuchModel'"),
        ("sklearn.nosuchmodule.Model", None, "UnknownEstimator", "no module 'sklearn.nosuchmodule'"),
        ("sklearn.linear_model.Ridge", None, "TaskMismatch", "is not a classifier"),
        ("sklearn.linear_model.LogisticRegression", {"bogus": 1}, "InvalidParams", "bogus"),
        ("sklearn.linear_model.LogisticRegression", {"C": -1}, "InvalidParams", "'C' parameter"),
    ]
    before = store_files(store)
    for path, params, reason, text in cases:
        out = run_inproc(train_args(training_run(path, params, name="bad"), snaps["iris"]), store=store)
        assert out.code == 1 and out.result["reason"] == reason, (path, out)
        assert text in out.result["message"], out.result["message"]
    assert store_files(store) == before


def test_dataset_snapshot_is_verified_on_load(
    tmp_path: Path, snapshots: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    store, snaps = snapshots
    good = snaps["iris"]
    run = training_run("sklearn.tree.DecisionTreeClassifier", name="verify")
    before = store_files(store)
    wrong = dict(good, sha256=snaps["wine"]["sha256"])
    out = run_inproc(train_args(run, wrong), store=store)
    assert (
        out.code == 1 and out.result["reason"] == "DatasetCorrupted" and "expected" in out.result["message"]
    )
    # a snapshot file that was tampered with (a value changed, parquet still valid)
    snap = snap_mod.from_parquet((store / good["uri"][len("pvc://") :]).read_bytes())
    frame = snap.frame.copy()
    frame.loc[0, "sepal length (cm)"] = 99.0
    tampered = snap_mod.Snapshot(frame, snap.columns, snap.target, snap.task, snap.sha256)
    path = tmp_path / "tampered.parquet"
    path.write_bytes(snap_mod.to_parquet(tampered))
    out = run_inproc(train_args(run, dict(good, uri=path.as_uri())), store=store)
    assert out.code == 1 and out.result["reason"] == "DatasetCorrupted"
    out = run_inproc(train_args(run, dict(good, uri="pvc://datasets/sha256/none/data.parquet")), store=store)
    assert out.code == 1 and out.result["reason"] == "DatasetUnavailable"
    out = run_inproc(train_args(run, dict(good, sha256="XYZ")), store=store)
    assert out.code == 2 and out.result["reason"] == "InvalidSpec"
    assert store_files(store) == before


def test_preprocessing_with_column_subsets_and_categoricals(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50_000, 15_000, n),
            "city": rng.choice(["paris", "oslo", "lima"], n),
            "grade": rng.integers(1, 4, n),
        }
    )
    frame.loc[frame.index[::25], "income"] = np.nan
    frame["target"] = ((frame["age"] > 40) ^ (frame["city"] == "oslo")).astype(int)
    (tmp_path / "c").mkdir()
    frame.to_csv(tmp_path / "c" / "d.csv", index=False)
    schema = [{"name": "income", "type": "number", "nullable": True}, {"name": "grade", "type": "category"}]
    obj = dataset(
        {"pvc": {"claimName": "c", "path": "d.csv"}},
        schema=schema,
        features=["age", "income", "city", "grade"],
    )
    store = tmp_path / "store"
    out = run_inproc(["data", "--spec-json", json.dumps(obj), "--pvc-root", str(tmp_path)], store=store)
    assert out.code == 0, out
    snap_result = out.result
    steps = [
        {"type": "simpleImputer", "columns": ["income"], "params": {"strategy": "median"}},
        {"type": "standardScaler", "columns": ["age", "income"]},
        {"type": "oneHotEncoder"},  # default columns: the categorical features (city, grade)
    ]
    run = training_run(
        "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 50}, name="pre", preprocessing=steps
    )
    out = run_inproc(train_args(run, snap_result), store=store)
    assert out.code == 0, out
    assert out.result["metrics"]["accuracy"] > 0.9
    artifact = (store / "models/ml/m/runs/pre/model.skops").read_bytes()
    model = safeload.load_model(artifact, expected_sha256=out.result["artifact"]["sha256"])
    assert [name for name, _ in model.steps] == [
        "step0_simpleImputer",
        "step1_standardScaler",
        "step2_oneHotEncoder",
        "estimator",
    ]
    encoder = model.named_steps["step2_oneHotEncoder"].transformers_[0]
    assert encoder[2] == ["city", "grade"]
    metadata = json.loads((store / "models/ml/m/runs/pre/metadata.json").read_text())
    assert [(f["name"], f["dtype"], f["kind"]) for f in metadata["features"]] == [
        ("age", "float64", "numeric"),
        ("income", "float64", "numeric"),
        ("city", "string", "categorical"),
        ("grade", "int64", "categorical"),
    ]
    # text features without an encoder: a clear refusal before training
    no_encoder = training_run("sklearn.ensemble.HistGradientBoostingClassifier", name="pre2")
    out = run_inproc(train_args(no_encoder, snap_result), store=store)
    assert (
        out.code == 1 and out.result["reason"] == "InvalidParams" and "oneHotEncoder" in out.result["message"]
    )
    unknown = training_run(
        "sklearn.linear_model.LogisticRegression",
        name="pre3",
        preprocessing=[{"type": "standardScaler", "columns": ["x"]}],
    )
    out = run_inproc(train_args(unknown, snap_result), store=store)
    assert (
        out.code == 1
        and out.result["reason"] == "InvalidParams"
        and "unknown columns ['x']" in out.result["message"]
    )
    assert_store_clean(store)


def test_split_is_deterministic_and_stratified(snapshots: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    from modelcycle.api.common import Split
    from modelcycle.workloads import metrics

    store, snaps = snapshots
    snap = train.load_snapshot(snaps["iris"]["uri"], snaps["iris"]["sha256"], store_mod.LocalStore(store))
    a = metrics.holdout_split(snap.X(), snap.y(), "classification", Split(test_fraction=0.2, seed=3))
    b = metrics.holdout_split(snap.X(), snap.y(), "classification", Split(test_fraction=0.2, seed=3))
    assert a[1].index.tolist() == b[1].index.tolist()
    assert len(a[1]) == 30 and a[3].value_counts().tolist() == [10, 10, 10]
    c = metrics.holdout_split(snap.X(), snap.y(), "classification", Split(test_fraction=0.2, seed=4))
    assert a[1].index.tolist() != c[1].index.tolist()


def test_result_json_is_compact_even_with_huge_params(
    snapshots: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    store, snaps = snapshots
    run = training_run(
        "sklearn.dummy.DummyClassifier",
        {"strategy": "prior", "constant": list(range(3000))},
        name="huge",
        split={"seed": 1},
    )
    out = run_inproc(train_args(run, snaps["iris"]), store=store)
    assert out.code == 0, out
    line = out.stdout.strip().splitlines()[-1]
    assert len(line.encode()) <= 4096 and out.result["truncated"] is True
    assert out.result["artifact"]["sha256"] and out.result["metrics"]


def test_help_documents_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from modelcycle import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--spec", "--spec-json", "--dataset-uri", "--dataset-sha256", "--profile-uri", "--store",
                 "--namespace", "--name", "--termination-log"):  # fmt: skip
        assert flag in text
