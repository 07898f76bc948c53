"""The drift statistics agree with scipy and the textbook formulas to 1e-9."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import jensenshannon

from modelcycle.workloads import drift

TOL = 1e-9


def textbook_psi(expected: np.ndarray, actual: np.ndarray, eps: float = drift.PSI_EPSILON) -> float:
    total = 0.0
    for e, a in zip(expected / expected.sum(), actual / actual.sum(), strict=True):
        e, a = max(e, eps), max(a, eps)
        total += (a - e) * math.log(a / e)
    return total


@pytest.mark.parametrize(
    ("n1", "n2", "shift"),
    [
        (7, 13, 0.5),
        (50, 80, 0.0),
        (100, 100, 0.3),
        (3000, 2000, 0.1),
        (20_000, 15_000, 0.02),
        (100_000, 100_000, 0.01),
    ],
)
def test_ks_2samp_matches_scipy(n1: int, n2: int, shift: float) -> None:
    rng = np.random.default_rng(n1 + n2)
    x = rng.normal(size=n1)
    y = rng.normal(shift, 1.1, size=n2)
    ours = drift.ks_2samp(x, y)
    ref = scipy.stats.ks_2samp(x, y)
    assert abs(ours.statistic - ref.statistic) <= TOL
    assert abs(ours.p_value - ref.pvalue) <= TOL
    ours_asymp = drift.ks_2samp(x, y, method="asymp")
    ref_asymp = scipy.stats.ks_2samp(x, y, method="asymp")
    assert abs(ours_asymp.statistic - ref_asymp.statistic) <= TOL
    assert abs(ours_asymp.p_value - ref_asymp.pvalue) <= TOL


def test_ks_2samp_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 300).astype(float)
    y = rng.integers(0, 6, 400).astype(float)
    ours, ref = drift.ks_2samp(x, y), scipy.stats.ks_2samp(x, y)
    assert abs(ours.statistic - ref.statistic) <= TOL and abs(ours.p_value - ref.pvalue) <= TOL


def test_ks_binned_equals_raw_ks_when_values_sit_on_the_edges() -> None:
    # Values only at the bin edges: binning loses nothing, so the statistic is the raw one and
    # the p-value is scipy's asymptotic one.
    rng = np.random.default_rng(5)
    edges = np.arange(0.0, 10.0)
    x = rng.choice(edges, size=20_000, p=np.full(10, 0.1))
    y = rng.choice(edges, size=15_000, p=np.linspace(0.05, 0.15, 10) / np.linspace(0.05, 0.15, 10).sum())
    rc, _ = drift.FeatureBins("f", "numeric", edges, (), np.zeros(11)).count(x)
    cc, _ = drift.FeatureBins("f", "numeric", edges, (), np.zeros(11)).count(y)
    ours = drift.ks_binned(rc, cc)
    ref = scipy.stats.ks_2samp(x, y, method="asymp")
    assert abs(ours.statistic - ref.statistic) <= TOL
    assert abs(ours.p_value - ref.pvalue) <= TOL


def test_ks_binned_never_exceeds_the_raw_statistic() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=5000), rng.normal(0.2, 1.0, size=4000)
    edges = drift.quantile_edges(x, 20)
    fb = drift.FeatureBins("f", "numeric", edges, (), np.zeros(edges.size + 1))
    binned = drift.ks_binned(fb.count(x)[0], fb.count(y)[0])
    raw = drift.ks_2samp(x, y, method="asymp")
    assert binned.statistic <= raw.statistic + TOL
    assert binned.statistic > 0.5 * raw.statistic  # 20 bins keep most of it


def test_psi_matches_the_textbook() -> None:
    rng = np.random.default_rng(1)
    expected = rng.integers(50, 500, 12).astype(float)
    actual = rng.integers(50, 500, 12).astype(float)
    assert abs(drift.psi(expected, actual) - textbook_psi(expected, actual)) <= TOL
    # with empty bins: the epsilon replaces the zero proportions
    expected[3] = 0
    actual[7] = 0
    assert abs(drift.psi(expected, actual) - textbook_psi(expected, actual)) <= TOL
    assert drift.psi(expected, expected) == 0.0


def test_psi_on_raw_samples_matches_the_textbook() -> None:
    rng = np.random.default_rng(2)
    ref, cur = rng.normal(size=100_000), rng.normal(0.25, 1.0, size=100_000)
    edges = drift.quantile_edges(ref, 10)
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])

    def right_closed(x: np.ndarray) -> np.ndarray:
        return np.array([((x > lo) & (x <= hi)).sum() for lo, hi in itertools.pairwise(bounds)], dtype=float)

    e, a = right_closed(ref), right_closed(cur)
    fb = drift.FeatureBins("f", "numeric", edges, (), e)
    assert abs(drift.psi(fb.count(ref)[0], fb.count(cur)[0]) - textbook_psi(e, a)) <= TOL


def test_js_distance_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        p, q = rng.integers(0, 100, 9).astype(float), rng.integers(0, 100, 9).astype(float)
        assert abs(drift.js_distance(p, q) - jensenshannon(p, q, base=2)) <= TOL
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (2, 8)])
def test_chi2_matches_chi2_contingency(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[1])
    table = rng.integers(5, 300, shape)
    ours = drift.chi2_2samp(table[0], table[1])
    ref = scipy.stats.chi2_contingency(table)
    assert abs(ours.statistic - ref.statistic) <= TOL
    assert abs(ours.p_value - ref.pvalue) <= TOL


def test_chi2_drops_bins_empty_in_both_samples() -> None:
    ref = scipy.stats.chi2_contingency(np.array([[10, 20, 30], [15, 10, 40]]))
    ours = drift.chi2_2samp([10, 0, 20, 30], [15, 0, 10, 40])
    assert abs(ours.statistic - ref.statistic) <= TOL and abs(ours.p_value - ref.pvalue) <= TOL


def test_holm_and_bh_adjustments() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> running max
    np.testing.assert_allclose(drift.adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02], atol=TOL)
    # BH: sorted p*m/rank -> running min from the top
    np.testing.assert_allclose(drift.adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02], atol=TOL)
    np.testing.assert_allclose(drift.adjust_pvalues(p, "none"), p)
    assert drift.adjust_pvalues([0.9, 0.8], "holm").max() <= 1.0


def test_bin_numeric_follows_the_profile_convention() -> None:
    edges = [1.0, 2.0, 3.0]
    values = [0.5, 1.0, 1.5, 2.0, 3.0, 3.5, math.nan]
    assert drift.bin_numeric(values, edges).tolist() == [0, 0, 1, 1, 2, 3, 4]


def test_bin_categorical_uses_the_profile_labels() -> None:
    cats = ["1", "2", "red"]
    assert drift.bin_categorical(np.array([1.0, 2, 3, math.nan]), cats).tolist() == [0, 1, 3, 4]
    assert drift.bin_categorical(np.array(["red", "blue"]), cats).tolist() == [2, 3]
    assert drift.bin_categorical(np.array(["red", None, 1.0], dtype=object), cats).tolist() == [2, 4, 0]
    assert drift.bin_categorical(np.array([True, False]), ["false", "true"]).tolist() == [1, 0]


def test_reference_bins_match_the_profile() -> None:
    from modelcycle.workloads import profile

    rng = np.random.default_rng(9)
    for values in (rng.normal(size=5001), rng.integers(0, 4, 999).astype(float), rng.exponential(size=20)):
        values[::97] = np.nan
        edges, counts, nulls = drift.reference_bins(values, profile.DEFAULT_BINS)
        present = values[~np.isnan(values)]
        assert edges.tolist() == profile.bin_edges(present, profile.DEFAULT_BINS)
        assert counts.tolist() == profile.bin_counts(edges.tolist(), values)
        assert nulls == int(np.isnan(values).sum())
