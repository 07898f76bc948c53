"""The data profile: per-feature statistics and reference histograms, the reference for drift.

The model server and the drift code read this document; its format is a contract (documented in
docs/workloads.md). Version 1:

    {"version": 1, "rows": N, "target": "target", "task": "classification" | "regression",
     "classes": [...],                      # classification only: sorted class labels
     "features": [
       {"name", "kind": "numeric", "dtype", "count", "nulls",
        "mean", "std", "min", "max", "quantiles": {"0.05", "0.25", "0.5", "0.75", "0.95"},
        "binEdges": [e0, ..., e_{k-2}],      # k-1 INTERIOR edges, strictly increasing, observed values
        "referenceCounts": [c0, ..., c_{k-1}]}, # k counts for (-inf,e0], (e0,e1], ..., (e_last,+inf)
       {"name", "kind": "categorical", "dtype", "count", "nulls",
        "categories": [str, ...], "categoryCounts": [int, ...]}
     ]}

`count` is the number of non-null values, `nulls` the number of nulls; statistics, edges and
counts ignore nulls. `std` is the sample standard deviation (ddof=1; 0 for a single value).
Statistics of a column without values are null. Categories are strings (see `category_label`),
sorted, at most MAX_CATEGORIES (the most frequent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

PROFILE_VERSION = 1
DEFAULT_BINS = 20
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_CATEGORIES = 1000


def category_label(value: Any) -> str:
    """How a value is named as a category: booleans `true`/`false`, integral numbers without `.0`."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and math.isfinite(float(value)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


# Inferred types (pandas' `infer_dtype`) whose equal values always have equal labels, so a column of
# them can be factorized by value and only its distinct values named. Not so for mixed columns,
# where True == 1 == 1.0 hash alike but are named `true` and `1`.
_NAMED_BY_VALUE = frozenset(
    {"string", "empty", "integer", "floating", "mixed-integer-float", "boolean", "bytes"}
)


def category_codes(values: pd.Series | ArrayLike) -> tuple[NDArray[np.intp], NDArray[np.object_]]:
    """Each value's category label as a code: (codes, labels), labels sorted and distinct.

    A label is `category_label` of the value; a null (None, NaN, pd.NA, NaT) has code -1. Columnar:
    pandas factorizes the values (a hash lookup per value, in C) and only the distinct values are
    named. Object columns that mix kinds of values (e.g. strings and numbers, or True and 1, which
    hash alike) are named value by value.
    """
    column = values if isinstance(values, pd.Series) else np.asarray(values).ravel()
    if isinstance(column, pd.Series) and isinstance(column.dtype, pd.CategoricalDtype):
        # every declared category is named, used or not (as pandas counts a categorical's values)
        codes = column.cat.codes.to_numpy(dtype=np.intp)
        categories = column.cat.categories
        kind = pd.api.types.infer_dtype(categories, skipna=True)
        distinct = np.asarray(categories, dtype=object)
    else:
        kind = pd.api.types.infer_dtype(column, skipna=True)
        if kind not in _NAMED_BY_VALUE:
            column = (
                pd.Series(column, dtype=object).map(category_label, na_action="ignore").to_numpy(dtype=object)
            )
            kind = "string"
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        distinct = np.asarray(uniques, dtype=object)
    if kind != "string":
        distinct = np.asarray([category_label(v) for v in distinct], dtype=object)
    labels, index = np.unique(distinct, return_inverse=True)
    return np.append(index, -1)[codes], labels


