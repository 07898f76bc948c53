"""The profile format (a contract with the model server and the drift code)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from modelcycle.workloads import profile


def test_numeric_feature_format_and_bins() -> None:
    values = pd.Series(np.arange(1, 101, dtype=float))
    feature = profile.numeric_feature("x", values, "float64")
    assert list(feature) == [
        "name", "kind", "dtype", "count", "nulls", "mean", "std", "min", "max",
        "quantiles", "binEdges", "referenceCounts",
    ]  # fmt: skip
    assert feature["kind"] == "numeric" and feature["count"] == 100 and feature["nulls"] == 0
    assert feature["mean"] == 50.5 and feature["min"] == 1.0 and feature["max"] == 100.0
    assert feature["std"] == float(np.std(np.arange(1, 101), ddof=1))
    assert list(feature["quantiles"]) == ["0.05", "0.25", "0.5", "0.75", "0.95"]
    assert feature["quantiles"]["0.5"] == 50.5
    # 20 bins: 19 interior edges at the 5%, 10%, ..., 95% quantiles
    assert len(feature["binEdges"]) == 19 and len(feature["referenceCounts"]) == 20
    assert feature["binEdges"] == [5.0 * i for i in range(1, 20)]
    assert feature["referenceCounts"] == [5] * 20
    assert sum(feature["referenceCounts"]) == feature["count"]


def test_bins_are_right_closed_and_edges_deduplicated() -> None:
    values = pd.Series([0.0] * 50 + [1.0] * 30 + [2.0] * 20)
    feature = profile.numeric_feature("x", values, "float64")
    assert feature["binEdges"] == [0.0, 1.0, 2.0]  # 19 quantiles collapse to 3 distinct edges
    # (-inf, 0], (0, 1], (1, 2], (2, +inf)
    assert feature["referenceCounts"] == [50, 30, 20, 0]
    assert profile.bin_counts([0.0, 1.0, 2.0], [-5, 0, 0.5, 1, 2, 2.5, float("nan")]) == [2, 2, 1, 1]


def test_nulls_and_empty_columns() -> None:
    feature = profile.numeric_feature("x", pd.Series([1.0, None, 3.0]), "float64")
    assert (feature["count"], feature["nulls"]) == (2, 1)
    empty = profile.numeric_feature("x", pd.Series([None, None], dtype=float), "float64")
    assert empty["mean"] is None and empty["binEdges"] == [] and empty["referenceCounts"] == [0]
    single = profile.numeric_feature("x", pd.Series([4.0]), "float64")
    assert single["std"] == 0.0 and single["binEdges"] == [4.0] and single["referenceCounts"] == [1, 0]


def test_categorical_feature_format() -> None:
    feature = profile.categorical_feature("c", pd.Series(["b", "a", "b", None, "c", "b"]), "string")
    assert feature == {
        "name": "c",
        "kind": "categorical",
        "dtype": "string",
        "count": 5,
        "nulls": 1,
        "categories": ["a", "b", "c"],
        "categoryCounts": [1, 3, 1],
    }
    assert profile.category_label(True) == "true" and profile.category_label(np.bool_(False)) == "false"
    assert profile.category_label(3.0) == "3" and profile.category_label(np.int64(7)) == "7"
    assert profile.category_label(2.5) == "2.5" and profile.category_label("x") == "x"


def test_document_and_canonical_bytes() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["u", "v", "u", "u"], "target": [0, 1, 0, 1]})
    doc = profile.build_profile(
        frame, features=[("x", "numeric", "float64"), ("c", "categorical", "string")], target="target",
        task="classification", classes=[0, 1],
    )  # fmt: skip
    assert list(doc) == ["version", "rows", "target", "task", "classes", "features"]
    assert doc["version"] == 1 and doc["rows"] == 4 and doc["classes"] == [0, 1]
    raw = profile.dumps(doc)
    assert profile.loads(raw) == doc and raw == profile.dumps(json.loads(raw))
    regression = profile.build_profile(
        frame, features=[("x", "numeric", "float64")], target="target", task="regression"
    )
    assert "classes" not in regression
