"""`modelcycle data`: sources, validation (every violation), canonical snapshot, profile, results."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris, load_wine
from workload_helpers import (
    assert_store_clean,
    builtin,
    dataset,
    run_cli,
    run_inproc,
    store_files,
)

from modelcycle.api import dataset as api
from modelcycle.workloads import data, snapshot, sources
from modelcycle.workloads import profile as profile_mod
from modelcycle.workloads import store as store_mod

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def iris_schema() -> list[dict[str, Any]]:
    return [{"name": c, "type": "number", "min": 0, "max": 10} for c in IRIS_COLUMNS] + [
        {"name": "target", "type": "integer", "allowedValues": ["0", "1", "2"]}
    ]


def iris_frame() -> pd.DataFrame:
    return pd.DataFrame(load_iris(as_frame=True).frame)


def spec_of(obj: dict[str, Any]) -> api.DatasetSpec:
    return api.DatasetSpec.model_validate(obj["spec"])


# --- end to end through `python -m modelcycle` -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "loader", "task"),
    [
        ("iris", load_iris, "classification"),
        ("wine", load_wine, "classification"),
        ("diabetes", load_diabetes, "regression"),
    ],
)
def test_cli_snapshots_builtin_datasets(tmp_path: Path, name: str, loader: Any, task: str) -> None:
    store = tmp_path / "store"
    out = run_cli(["data", "--spec-json", json.dumps(builtin(name))], store=store, tmp=tmp_path)
    assert out.code == 0, out
    result = out.result
    frame = loader(as_frame=True).frame
    assert result["ok"] is True
    assert result["rows"] == len(frame) and result["columns"] == frame.shape[1]
    assert result["task"] == task
    assert result["violations"] == [] and result["violationCount"] == 0
    assert result["uri"] == f"pvc://datasets/sha256/{result['sha256']}/data.parquet"
    assert result["profileUri"] == f"pvc://datasets/sha256/{result['sha256']}/profile.json"
    # the termination message is exactly stdout's last line, and fits in 4 KiB
    assert out.log_text is not None and json.loads(out.log_text) == result and len(out.log_text) <= 4096
    # files in the content-addressed layout, digests that verify
    raw = (store / "datasets" / "sha256" / result["sha256"] / "data.parquet").read_bytes()
    snap = snapshot.from_parquet(raw, result["sha256"])
    assert snap.task == task and len(snap.frame) == len(frame)
    profile_bytes = (store / "datasets" / "sha256" / result["sha256"] / "profile.json").read_bytes()
    assert store_mod.sha256_bytes(profile_bytes) == result["profileSha256"]
    profile = profile_mod.loads(profile_bytes)
    assert profile["rows"] == len(frame) and profile["task"] == task
    assert [f["name"] for f in profile["features"]] == [c for c in frame.columns if c != "target"]
    assert_store_clean(store)


def test_cli_refuses_csv_with_a_wrong_column(tmp_path: Path) -> None:
    frame = iris_frame().rename(columns={"petal width (cm)": "petal wdth"})
    (tmp_path / "claim").mkdir()
    frame.to_csv(tmp_path / "claim" / "iris.csv", index=False)
    obj = dataset({"pvc": {"claimName": "claim", "path": "iris.csv"}}, schema=iris_schema())
    store = tmp_path / "store"
    out = run_cli(
        ["data", "--spec-json", json.dumps(obj), "--pvc-root", str(tmp_path)], store=store, tmp=tmp_path
    )
    assert out.code == 1, out
    assert out.result["ok"] is False and out.result["reason"] == "ValidationFailed"
    assert "unexpected column 'petal wdth' (not in spec.schema)" in out.result["violations"]
    assert "column 'petal width (cm)' declared in spec.schema is missing" in out.result["violations"]
    assert out.result["violationCount"] == 2
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "2 violations" in error_lines[0]
    assert store_files(store) == []


# --- validation: every violation -------------------------------------------------------------------


def test_nulls_over_the_limit_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    frame = iris_frame()
    frame.loc[frame.index[:15], "sepal width (cm)"] = np.nan  # 10%
    (tmp_path / "cfg" / "iris").mkdir(parents=True)
    frame.to_csv(tmp_path / "cfg" / "iris" / "data.csv", index=False)
    schema = iris_schema()
    schema[1]["nullable"] = True
    obj = dataset(
        {"configMap": {"name": "iris", "key": "data.csv"}},
        schema=schema,
        validation={"maxNullFraction": 0.05},
    )
    store = tmp_path / "store"
    out = run_inproc(
        ["data", "--spec-json", json.dumps(obj), "--config-map-dir", str(tmp_path / "cfg")], store=store
    )
    assert out.code == 1 and out.result["reason"] == "ValidationFailed", out
    assert out.result["violations"] == [
        "column 'sepal width (cm)' has 10.0% nulls (15 of 150); validation.maxNullFraction is 0.05"
    ]
    assert store_files(store) == []
    # under the limit it passes, with the nulls profiled
    obj["spec"]["validation"]["maxNullFraction"] = 0.2
    out = run_inproc(
        ["data", "--spec-json", json.dumps(obj), "--config-map-dir", str(tmp_path / "cfg")], store=store
    )
    assert out.code == 0, out
    profile = json.loads((store / "datasets/sha256" / out.result["sha256"] / "profile.json").read_text())
    width = next(f for f in profile["features"] if f["name"] == "sepal width (cm)")
    assert (width["count"], width["nulls"]) == (135, 15)
    assert sum(width["referenceCounts"]) == 135


def test_nullable_column_without_a_limit_accepts_nulls_but_a_non_nullable_one_does_not() -> None:
    frame = iris_frame()
    frame.loc[frame.index[:3], "sepal width (cm)"] = np.nan
    frame.loc[frame.index[:2], "petal length (cm)"] = np.nan
    schema = iris_schema()
    schema[1]["nullable"] = True
    _, violations = data.validate_frame(frame, spec_of(dataset({"builtin": {"name": "iris"}}, schema=schema)))
    assert violations == ["column 'petal length (cm)' has 2 nulls but is not nullable"]
    # without a schema, the default maxNullFraction (0) applies to every column
    _, violations = data.validate_frame(frame, spec_of(builtin("iris")))
    assert len(violations) == 2 and all("validation.maxNullFraction is 0" in v for v in violations)


def test_every_violation_is_listed_and_the_result_is_capped_at_20() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=30) for i in range(30)})
    frame["color"] = ["red", "green", "purple"] * 10
    frame["count"] = [1.5, *range(29)]
    frame["target"] = ["a", "b", None] * 10
    schema = [{"name": f"x{i}", "type": "number", "min": 5} for i in range(30)]
    schema += [
        {"name": "color", "type": "category", "allowedValues": ["red", "green"]},
        {"name": "count", "type": "integer"},
        {"name": "size", "type": "number"},
    ]
    spec = spec_of(dataset({"builtin": {"name": "iris"}}, schema=schema, validation={"minRows": 100}))
    features, violations = data.validate_frame(frame, spec)
    assert violations[0] == "the data has 30 rows; validation.minRows is 100"
    assert "column 'size' declared in spec.schema is missing" in violations
    assert "column 'x0': 30 values below min 5 (smallest " + f"{frame['x0'].min():g})" in violations
    assert "column 'color': 10 values not in allowedValues (e.g. 'purple')" in violations
    assert "column 'count': expected integer but found 1 fractional value (e.g. '1.5')" in violations
    assert "target column 'target' has 10 nulls: every row needs a label" in violations
    assert len(violations) == 1 + 1 + 30 + 1 + 1 + 1
    assert features == [*[f"x{i}" for i in range(30)], "color", "count"]

    with pytest.raises(data.WorkloadError) as info:
        data.snapshot_dataset(spec, store_mod.LocalStore("/nonexistent-never-written"), pvc_root="/x")
    # the builtin iris source has other columns: still a full, capped report
    assert info.value.reason == "ValidationFailed"
    assert info.value.details["violationCount"] >= 20
    assert len(info.value.details["violations"]) == min(20, info.value.details["violationCount"])


def test_type_checks_number_boolean_and_infinity() -> None:
    frame = pd.DataFrame(
        {
            "a": ["1.5", "abc", "2", None],
            "flag": ["yes", "no", "maybe", "true"],
            "b": [1.0, np.inf, 2.0, 3.0],
            "target": [0, 1, 0, 1],
        }
    )
    schema = [
        {"name": "a", "type": "number", "nullable": True},
        {"name": "flag", "type": "boolean"},
        {"name": "b", "type": "number"},
    ]
    _, violations = data.validate_frame(frame, spec_of(dataset({"builtin": {"name": "iris"}}, schema=schema)))
    assert violations == [
        "column 'a': expected number but found 1 non-numeric value (e.g. 'abc')",
        "column 'flag': expected boolean (true/false/yes/no/1/0) but found 1 other value (e.g. 'maybe')",
        "column 'b': 1 infinite value",
    ]


def test_missing_target_and_features(tmp_path: Path) -> None:
    frame = iris_frame()
    spec = spec_of(
        dataset({"builtin": {"name": "iris"}}, target="label", features=["sepal length (cm)", "nope"])
    )
    _, violations = data.validate_frame(frame, spec)
    assert violations == ["target column 'label' is missing", "feature column 'nope' is missing"]


# --- snapshot: canonical types, categorical kinds, task -------------------------------------------


def test_canonical_snapshot_types_and_kinds(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "n": [1, 2, 3, 4],
            "f": [0.5, None, 1.5, 2.5],
            "grade": [1, 2, 1, 3],
            "city": ["a", "b", None, "a"],
            "ok": [True, False, True, True],
            "target": ["x", "y", "x", "y"],
        }
    )
    schema = [
        {"name": "grade", "type": "category"},
        {"name": "f", "type": "number", "nullable": True},
        {"name": "city", "type": "string", "nullable": True},
    ]
    spec = spec_of(
        dataset({"builtin": {"name": "iris"}}, features=["n", "f", "grade", "city", "ok"], schema=schema)
    )
    features, violations = data.validate_frame(frame, spec)
    assert violations == []
    snap = data.make_snapshot(frame, spec, features)
    assert [(c.name, c.type, c.kind) for c in snap.columns] == [
        ("n", "int64", "numeric"),
        ("f", "float64", "numeric"),
        ("grade", "int64", "categorical"),
        ("city", "string", "categorical"),
        ("ok", "bool", "categorical"),
        ("target", "string", "target"),
    ]
    assert snap.task == "classification" and snap.classes == ["x", "y"]
    again = snapshot.from_parquet(snapshot.to_parquet(snap), snap.sha256)
    assert again.sha256 == snap.sha256
    assert again.frame["city"].tolist() == ["a", "b", None, "a"]
    profile = data.make_profile(snap)
    grade = next(f for f in profile["features"] if f["name"] == "grade")
    assert grade["kind"] == "categorical" and grade["categories"] == ["1", "2", "3"]
    assert grade["categoryCounts"] == [2, 1, 1]
    ok = next(f for f in profile["features"] if f["name"] == "ok")
    assert ok["categories"] == ["false", "true"] and ok["categoryCounts"] == [1, 3]


def test_snapshot_digest_depends_on_content_not_on_source_format(tmp_path: Path) -> None:
    frame = iris_frame()
    (tmp_path / "c").mkdir()
    frame.to_csv(tmp_path / "c" / "iris.csv", index=False)
    frame.to_parquet(tmp_path / "c" / "iris.parquet", index=False)
    store = tmp_path / "store"
    shas = set()
    for obj in (
        builtin("iris"),
        dataset({"pvc": {"claimName": "c", "path": "iris.csv"}}),
        dataset({"pvc": {"claimName": "c", "path": "iris.parquet"}}, format="parquet"),
    ):
        out = run_inproc(["data", "--spec-json", json.dumps(obj), "--pvc-root", str(tmp_path)], store=store)
        assert out.code == 0, out
        shas.add(out.result["sha256"])
    assert len(shas) == 1
    # one changed value changes the digest
    frame.loc[0, "sepal length (cm)"] += 0.1
    frame.to_csv(tmp_path / "c" / "iris.csv", index=False)
    out = run_inproc(
        ["data", "--spec-json", json.dumps(dataset({"pvc": {"claimName": "c", "path": "iris.csv"}})),
         "--pvc-root", str(tmp_path)],
        store=store,
    )  # fmt: skip
    assert out.code == 0 and out.result["sha256"] not in shas
    assert_store_clean(store)


def test_regression_target_and_integer_class_inference() -> None:
    ints = pd.Series(np.arange(200) % 3)
    assert snapshot.infer_task(ints, "int64", None) == "classification"
    assert snapshot.infer_task(pd.Series(np.arange(200)), "int64", None) == "regression"
    assert snapshot.infer_task(pd.Series([0.0, 1.0]), "float64", None) == "regression"
    assert snapshot.infer_task(pd.Series([0.0, 1.0]), "float64", "category") == "classification"


# --- sources ----------------------------------------------------------------------------------------


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_url_source_with_timeout_and_size_limit(
    tmp_path: Path, http_dir: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = http_dir
    iris_frame().to_csv(root / "iris.csv", index=False)
    store = tmp_path / "store"
    out = run_inproc(["data", "--spec-json", json.dumps(dataset({"url": f"{base}/iris.csv"}))], store=store)
    assert out.code == 0, out
    assert out.result["rows"] == 150 and out.result["source"] == f"{base}/iris.csv"
    out = run_inproc(
        ["data", "--spec-json", json.dumps(dataset({"url": f"{base}/missing.csv"}))], store=store
    )
    assert (
        out.code == 1 and out.result["reason"] == "SourceUnavailable" and "HTTP 404" in out.result["message"]
    )
    monkeypatch.setenv(sources.ENV_MAX_BYTES, "1000")
    out = run_inproc(["data", "--spec-json", json.dumps(dataset({"url": f"{base}/iris.csv"}))], store=store)
    assert out.code == 1 and out.result["reason"] == "SourceTooLarge", out
    # nothing listens on this port: a transient failure (exit 3)
    out = run_inproc(
        ["data", "--spec-json", json.dumps(dataset({"url": "http://127.0.0.1:9/x.csv"}))], store=store
    )
    assert out.code == 3 and out.result["reason"] == "SourceUnavailable"
    assert_store_clean(store)


ESCAPES = [
    ({"pvc": {"claimName": "claim", "path": "../secret.csv"}}, "spec.source.pvc.path"),
    ({"pvc": {"claimName": "..", "path": "secret.csv"}}, "spec.source.pvc.claimName"),
    ({"pvc": {"claimName": "Claim_1", "path": "secret.csv"}}, "spec.source.pvc.claimName"),
    ({"configMap": {"name": "..", "key": "secret.csv"}}, "spec.source.configMap.name"),
    ({"configMap": {"name": "claim", "key": ".."}}, "spec.source.configMap.key"),
]


@pytest.mark.parametrize(("source", "field"), ESCAPES, ids=[f for _, f in ESCAPES])
def test_source_that_would_leave_its_volume_is_refused_naming_the_field(
    tmp_path: Path, source: dict[str, Any], field: str
) -> None:
    # The real escape: with claimName ".." the claim directory was --pvc-root's parent.
    (tmp_path / "root" / "claim").mkdir(parents=True)
    (tmp_path / "secret.csv").write_text("a,target\n1,2\n")
    (tmp_path / "root" / "secret.csv").write_text("a,target\n1,2\n")
    obj = dataset(source)
    root = str(tmp_path / "root" / "claim")
    out = run_inproc(
        ["data", "--spec-json", json.dumps(obj), "--pvc-root", root, "--config-map-dir", root],
        store=tmp_path / "s",
    )
    assert out.code == 2 and out.result["reason"] == "InvalidSpec", out
    assert field in out.result["message"]


@pytest.mark.parametrize(("source", "field"), ESCAPES, ids=[f for _, f in ESCAPES])
def test_source_loader_refuses_the_escape_even_without_the_schema(
    tmp_path: Path, source: dict[str, Any], field: str
) -> None:
    # Defense in depth: a spec built without validation (model_construct) is checked again.
    (tmp_path / "root" / "claim").mkdir(parents=True)
    (tmp_path / "secret.csv").write_text("a,target\n1,2\n")
    kind, fields = next(iter(source.items()))
    model = api.PvcSource if kind == "pvc" else api.ConfigMapSource
    built = model.model_construct(**{("claim_name" if k == "claimName" else k): v for k, v in fields.items()})
    spec = api.DatasetSpec.model_construct(
        source=api.DatasetSource.model_construct(**{"pvc" if kind == "pvc" else "config_map": built}),
        format="csv",
    )
    root = tmp_path / "root" / "claim"
    with pytest.raises(sources.InvalidSpec) as excinfo:
        sources.load_source(spec, pvc_root=root, config_map_dir=root)
    assert excinfo.value.exit_code == 2 and field in excinfo.value.message


def test_symlink_out_of_the_volume_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root" / "claim").mkdir(parents=True)
    (tmp_path / "secret.csv").write_text("a,target\n1,2\n")
    (tmp_path / "root" / "claim" / "link.csv").symlink_to(tmp_path / "secret.csv")
    obj = dataset({"pvc": {"claimName": "claim", "path": "link.csv"}})
    out = run_inproc(
        ["data", "--spec-json", json.dumps(obj), "--pvc-root", str(tmp_path / "root")], store=tmp_path / "s"
    )
    assert out.code == 2 and "spec.source.pvc.path" in out.result["message"]
    assert "leaves its root" in out.result["message"]


def test_unreadable_source_and_invalid_spec(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.parquet").write_bytes(b"not parquet at all")
    obj = dataset({"pvc": {"claimName": "c", "path": "x.parquet"}}, format="parquet")
    out = run_inproc(
        ["data", "--spec-json", json.dumps(obj), "--pvc-root", str(tmp_path)], store=tmp_path / "s"
    )
    assert out.code == 1 and out.result["reason"] == "SourceUnreadable", out
    bad = builtin("iris")
    bad["spec"]["source"]["builtin"]["name"] = "mnist"
    out = run_inproc(["data", "--spec-json", json.dumps(bad)], store=tmp_path / "s")
    assert out.code == 2 and out.result["reason"] == "InvalidSpec"
    assert out.result["message"].startswith("invalid Dataset spec: spec.source.builtin.name:")
    assert out.stderr.count("error:") == 1
    out = run_inproc(
        ["data", "--spec-json", json.dumps({**builtin("iris"), "kind": "TrainingRun"})], store=tmp_path
    )
    assert out.code == 2 and "expected a Dataset object" in out.result["message"]


def test_spec_from_yaml_file_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    spec_file = tmp_path / "ds.yaml"
    spec_file.write_text(yaml.safe_dump(builtin("wine")))
    out = run_inproc(["data", "--spec", str(spec_file)], store=tmp_path / "s")
    assert out.code == 0 and out.result["rows"] == 178
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(builtin("iris"))))
    out = run_inproc(["data", "--spec", "-"], store=tmp_path / "s")
    assert out.code == 0 and out.result["rows"] == 150
