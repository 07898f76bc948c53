"""drift.detect / aggregate / performance on real profiles (modelcycle.workloads.profile)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelcycle.workloads import drift, profile

N = 20_000


def reference_frame(rng: np.random.Generator, n: int = N) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": rng.normal(0, 1, n),
            "b": rng.normal(10, 2, n),
            "c": rng.exponential(1.0, n),
            "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
            "target": rng.integers(0, 2, n),
        }
    )


FEATURES = [("a", "numeric", "float64"), ("b", "numeric", "float64"), ("c", "numeric", "float64")]
FEATURES += [("colour", "categorical", "string")]


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    frame = reference_frame(np.random.default_rng(0))
    return profile.build_profile(
        frame, features=FEATURES, target="target", task="classification", classes=[0, 1]
    )


def live_counts(doc: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """What a server's /stats reports for these rows."""
    features = {}
    for fb in drift.feature_bins(doc):
        counts, nulls = fb.count(frame[fb.name].to_numpy())
        features[fb.name] = {"kind": fb.kind, "counts": counts.tolist(), "nulls": nulls}
    return {"rows": len(frame), "features": features, "referenceFingerprint": drift.profile_fingerprint(doc)}


def test_no_drift_on_the_same_distribution(reference: dict[str, Any]) -> None:
    current = reference_frame(np.random.default_rng(1), 5000)
    result = drift.detect(reference, live_counts(reference, current))
    assert not result["drifted"] and result["driftedFeatures"] == []
    assert result["windowSize"] == 5000 and result["enoughSamples"]
    row = {r["name"]: r for r in result["features"]}
    assert row["a"]["test"] == "ks" and row["colour"]["test"] == "chi2"
    for r in result["features"]:
        assert set(r) >= {"name", "score", "pValue", "psi", "jsd", "drifted", "samples"}
        assert r["samples"] == 5000 and r["psi"] < 0.02 and r["jsd"] < 0.05


def test_drifted_features_are_flagged(reference: dict[str, Any]) -> None:
    rng = np.random.default_rng(2)
    current = reference_frame(rng, 5000)
    current["a"] += 0.25  # a quarter standard deviation
    current["c"] = rng.exponential(1.0, 5000) * 1.4  # a scale change
    current["colour"] = rng.choice(["red", "green", "blue"], 5000, p=[0.4, 0.3, 0.3])
    result = drift.detect(reference, live_counts(reference, current))
    assert result["drifted"]
    assert sorted(result["driftedFeatures"]) == ["a", "c", "colour"]
    row = {r["name"]: r for r in result["features"]}
    assert row["a"]["pValue"] < 1e-6 and row["b"]["pValue"] > 0.05
    assert row["a"]["pValue"] >= row["a"]["pValueRaw"]  # Holm only ever raises p-values


def test_min_samples_gives_no_verdict(reference: dict[str, Any]) -> None:
    current = reference_frame(np.random.default_rng(3), 100)
    current["a"] += 3.0
    result = drift.detect(reference, live_counts(reference, current), min_samples=200)
    assert not result["drifted"] and not result["enoughSamples"]
    assert all(not r["enoughSamples"] and r["samples"] == 100 for r in result["features"])
    assert drift.detect(reference, live_counts(reference, current), min_samples=50)["drifted"]


@pytest.mark.parametrize(("method", "threshold"), [("psi", 0.1), ("jsd", 0.1), ("chi2", 0.05)])
def test_effect_size_and_chi2_methods(reference: dict[str, Any], method: str, threshold: float) -> None:
    current = reference_frame(np.random.default_rng(4), 5000)
    current["b"] += 2.0  # one standard deviation
    result = drift.detect(reference, live_counts(reference, current), method=method, threshold=threshold)  # type: ignore[arg-type]
    assert result["driftedFeatures"] == ["b"]
    row = {r["name"]: r for r in result["features"]}
    assert row["b"]["score"] == row["b"][{"psi": "psi", "jsd": "jsd", "chi2": "statistic"}[method]]
    if method == "chi2":
        assert row["a"]["test"] == "chi2"