def sorted_bins(
    ordered: NDArray[np.float64], bins: int = DEFAULT_BINS
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Interior edges and counts of an ascending sample without NaN (see `bin_edges`, `bin_counts`)."""
    n = ordered.size
    if n == 0 or bins < 2:
        return np.empty(0), np.asarray([n], dtype=np.int64)
    k = np.arange(1, bins, dtype=np.int64)
    # inverted CDF in exact integer arithmetic: the smallest value with CDF >= k/bins
    edges = np.unique(ordered[np.maximum(0, (k * n + bins - 1) // bins - 1)])
    upto = np.searchsorted(ordered, edges, side="right")
    return edges, np.diff(upto, prepend=0, append=n).astype(np.int64)


def sorted_quantiles(
    ordered: NDArray[np.float64], quantiles: Sequence[float] = QUANTILES
) -> NDArray[np.float64]:
    """`np.quantile(values, quantiles)` (linear) from the values sorted, without partitioning them again.

    The same arithmetic as numpy's: virtual index (n - 1) q, and the interpolation between its
    neighbours from the nearer one (so a quantile never leaves them).
    """
    n = ordered.size
    virtual = (n - 1) * np.asarray(quantiles, dtype=np.float64)
    below = np.floor(virtual)
    above = below + 1
    last = virtual >= n - 1
    below[last] = -1
    above[last] = -1
    below_index, above_index = below.astype(np.intp), above.astype(np.intp)
    a, b = ordered[below_index], ordered[above_index]
    gamma = virtual - below_index
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


def bin_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """Interior edges at the reference quantiles 1/bins ... (bins-1)/bins, equal edges merged.

    Quantiles by the inverted CDF, so every edge is an observed value and a discrete feature
    gets one bin per value (with right-closed bins) instead of edges between its values.
    """
    return sorted_bins(np.sort(np.asarray(values, dtype=np.float64)), bins)[0].tolist()


def bin_counts(edges: Sequence[float], values: Iterable[float] | np.ndarray) -> list[int]:
    """Counts of `values` in the bins (-inf,e0], (e0,e1], ..., (e_last,+inf); NaNs are skipped.

    The drift code uses this with a profile's `binEdges` to bin live values the same way.
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), arr, side="left")
    return [int(c) for c in np.bincount(idx, minlength=len(edges) + 1)]


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def numeric_values(series: pd.Series | ArrayLike) -> NDArray[np.float64]:
    """A column as float64, NaN for nulls and for values that are not numbers."""
    if isinstance(series, np.ndarray) and series.dtype.kind in "fiub":
        return series.astype(np.float64, copy=False)
    if isinstance(series, pd.Series) and series.dtype == np.float64:
        return series.to_numpy()
    numbers = pd.to_numeric(
        pd.Series(series) if not isinstance(series, pd.Series) else series, errors="coerce"
    )
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def numeric_feature(name: str, series: pd.Series, dtype: str, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    values = numeric_values(series)
    nan = np.isnan(values)
    nulls = int(np.count_nonzero(nan))
    if nulls:
        values = values[~nan]
    ordered = np.sort(values)
    feature: dict[str, Any] = {
        "name": name,
        "kind": "numeric",
        "dtype": dtype,
        "count": int(values.size),
        "nulls": nulls,
    }
    if values.size:
        quantiles = sorted_quantiles(ordered)
        feature.update(
            mean=_num(values.mean()),
            std=_num(values.std(ddof=1)) if values.size > 1 else 0.0,
            min=_num(values.min()),
            max=_num(values.max()),
            quantiles={str(q): _num(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        )
    else:
        feature.update(mean=None, std=None, min=None, max=None, quantiles={str(q): None for q in QUANTILES})
    edges, counts = sorted_bins(ordered, bins)
    feature["binEdges"] = edges.tolist()
    feature["referenceCounts"] = counts.tolist()
    return feature


def categorical_feature(name: str, series: pd.Series, dtype: str) -> dict[str, Any]:
    codes, labels = category_codes(series)
    present = codes[codes >= 0]
    counts = np.bincount(present, minlength=len(labels))
    # the MAX_CATEGORIES most frequent (ties by label: labels are sorted), listed in label order
    top = np.sort(np.argsort(-counts, kind="stable")[:MAX_CATEGORIES])
    return {
        "name": name,
        "kind": "categorical",
        "dtype": dtype,
        "count": int(present.size),
        "nulls": int(len(series) - present.size),
        "categories": [str(label) for label in labels[top]],
        "categoryCounts": counts[top].tolist(),
    }


def build_profile(
    frame: pd.DataFrame,
    *,
    features: Sequence[tuple[str, str, str]],
    target: str,
    task: str,
    classes: Sequence[Any] | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The profile of `frame` (documented in docs/workloads.md).

    `features`: (name, kind "numeric" | "categorical", dtype recorded as is), in profile order;
    `target`, `task` and `classes` are recorded, not profiled; `bins`: quantile bins per numeric
    feature. Columns may hold numbers, strings, booleans or pandas categoricals, with nulls.
    """
    doc: dict[str, Any] = {"version": PROFILE_VERSION, "rows": len(frame), "target": target, "task": task}
    if task == "classification":
        doc["classes"] = list(classes or [])
    doc["features"] = [
        numeric_feature(name, frame[name], dtype, bins)
        if kind == "numeric"
        else categorical_feature(name, frame[name], dtype)
        for name, kind, dtype in features
    ]
    return doc


def dumps(profile: dict[str, Any]) -> bytes:
    """Canonical bytes of a profile: compact JSON, keys in document order, no NaN."""
    return json.dumps(profile, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def loads(data: bytes | str) -> dict[str, Any]:
    """Parse a profile and check its version."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != PROFILE_VERSION:
        raise ValueError(f"not a version {PROFILE_VERSION} ModelCycle profile")
    return doc
