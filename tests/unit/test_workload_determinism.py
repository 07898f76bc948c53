"""Same spec + same data -> same snapshot digest, same metrics, same predictions, run after run."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from workload_helpers import builtin, run_cli, train_args, training_run

from modelcycle.workloads import safeload, snapshot


def test_cli_runs_twice_give_identical_results(tmp_path: Path) -> None:
    """Two independent processes, two stores: identical digests, metrics, parameters and predictions."""
    obj = builtin("breast_cancer")
    run = training_run(
        "sklearn.ensemble.RandomForestClassifier",
        {"n_estimators": 10, "max_features": 0.5},
        model="cancer",
        preprocessing=[{"type": "standardScaler"}],
        search={
            "type": "random",
            "params": {"max_depth": [3, 5, None], "min_samples_leaf": [1, 3]},
            "folds": 3,
            "maxTrials": 2,
        },
        split={"testFraction": 0.25, "seed": 11},
    )

    def attempt(name: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        store = tmp_path / name
        data = run_cli(["data", "--spec-json", json.dumps(obj)], store=store, tmp=tmp_path)
        assert data.code == 0, data
        trained = run_cli(train_args(run, data.result), store=store, tmp=tmp_path)
        assert trained.code == 0, trained
        return store, data.result, trained.result

    with ThreadPoolExecutor(max_workers=2) as pool:  # two independent processes at a time
        outcomes = list(pool.map(attempt, ["a", "b"]))
    (store_a, data_a, train_a), (store_b, data_b, train_b) = outcomes
    assert data_a == data_b  # sha256, profile sha256, URIs, counts
    assert (store_a / data_a["uri"][6:]).read_bytes() == (store_b / data_b["uri"][6:]).read_bytes()
    for key in ("metrics", "params", "bestParams", "datasetSha256", "split"):
        assert train_a[key] == train_b[key], key
    snap = snapshot.from_parquet((store_a / data_a["uri"][6:]).read_bytes(), data_a["sha256"])
    models = [
        safeload.load_model(
            (store / result["artifact"]["uri"][6:]).read_bytes(), expected_sha256=result["artifact"]["sha256"]
        )
        for store, _, result in outcomes
    ]
    np.testing.assert_array_equal(models[0].predict(snap.X()), models[1].predict(snap.X()))
    np.testing.assert_array_equal(models[0].predict_proba(snap.X()), models[1].predict_proba(snap.X()))
    meta_a = json.loads((store_a / train_a["metadataUri"][6:]).read_text())
    meta_b = json.loads((store_b / train_b["metadataUri"][6:]).read_text())
    meta_a.pop("sha256"), meta_b.pop("sha256")  # skops archives embed object ids: bytes differ
    assert meta_a == meta_b


def test_snapshot_digest_is_stable_and_documented() -> None:
    """The canonical encoding is fixed: a tiny table has a known digest on every machine."""
    import pandas as pd

    frame = pd.DataFrame(
        {"x": [1.5, float("nan")], "n": [1, 2], "b": [True, False], "s": ["é", None], "target": [0, 1]}
    )
    columns = [
        snapshot.Column("x", "float64", "numeric"),
        snapshot.Column("n", "int64", "numeric"),
        snapshot.Column("b", "bool", "categorical"),
        snapshot.Column("s", "string", "categorical"),
        snapshot.Column("target", "int64", "target"),
    ]
    snap = snapshot.build(frame, columns, "target", "classification")
    import hashlib
    import struct

    header = (
        '{"columns":[{"kind":"numeric","name":"x","type":"float64"},{"kind":"numeric","name":"n","type":"int64"},'
        '{"kind":"categorical","name":"b","type":"bool"},{"kind":"categorical","name":"s","type":"string"},'
        '{"kind":"target","name":"target","type":"int64"}],"rows":2,"target":"target","task":"classification",'
        '"version":1}'
    )
    expected = hashlib.sha256(
        b"modelcycle-snapshot/v1\n"
        + header.encode()
        + b"\n"
        + struct.pack("<d", 1.5)
        + bytes.fromhex("000000000000f87f")
        + struct.pack("<qq", 1, 2)
        + b"\x01\x00"
        + struct.pack("<I", 2)
        + "é".encode()
        + b"\xff\xff\xff\xff"
        + struct.pack("<qq", 0, 1)
    ).hexdigest()
    assert snap.sha256 == expected
    assert snapshot.from_parquet(snapshot.to_parquet(snap), expected).sha256 == expected