def test_feature_selection(reference: dict[str, Any]) -> None:
    current = reference_frame(np.random.default_rng(5), 3000)
    current["a"] += 1
    result = drift.detect(reference, live_counts(reference, current), features=["b", "colour"])
    assert [r["name"] for r in result["features"]] == ["b", "colour"] and not result["drifted"]


def test_unseen_categories_count_as_drift(reference: dict[str, Any]) -> None:
    current = reference_frame(np.random.default_rng(6), 3000)
    current.loc[:299, "colour"] = "purple"
    result = drift.detect(reference, live_counts(reference, current))
    assert "colour" in result["driftedFeatures"]


def test_counts_over_another_binning_are_refused(reference: dict[str, Any]) -> None:
    bad = {"features": {"a": {"counts": [1, 2, 3]}}}
    with pytest.raises(ValueError, match="reference bins"):
        drift.detect(reference, bad)


def test_aggregate_sums_replicas(reference: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    parts = [reference_frame(rng, n) for n in (1000, 2500, 700)]
    stats = []
    for frame in parts:
        s = live_counts(reference, frame)
        s.update(
            totalRows=len(frame),
            windowCapacity=10_000,
            predictions={"kind": "classes", "classes": [0, 1], "counts": [len(frame), 0], "nulls": 0},
            feedback={"task": "classification", "count": 2, "classes": [0, 1], "confusion": [[1, 0], [1, 0]]},
        )
        stats.append(s)
    total = drift.aggregate(stats)
    whole = live_counts(reference, pd.concat(parts))
    assert total["rows"] == 4200 and total["replicas"] == 3 and total["windowCapacity"] == 30_000
    for name, entry in whole["features"].items():
        assert total["features"][name]["counts"] == entry["counts"]
    assert total["predictions"]["classes"] == [0, 1] and total["predictions"]["counts"] == [4200, 0]
    assert total["feedback"]["confusion"] == [[3, 0], [3, 0]] and total["feedback"]["count"] == 6
    a = drift.detect(reference, total)
    b = drift.detect(reference, whole)
    assert [r["pValue"] for r in a["features"]] == [r["pValue"] for r in b["features"]]


def test_aggregate_refuses_mixed_references(reference: dict[str, Any]) -> None:
    one = {"referenceFingerprint": "a", "features": {}}
    two = {"referenceFingerprint": "b", "features": {}}
    with pytest.raises(ValueError, match="different reference"):
        drift.aggregate([one, two])


def test_fingerprint_depends_on_the_binning_only(reference: dict[str, Any]) -> None:
    other = {**reference, "rows": 1}
    assert drift.profile_fingerprint(other) == drift.profile_fingerprint(reference)
    changed = {
        **reference,
        "features": [{**reference["features"][0], "binEdges": [0.0]}, *reference["features"][1:]],
    }
    assert drift.profile_fingerprint(changed) != drift.profile_fingerprint(reference)


def test_performance_from_sufficient_statistics() -> None:
    assert drift.performance(None) == {} and drift.performance({"count": 0}) == {}
    cls = drift.performance({"task": "classification", "count": 10, "confusion": [[4, 1], [2, 3]]})
    assert cls["accuracy"] == pytest.approx(0.7)
    f1_0, f1_1 = 2 * 4 / (5 + 6), 2 * 3 / (5 + 4)
    assert cls["f1_macro"] == pytest.approx((f1_0 + f1_1) / 2)
    y, p = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
    err = y - p
    reg = drift.performance(
        {
            "task": "regression",
            "count": 3,
            "sumError": err.sum(),
            "sumAbsError": np.abs(err).sum(),
            "sumSquaredError": (err**2).sum(),
            "sumLabel": y.sum(),
            "sumSquaredLabel": (y**2).sum(),
        }
    )
    assert reg["rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    assert reg["mae"] == pytest.approx(np.abs(err).mean())
    assert reg["r2"] == pytest.approx(1 - (err**2).sum() / ((y - y.mean()) ** 2).sum())
