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


def bin_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """Interior edges at the reference quantiles 1/bins ... (bins-1)/bins, equal edges merged.

    Quantiles by the inverted CDF, so every edge is an observed value and a discrete feature
    gets one bin per value (with right-closed bins) instead of edges between its values.
    """
    if values.size == 0 or bins < 2:
        return []
    ordered = np.sort(values)
    n = ordered.size
    # inverted CDF in exact integer arithmetic: the smallest value with CDF >= k/bins
    index = [max(0, (k * n + bins - 1) // bins - 1) for k in range(1, bins)]
    return [float(e) for e in np.unique(ordered[index])]


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


def numeric_feature(name: str, series: pd.Series, dtype: str, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    nulls = int(np.isnan(values).sum())
    values = values[~np.isnan(values)]
    feature: dict[str, Any] = {
        "name": name,
        "kind": "numeric",
        "dtype": dtype,
        "count": int(values.size),
        "nulls": nulls,
    }
    if values.size:
        quantiles = np.quantile(values, QUANTILES)
        feature.update(
            mean=_num(values.mean()),
            std=_num(values.std(ddof=1)) if values.size > 1 else 0.0,
            min=_num(values.min()),
            max=_num(values.max()),
            quantiles={str(q): _num(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        )
    else:
        feature.update(mean=None, std=None, min=None, max=None, quantiles={str(q): None for q in QUANTILES})
    edges = bin_edges(values, bins)
    feature["binEdges"] = edges
    feature["referenceCounts"] = bin_counts(edges, values)
    return feature


def categorical_feature(name: str, series: pd.Series, dtype: str) -> dict[str, Any]:
    present = series[series.notna()]
    labels = present.map(category_label)
    counts = labels.value_counts()
    top = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))[:MAX_CATEGORIES]
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


def build_profile(
    frame: pd.DataFrame,
    *,
    features: Sequence[tuple[str, str, str]],
    target: str,
    task: str,
    classes: Sequence[Any] | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The profile of `frame`. `features`: (name, kind, dtype) in snapshot order."""
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
