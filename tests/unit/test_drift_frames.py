"""Profiles and counts from DataFrames (columnar) equal the value-by-value definition they replaced.

`legacy_*` below is the previous, value-by-value implementation, kept here as the oracle: the
columnar code must give the same profile documents and the same bin indices on the same data.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelcycle.workloads import drift, profile
from modelcycle.workloads.serve_stats import Column, LiveWindow

# --------------------------------------------------------------------------- the oracle


def legacy_numeric_feature(name: str, series: pd.Series, dtype: str, bins: int) -> dict[str, Any]:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    nulls = int(np.isnan(values).sum())
    values = values[~np.isnan(values)]
    feature: dict[str, Any] = {"name": name, "kind": "numeric", "dtype": dtype}
    feature.update(count=int(values.size), nulls=nulls)
    num = profile._num
    if values.size:
        quantiles = np.quantile(values, profile.QUANTILES)
        feature.update(
            mean=num(values.mean()),
            std=num(values.std(ddof=1)) if values.size > 1 else 0.0,
            min=num(values.min()),
            max=num(values.max()),
            quantiles={str(q): num(v) for q, v in zip(profile.QUANTILES, quantiles, strict=True)},
        )
    else:
        feature.update(mean=None, std=None, min=None, max=None)
        feature["quantiles"] = {str(q): None for q in profile.QUANTILES}
    edges: list[float] = []
    if values.size and bins >= 2:
        ordered = np.sort(values)
        n = ordered.size
        index = [max(0, (k * n + bins - 1) // bins - 1) for k in range(1, bins)]
        edges = [float(e) for e in np.unique(ordered[index])]
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    feature["binEdges"] = edges
    feature["referenceCounts"] = [int(c) for c in np.bincount(idx, minlength=len(edges) + 1)]
    return feature


def legacy_categorical_feature(name: str, series: pd.Series, dtype: str) -> dict[str, Any]:
    present = series[series.notna()]
    counts = present.map(profile.category_label).value_counts()
    top = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))[: profile.MAX_CATEGORIES]
    top.sort(key=lambda kv: str(kv[0]))
    return {
        "name": name,
        "kind": "categorical",
        "dtype": dtype,
        "count": int(present.size),
        "nulls": int(series.size - present.size),
        "categories": [str(k) for k, _ in top],
        "categoryCounts": [int(v) for _, v in top],
    }


def legacy_bin_categorical(values: Any, categories: list[Any]) -> list[int]:
    def is_null(v: Any) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    def as_number(label: Any) -> float:
        if isinstance(label, int | float | np.integer | np.floating) and not isinstance(label, bool):
            return float(label)
        try:
            return float(str(label))
        except ValueError:
            return math.nan

    v = np.asarray(values)
    if v.dtype.kind in "US":
        v = v.astype(str).astype(object)
    k = len(categories)
    out = []
    for x in v.ravel().tolist():
        if is_null(x):
            out.append(k + 1)
        elif v.dtype.kind in "iuf":
            hits = [i for i, c in enumerate(categories) if as_number(c) == float(x)]
            out.append(hits[0] if hits else k)
        else:
            key = profile.category_label(x)
            hits = [i for i, c in enumerate(categories) if profile.category_label(c) == key]
            out.append(hits[0] if hits else k)
    return out


# --------------------------------------------------------------------------- profiles

RNG = np.random.default_rng(16)
WORDS = np.array(["red", "green", "blue", "ünïcode", "", "a b", "Z"], dtype=object)
MANY = pd.Series(RNG.integers(0, 1300, 5000).astype(str), dtype=object)  # > MAX_CATEGORIES, ties

CATEGORICAL_COLUMNS = {
    "strings": pd.Series(RNG.choice(WORDS, 500), dtype=object),
    "strings with None and NaN": pd.Series(["b", None, "a", float("nan"), "b", "c"], dtype=object),
    "pandas string dtype with NA": pd.Series(["x", pd.NA, "y", "x"], dtype="string"),
    "pandas str dtype (pandas 3's default for strings)": pd.Series(["x", None, "y", "x"], dtype="str"),
    "pandas categorical": pd.Series(pd.Categorical(["lo", "hi", None, "lo"], categories=["hi", "lo", "mid"])),
    "integers": pd.Series(RNG.integers(0, 5, 300)),
    "nullable integers": pd.Series([1, None, 3, 1], dtype="Int64"),
    "floats, integral and not, NaN, inf": pd.Series([1.0, 2.5, np.nan, 1.0, -0.0, 0.0, np.inf, 3.0]),
    "booleans": pd.Series(RNG.random(100) < 0.3),
    "nullable booleans": pd.Series([True, None, False, True], dtype="boolean"),
    "mixed: strings, numbers, booleans": pd.Series(
        ["1", 1, 1.0, True, None, 2.5, "x", False, 0], dtype=object
    ),
    "decimals": pd.Series([Decimal("1"), Decimal("1.0"), Decimal("2")], dtype=object),
    "empty": pd.Series([], dtype=object),
    "all null": pd.Series([None, None, np.nan], dtype=object),
    "more categories than kept": MANY,
}


@pytest.mark.parametrize("series", CATEGORICAL_COLUMNS.values(), ids=CATEGORICAL_COLUMNS.keys())
def test_categorical_feature_equals_the_value_by_value_profile(series: pd.Series) -> None:
    assert profile.categorical_feature("c", series, "string") == legacy_categorical_feature(
        "c", series, "string"
    )


def test_at_most_max_categories_are_kept_the_most_frequent() -> None:
    feature = profile.categorical_feature("c", MANY, "string")
    assert len(feature["categories"]) == profile.MAX_CATEGORIES
    assert feature["categories"] == sorted(feature["categories"])


NUMERIC_COLUMNS = {
    "normal with NaN": pd.Series(np.where(RNG.random(2001) < 0.05, np.nan, RNG.normal(3, 2, 2001))),
    "discrete": pd.Series(RNG.integers(0, 4, 999)),
    "nullable integers": pd.Series([1, None, 3, 3, 7], dtype="Int64"),
    "numbers as strings, some not numbers": pd.Series(["1.5", "x", None, "2", "1e3"], dtype=object),
    "booleans": pd.Series(RNG.random(50) < 0.5),
    "with infinities": pd.Series([1.0, np.inf, 2.0, -np.inf, 2.0]),
    "one value": pd.Series([4.0]),
    "empty": pd.Series([], dtype=np.float64),
    "all null": pd.Series([None, None], dtype=float),
    "float32": pd.Series(RNG.normal(size=300).astype(np.float32)),
}


@pytest.mark.parametrize("bins", [20, 7, 1])
@pytest.mark.parametrize("series", NUMERIC_COLUMNS.values(), ids=NUMERIC_COLUMNS.keys())
def test_numeric_feature_equals_the_previous_profile(series: pd.Series, bins: int) -> None:
    assert profile.numeric_feature("x", series, "float64", bins) == legacy_numeric_feature(
        "x", series, "float64", bins
    )


def test_build_profile_of_a_mixed_frame_equals_the_previous_one() -> None:
    frame = pd.DataFrame(
        {
            "age": RNG.normal(40, 10, 3000),
            "city": RNG.choice(WORDS, 3000),
            "visits": RNG.integers(0, 9, 3000),
            "plan": pd.Series(RNG.choice(["free", "pro"], 3000)).astype("category"),
            "target": RNG.integers(0, 2, 3000),
        }
    )
    frame.loc[::17, "age"] = np.nan
    frame.loc[::23, "city"] = None
    features = [
        ("age", "numeric", "float64"),
        ("city", "categorical", "string"),
        ("visits", "numeric", "int64"),
        ("plan", "categorical", "category"),
    ]
    doc = profile.build_profile(
        frame, features=features, target="target", task="classification", classes=[0, 1]
    )
    expected = [
        legacy_numeric_feature(n, frame[n], d, profile.DEFAULT_BINS)
        if k == "numeric"
        else legacy_categorical_feature(n, frame[n], d)
        for n, k, d in features
    ]
    assert doc["features"] == expected
    assert profile.dumps(doc) == profile.dumps(profile.loads(profile.dumps(doc)))


# --------------------------------------------------------------------------- counting

CATEGORIES = ["1", "2", "blue", "red", "true"]
COUNTED = {
    "strings, unseen": np.array(["red", "green", "blue", "red"], dtype=object),
    "strings with None and NaN": np.array(["red", None, float("nan"), "1"], dtype=object),
    "numpy unicode": np.array(["blue", "red", "x"]),
    "numpy bytes": np.array([b"blue", b"x"]),
    "floats with NaN": np.array([1.0, 2.0, 3.0, np.nan, 1.5]),
    "integers": np.array([2, 1, 7]),
    "booleans": np.array([True, False, True]),
    "floats as objects (decoded numeric tensor)": np.array([1.0, 2.0, 2.5], dtype=object),
    "mixed objects": np.array(["red", 1, 1.0, True, None, "2", 2.0], dtype=object),
    "two-dimensional objects": np.array([["red", "1"], [None, "blue"]], dtype=object),
    "empty": np.array([], dtype=object),
    "one value": np.array(["blue"], dtype=object),
}


@pytest.mark.parametrize("values", COUNTED.values(), ids=COUNTED.keys())
@pytest.mark.parametrize("categories", [CATEGORIES, []], ids=["categories", "no categories"])
def test_bin_categorical_equals_the_value_by_value_binning(values: np.ndarray, categories: list[Any]) -> None:
    got = drift.bin_categorical(values, categories)
    assert got.shape == values.shape
    assert got.ravel().tolist() == legacy_bin_categorical(values, categories)


@pytest.mark.parametrize(
    "series",
    [
        pd.Series(["red", pd.NA, "x"], dtype="string"),
        pd.Series(["red", None, "x"], dtype="str"),
        pd.Series(["red", pd.NA, "x"], dtype=object),
        pd.Series(pd.Categorical(["red", None, "x"])),
    ],
    ids=["string dtype", "str dtype", "object with pd.NA", "categorical"],
)
def test_pandas_nulls_are_nulls_not_unseen_categories(series: pd.Series) -> None:
    # the value-by-value binning named pd.NA "<NA>", an unseen category; it is a null like None
    assert drift.bin_categorical(series, CATEGORIES).tolist() == [3, 6, 5]


def reference_of_x_and_c(rows: int) -> dict[str, Any]:
    """The profile of a numeric feature x and a string feature c."""
    ref = pd.DataFrame({"x": RNG.normal(size=rows), "c": RNG.choice(WORDS, rows), "t": 0})
    features = [("x", "numeric", "float64"), ("c", "categorical", "string")]
    return profile.build_profile(ref, features=features, target="t", task="regression")


def test_count_frame_equals_binning_each_column() -> None:
    doc = reference_of_x_and_c(4000)
    cur = pd.DataFrame({"x": RNG.normal(0.3, 1, 1000), "c": RNG.choice([*WORDS, "new"], 1000)})
    cur.loc[::9, "c"] = None
    cur.loc[::11, "x"] = np.nan
    counted = drift.count_frame(doc, cur)
    assert counted["rows"] == 1000 and list(counted["features"]) == ["x", "c"]
    for fb in drift.feature_bins(doc):
        if fb.kind == "numeric":
            index = drift.bin_numeric(cur[fb.name].to_numpy(), fb.edges).tolist()
        else:
            index = legacy_bin_categorical(cur[fb.name].to_numpy(), list(fb.categories))
        full = np.bincount(index, minlength=fb.bins + 1)
        entry = counted["features"][fb.name]
        assert entry["counts"] == full[:-1].tolist() and entry["nulls"] == int(full[-1])
    assert drift.detect(doc, counted)["driftedFeatures"] == ["x", "c"]
    with pytest.raises(ValueError, match="no column 'c'"):
        drift.count_frame(doc, cur[["x"]])
    assert list(drift.count_frame(doc, cur[["x"]], features=["x"])["features"]) == ["x"]


def test_the_server_window_counts_decoded_rows_like_count_frame() -> None:
    doc = reference_of_x_and_c(2000)
    bins = drift.feature_bins(doc)
    window = LiveWindow([Column(bins[0], 0), Column(bins[1], 1)], capacity=10_000)
    frame = pd.DataFrame({"x": RNG.normal(size=300), "c": RNG.choice([*WORDS, "new"], 300)})
    frame.loc[::7, "c"] = None
    for start in range(0, 300, 64):  # decoded requests: [N, F] object rows, numbers and strings
        rows = frame.iloc[start : start + 64].to_numpy(dtype=object)
        window.add(window.bin_rows(rows, None))
    counts, _, _, _ = window.snapshot()
    live = {column.bins.name: (c.tolist(), nulls) for column, c, nulls in window.split(counts)}
    expected = drift.count_frame(doc, frame)["features"]
    assert live == {name: (e["counts"], e["nulls"]) for name, e in expected.items()}


SAMPLES = {
    "normal": RNG.normal(size=1001),
    "ties": RNG.integers(0, 3, 500).astype(float),
    "one value": np.array([2.5]),
    "two values": np.array([1.0, 4.0]),
    "infinities": np.array([-np.inf, 0.0, 1.0, np.inf, 1.0]),
}


@pytest.mark.parametrize("values", SAMPLES.values(), ids=SAMPLES.keys())
def test_sorted_quantiles_equal_numpy(values: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):
        got = profile.sorted_quantiles(np.sort(values))
        want = np.quantile(values, profile.QUANTILES)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_edges", [0, 1, 19, drift.COMPARED_EDGES + 1], ids=lambda n: f"{n} edges")
def test_numeric_counts_equal_the_bincount_of_the_bins(n_edges: int) -> None:
    values = np.concatenate([RNG.normal(size=3000), [np.nan, np.inf, -np.inf, np.nan]])
    edges = np.unique(np.round(RNG.normal(size=n_edges), 1)) if n_edges else np.empty(0)
    values[:50] = edges[0] if n_edges else 0.0  # values on an edge
    fb = drift.FeatureBins("x", "numeric", edges, (), np.ones(edges.size + 1))
    counts, nulls = fb.count(pd.Series(values))
    full = np.bincount(fb.bin(values), minlength=fb.bins + 1)
    assert counts.tolist() == full[:-1].tolist() and nulls == int(full[-1]) == 2


@pytest.mark.parametrize(
    "column",
    [
        np.array(["red", "1", None, "new"], dtype=object),
        np.array([1.0, 2.0, 7.0, np.nan], dtype=object),
        np.array(["red", 1.0, None, True], dtype=object),
        np.array([None, None, None, None], dtype=object),
    ],
    ids=["strings", "numbers", "mixed", "nulls only"],
)
def test_the_server_window_bins_object_rows_like_the_value_by_value_binning(column: np.ndarray) -> None:
    strings = drift.FeatureBins("s", "categorical", np.empty(0), ("blue", "red"), np.ones(3))
    other = drift.FeatureBins("c", "categorical", np.empty(0), tuple(CATEGORIES), np.ones(6))
    x = np.empty((4, 3), dtype=object)
    x[:, 0] = ["blue", "red", "x", None]
    x[:, 1] = column
    x[:, 2] = [0.5, None, 2.0, 3.0]
    number = drift.FeatureBins("n", "numeric", np.array([1.0, 2.5]), (), np.ones(3))
    window = LiveWindow([Column(strings, 0), Column(other, 1), Column(number, 2)], capacity=10)
    binned = window.bin_rows(x, None) - window.offsets[None, :]
    assert binned[:, 0].tolist() == legacy_bin_categorical(x[:, 0], ["blue", "red"])
    assert binned[:, 1].tolist() == legacy_bin_categorical(column, CATEGORIES)
    assert binned[:, 2].tolist() == [0, 3, 1, 2]
