"""Drift statistics shared by the model server and the ModelMonitor: binning, tests, verdicts.

Everything here is vectorised numpy on bin counts, so the model server only has to keep counts over
the reference profile's bins and the monitor can add the counts of several replicas together.

Binning (the profile's convention): a numeric feature has *interior* edges `e0 < e1 < ... < ek`
and `k + 1` bins `(-inf, e0], (e0, e1], ..., (ek, inf)`; `np.searchsorted(edges, x, side="left")`
is the bin index. A categorical feature has one bin per reference category plus one trailing bin
for categories the reference never saw. Missing values (NaN, None, pd.NA, NaT) are counted apart
as `nulls` and take part in no test.

Statistics:

- `psi`: population stability index `sum((q - p) * ln(q / p))` over bin proportions, where an
  empty bin's proportion is replaced by `PSI_EPSILON` (1e-4, the usual choice, also Evidently's)
  so that the logarithm stays finite; other proportions are left as they are (no renormalisation).
- `js_distance`: Jensen-Shannon *distance* (square root of the divergence), base 2, so in [0, 1];
  equal to `scipy.spatial.distance.jensenshannon(p, q, base=2)`.
- `ks_2samp`: two-sample Kolmogorov-Smirnov on raw samples; statistic and p-value agree with
  `scipy.stats.ks_2samp` (two-sided; `method="auto"` picks the exact distribution up to 10 000
  rows per sample, like scipy, and Smirnov's asymptotic `kstwo` otherwise).
- `ks_binned`: the same test from counts over shared bins (what the server keeps). The statistic
  is the largest gap between the two empirical CDFs *at the bin edges*, so it is never larger than
  the raw-sample statistic (the test is conservative: binning can hide drift inside a bin, never
  invent it); p-value from Smirnov's distribution with `n = n1 n2 / (n1 + n2)`, as scipy's asymp.
- KS p-values below `KS_TAIL_SHORTCUT` (1e-10) come from the limiting Kolmogorov distribution,
  an upper bound of scipy's finite-n one: within 1e-10 of scipy's value, far below any level,
  and up to thousands of times faster for large samples (scipy's kstwo takes 0.1-4 s there).
- `chi2_2samp`: Pearson chi-squared test of homogeneity on the 2 x k table of counts, equal to
  `scipy.stats.chi2_contingency` (bins empty in both samples dropped; Yates' correction when the
  table has one degree of freedom).
- Multiple testing: `holm` (Holm-Bonferroni step-down, controls the family-wise error rate; the
  default) or `bh` (Benjamini-Hochberg, controls the false discovery rate). Reported p-values are
  the adjusted ones, so a feature drifts when its adjusted p-value is below the threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import special
from scipy.stats import chi2 as chi2_dist
from scipy.stats import kstwo, kstwobign

from modelcycle.workloads import profile as profile_mod
from modelcycle.workloads.profile import category_label

PSI_EPSILON = 1e-4
"""Proportion given to an empty bin in the PSI (keeps ln(q/p) finite)."""
KS_EXACT_MAX_N = 10_000
"""Like scipy's `method="auto"`: exact KS p-values when both samples have at most this many rows."""
KS_TAIL_SHORTCUT = 1e-10
"""Below this, KS p-values come from the limiting distribution (see `_ks_asymp_pvalue`)."""
COMPARED_EDGES = 64
"""Up to this many edges, counting (not binning) a numeric sample compares it with each edge in turn:
one vectorised pass per edge beats a binary search per value."""
STATS_VERSION = 1
"""Version of the live-statistics JSON (`/v2/models/{name}/stats`)."""

Method = Literal["ks", "chi2", "psi", "jsd"]
Correction = Literal["holm", "bh", "none"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


# --------------------------------------------------------------------------- effect sizes


def _proportions(counts: ArrayLike) -> FloatArray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, c / np.where(total > 0, total, 1.0), 0.0)


def psi(reference_counts: ArrayLike, current_counts: ArrayLike, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two count (or proportion) vectors over the same bins."""
    p = np.maximum(_proportions(reference_counts), epsilon)
    q = np.maximum(_proportions(current_counts), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two count vectors over the same bins."""
    p = _proportions(reference_counts)
    q = _proportions(current_counts)
    if not p.any() or not q.any():
        return 0.0
    m = 0.5 * (p + q)
    divergence = 0.5 * (special.rel_entr(p, m).sum() + special.rel_entr(q, m).sum()) / math.log(2.0)
    return float(math.sqrt(max(divergence, 0.0)))


# --------------------------------------------------------------------------- tests


@dataclass(frozen=True)
class TestResult:
    """A test statistic and its (unadjusted) p-value."""

    statistic: float
    p_value: float


def _ks_asymp_pvalue(d: float, n1: int, n2: int) -> float:
    m, n = sorted([float(n1), float(n2)], reverse=True)
    n_eff = float(np.round(m * n / (m + n)))
    # scipy's finite-n Kolmogorov tail (kstwo) costs 0.1-4 s per call for large n below p ~ 0.02.
    # Its limiting distribution (kstwobign) is an upper bound of it (checked for n from 200 to 5e5):
    # when that bound is below KS_TAIL_SHORTCUT, both are, and the bound is returned - within 1e-10
    # of scipy's value, and far below any significance level.
    if n_eff > 0:
        bound = float(kstwobign.sf(d * math.sqrt(n_eff)))
        if bound < KS_TAIL_SHORTCUT:
            return bound
    return float(np.clip(kstwo.sf(d, n_eff), 0.0, 1.0))


def _ks_exact_pvalue(d: float, n1: int, n2: int) -> float | None:
    """Exact two-sided p-value by scipy's lattice-path routine; None when it is unavailable or fails."""
    try:
        from scipy.stats._stats_py import _attempt_exact_2kssamp
    except ImportError:  # pragma: no cover - private helper moved; asymptotic is still correct
        return None
    g = math.gcd(n1, n2)
    if n1 // g >= np.iinfo(np.int32).max / (n2 // g):
        return None
    success, _, prob = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
    return float(np.clip(prob, 0.0, 1.0)) if success else None


def ks_2samp(x: ArrayLike, y: ArrayLike, *, method: Literal["auto", "exact", "asymp"] = "auto") -> TestResult:
    """Two-sided two-sample Kolmogorov-Smirnov test on raw samples (NaN dropped), like scipy's."""
    a = np.sort(np.asarray(x, dtype=np.float64).ravel())
    b = np.sort(np.asarray(y, dtype=np.float64).ravel())
    a = a[~np.isnan(a)]
    b = b[~np.isnan(b)]
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("ks_2samp needs two non-empty samples")
    both = np.concatenate([a, b])
    diff = np.searchsorted(a, both, side="right") / n1 - np.searchsorted(b, both, side="right") / n2
    d = float(max(diff.max(), np.clip(-diff.min(), 0.0, 1.0)))
    if method == "auto":
        method = "exact" if max(n1, n2) <= KS_EXACT_MAX_N else "asymp"
    if method == "exact":
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        d_exact = round(d * lcm) / lcm
        p = _ks_exact_pvalue(d, n1, n2)
        if p is not None:
            return TestResult(d_exact, p)
    return TestResult(d, _ks_asymp_pvalue(d, n1, n2))


def ks_binned(reference_counts: ArrayLike, current_counts: ArrayLike) -> TestResult:
    """Two-sample KS from counts over the same ordered bins (streaming; conservative, see module doc)."""
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    n1, n2 = float(r.sum()), float(c.sum())
    if n1 <= 0 or n2 <= 0:
        return TestResult(0.0, 1.0)
    gaps = np.abs(np.cumsum(r)[:-1] / n1 - np.cumsum(c)[:-1] / n2)
    d = float(gaps.max()) if gaps.size else 0.0
    return TestResult(d, _ks_asymp_pvalue(d, round(n1), round(n2)))


def chi2_2samp(
    reference_counts: ArrayLike, current_counts: ArrayLike, *, correction: bool = True
) -> TestResult:
    """Chi-squared test of homogeneity of two count vectors (scipy.stats.chi2_contingency on [ref; cur])."""
    table = np.vstack(
        [np.asarray(reference_counts, dtype=np.float64), np.asarray(current_counts, dtype=np.float64)]
    )
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or (rows <= 0).any():
        return TestResult(0.0, 1.0)
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    dof = table.shape[1] - 1
    observed = table
    if dof == 1 and correction:
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    stat = float(((observed - expected) ** 2 / expected).sum())
    return TestResult(stat, float(chi2_dist.sf(stat, dof)))


def adjust_pvalues(p_values: ArrayLike, method: Correction = "holm") -> FloatArray:
    """Adjusted p-values for multiple testing: Holm step-down, Benjamini-Hochberg, or none."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0 or method == "none":
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(ranked * (m - np.arange(m)))
    elif method == "bh":
        adj = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}; use holm, bh or none")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------- binning


def reference_bins(values: ArrayLike, bins: int = 20) -> tuple[FloatArray, IntArray, int]:
    """A reference binning of a numeric sample: (interior edges, counts, nulls), as the profile does.

    Edges at the quantiles 1/bins ... (bins-1)/bins by the inverted CDF (the smallest observed value
    whose CDF reaches k/bins; equal edges merged), so a discrete feature gets one bin per value.
    Counts over (-inf, e0], (e0, e1], ..., (e_last, inf), from the same single sort.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    nan = np.isnan(v)
    edges, counts = profile_mod.sorted_bins(np.sort(v[~nan]), bins)
    return edges, counts, int(nan.sum())


def quantile_edges(values: ArrayLike, bins: int = 20) -> FloatArray:
    """Interior edges at the sample quantiles (duplicates removed): a reference binning."""
    return reference_bins(values, bins)[0]


def _floats(values: ArrayLike | pd.Series) -> FloatArray:
    if isinstance(values, pd.Series):
        return profile_mod.numeric_values(values)
    return np.asarray(values, dtype=np.float64)


def bin_numeric(values: ArrayLike | pd.Series, edges: ArrayLike) -> IntArray:
    """Bin index of each value over interior edges; NaN gets index len(edges) + 1 (the null bin)."""
    v = _floats(values)
    e = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(e, v, side="left").astype(np.int64)
    idx[np.isnan(v)] = e.size + 1
    return idx


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _category_value(label: Any) -> float:
    if _is_number(label):
        return float(label)
    try:
        return float(str(label))
    except ValueError:
        return math.nan


class CategoryIndex:
    """How values are matched with a feature's reference categories (see `bin_categorical`).

    Built once per binning: the categories' labels (`category_label`, first one wins) and their
    numeric values, sorted, for matching numbers by value.
    """

    def __init__(self, categories: Sequence[Any]) -> None:
        self.size = len(categories)
        self.positions: dict[str, int] = {}
        for i, category in enumerate(categories):
            self.positions.setdefault(category_label(category), i)
        numbers = np.asarray([_category_value(c) for c in categories], dtype=np.float64)
        self.order = np.argsort(numbers, kind="stable")
        self.numbers = numbers[self.order]

    def of_labels(self, labels: Iterable[str], count: int) -> IntArray:
        """Index of each label: its category's, `size` when unseen; then `size + 1` (null) appended."""
        found = np.fromiter((self.positions.get(label, self.size) for label in labels), np.int64, count)
        return np.append(found, self.size + 1)

    def bin(self, values: ArrayLike | pd.Series) -> IntArray:
        k = self.size
        dtype = values.dtype if isinstance(values, pd.Series) else None
        if (
            dtype is not None
            and pd.api.types.is_numeric_dtype(dtype)
            and not pd.api.types.is_bool_dtype(dtype)
        ):
            values = profile_mod.numeric_values(values)
        if not isinstance(values, pd.Series):
            values = np.asarray(values)
            if values.dtype.kind == "S":
                values = values.astype(str)
            if values.dtype.kind in "iuf":  # numbers by value
                v = values.astype(np.float64, copy=False)
                out = np.full(v.shape, k, dtype=np.int64)
                if k:
                    pos = np.clip(np.searchsorted(self.numbers, v), 0, k - 1)
                    hit = self.numbers[pos] == v
                    out[hit] = self.order[pos[hit]]
                out[np.isnan(v)] = k + 1
                return out
        codes, labels = profile_mod.category_codes(values)
        return self.of_labels(labels, len(labels))[codes].reshape(np.shape(values))


def bin_categorical(values: ArrayLike | pd.Series, categories: Sequence[Any]) -> IntArray:
    """Index of each value's category; unseen -> len(categories); null -> len(categories) + 1.

    Categories are matched by the profile's naming (`category_label`): numbers by value (so 1, 1.0
    and "1" are one category), booleans as `true`/`false`, anything else by its string form.
    Nulls are None, NaN, pd.NA and NaT. Columnar (see `profile.category_codes`).
    """
    return CategoryIndex(categories).bin(values)


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class FeatureBins:
    """The reference binning of one feature."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: FloatArray
    """Interior edges (numeric)."""
    categories: tuple[Any, ...]
    """Reference categories (categorical)."""
    reference_counts: FloatArray
    """Reference counts over the bins (for categoricals: one per category, then 0 for unseen)."""

    @property
    def bins(self) -> int:
        """Bins excluding the null bin: edges + 1, or categories + 1 (unseen)."""
        return self.edges.size + 1 if self.kind == "numeric" else len(self.categories) + 1

    @cached_property
    def index(self) -> CategoryIndex:
        """The categories' index (categorical features)."""
        return CategoryIndex(self.categories)

    def bin(self, values: ArrayLike | pd.Series) -> IntArray:
        """Bin index of each value (`bins` is the null bin)."""
        if self.kind == "numeric":
            return bin_numeric(values, self.edges)
        return self.index.bin(values)

    def count(self, values: ArrayLike | pd.Series) -> tuple[IntArray, int]:
        """Counts over the bins and the number of nulls (the counts of `bin`, without the indices)."""
        if self.kind == "numeric" and self.edges.size <= COMPARED_EDGES:
            v = _floats(values).ravel()
            nulls = int(np.count_nonzero(np.isnan(v)))
            # x is in bin j when e_{j-1} < x <= e_j: differences of the counts at or below each edge
            upto = [np.count_nonzero(v <= e) for e in self.edges.tolist()]
            bounds = np.asarray([0, *upto, v.size - nulls], dtype=np.int64)
            return np.diff(bounds), nulls
        full = np.bincount(self.bin(values).ravel(), minlength=self.bins + 1)
        return full[: self.bins].astype(np.int64), int(full[self.bins])


def feature_bins(profile: Mapping[str, Any]) -> list[FeatureBins]:
    """The binning of each profiled feature, in profile order."""
    out: list[FeatureBins] = []
    for f in profile.get("features", []):
        kind = f.get("kind", "numeric")
        if kind == "numeric":
            edges = np.asarray(f.get("binEdges") or [], dtype=np.float64)
            ref = np.asarray(f.get("referenceCounts") or np.zeros(edges.size + 1), dtype=np.float64)
            if ref.size != edges.size + 1:
                raise ValueError(
                    f"profile feature {f.get('name')!r}: referenceCounts has {ref.size} entries, "
                    f"binEdges {edges.size} (want edges + 1)"
                )
            out.append(FeatureBins(str(f["name"]), "numeric", edges, (), ref))
        elif kind == "categorical":
            cats = tuple(f.get("categories") or [])
            ref = np.asarray(f.get("categoryCounts") or np.zeros(len(cats)), dtype=np.float64)
            if ref.size == len(cats):
                ref = np.append(ref, 0.0)
            if ref.size != len(cats) + 1:
                raise ValueError(
                    f"profile feature {f.get('name')!r}: categoryCounts has {ref.size} entries "
                    f"for {len(cats)} categories"
                )
            out.append(FeatureBins(str(f["name"]), "categorical", np.empty(0), cats, ref))
        else:
            raise ValueError(f"profile feature {f.get('name')!r}: unknown kind {kind!r}")
    return out


def count_frame(
    reference_profile: Mapping[str, Any], frame: pd.DataFrame, *, features: Iterable[str] | None = None
) -> dict[str, Any]:
    """Counts of a DataFrame's values over the reference profile's bins, in the shape `detect` takes.

    What a model server's window holds after seeing these rows: per feature (profile order, or only
    `features`), `kind`, `counts` over its bins and `nulls`; `rows` is the number of rows. Columns
    may hold numbers, strings, booleans or pandas categoricals, with nulls (None, NaN, pd.NA).
    """
    wanted = None if features is None else set(features)
    binnings = [fb for fb in feature_bins(reference_profile) if wanted is None or fb.name in wanted]
    missing = [fb.name for fb in binnings if fb.name not in frame.columns]
    if missing:
        raise ValueError(
            f"the frame has no column {missing[0]!r} of the reference profile"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; pass features=[...] to count only some"
        )
    out: dict[str, Any] = {}
    for fb in binnings:
        counts, nulls = fb.count(frame[fb.name])
        out[fb.name] = {"kind": fb.kind, "counts": counts.tolist(), "nulls": nulls}
    return {"rows": len(frame), "features": out}


def profile_fingerprint(profile: Mapping[str, Any]) -> str:
    """sha256 of the binning (names, kinds, edges, categories): live counts are comparable iff equal."""
    layout = [
        [f.get("name"), f.get("kind", "numeric"), f.get("binEdges") or [], f.get("categories") or []]
        for f in profile.get("features", [])
    ]
    return hashlib.sha256(json.dumps(layout, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- verdicts


def _feature_counts(current: Mapping[str, Any]) -> Mapping[str, Any]:
    features = current.get("features")
    return features if isinstance(features, Mapping) else current


def _counts_of(entry: Any) -> FloatArray:
    counts = entry.get("counts") if isinstance(entry, Mapping) else entry
    return np.asarray(counts if counts is not None else [], dtype=np.float64)


def detect(
    reference_profile: Mapping[str, Any],
    current_counts: Mapping[str, Any],
    *,
    method: Method = "ks",
    threshold: float = 0.05,
    min_samples: int = 200,
    features: Iterable[str] | None = None,
    correction: Correction = "holm",
) -> dict[str, Any]:
    """Drift of live counts against the reference profile.

    `current_counts` is the live-statistics JSON of `/v2/models/{name}/stats` (or `aggregate` of
    several), or just a mapping of feature name to `{"counts": [...]}` / a count list.

    Methods: `ks` - numeric features by the binned two-sample KS test, categoricals by chi-squared;
    `chi2` - every feature by chi-squared over its bins; both take `threshold` as the significance
    level of the p-values adjusted across the features that have a verdict. `psi` / `jsd` - the
    effect size itself is compared with `threshold`. Whatever the method, every feature reports the
    test p-value (adjusted), PSI and JS distance. A feature with fewer than `min_samples` live
    values gets no verdict (`drifted` false, `enoughSamples` false) and takes no part in the
    correction.
    """
    if method not in ("ks", "chi2", "psi", "jsd"):
        raise ValueError(f"unknown drift method {method!r}; use ks, chi2, psi or jsd")
    wanted = None if features is None else set(features)
    live = _feature_counts(current_counts)
    rows: list[dict[str, Any]] = []
    raw_p: list[float] = []
    for fb in feature_bins(reference_profile):
        if wanted is not None and fb.name not in wanted:
            continue
        entry = live.get(fb.name)
        cur = _counts_of(entry) if entry is not None else np.zeros(fb.bins)
        if cur.size != fb.bins:
            raise ValueError(
                f"feature {fb.name!r}: {cur.size} live counts for {fb.bins} reference bins "
                "(were the counts made with another profile?)"
            )
        ref = fb.reference_counts
        samples = int(cur.sum())
        if method == "ks" and fb.kind == "numeric":
            test, result = "ks", ks_binned(ref, cur)
        else:
            test, result = "chi2", chi2_2samp(ref, cur)
        row: dict[str, Any] = {
            "name": fb.name,
            "kind": fb.kind,
            "test": test,
            "statistic": result.statistic,
            "pValueRaw": result.p_value,
            "psi": psi(ref, cur) if samples else 0.0,
            "jsd": js_distance(ref, cur),
            "samples": samples,
            "referenceSamples": int(ref.sum()),
            "enoughSamples": samples >= min_samples,
        }
        nulls = entry.get("nulls") if isinstance(entry, Mapping) else None
        if nulls is not None:
            row["nulls"] = int(nulls)
        rows.append(row)
        raw_p.append(result.p_value)

    judged = [i for i, r in enumerate(rows) if r["enoughSamples"]]
    adjusted = adjust_pvalues([raw_p[i] for i in judged], correction)
    for r in rows:
        r["pValue"] = r["pValueRaw"]
    for i, p in zip(judged, adjusted, strict=True):
        rows[i]["pValue"] = float(p)
    for r in rows:
        if method in ("ks", "chi2"):
            r["score"] = r["statistic"]
            r["drifted"] = bool(r["enoughSamples"] and r["pValue"] < threshold)
        else:
            r["score"] = r[method]
            r["drifted"] = bool(r["enoughSamples"] and r[method] > threshold)
    drifted = [r["name"] for r in rows if r["drifted"]]
    window = current_counts.get("rows") if isinstance(current_counts.get("rows"), int) else None
    if window is None:
        window = max((r["samples"] for r in rows), default=0)
    return {
        "method": method,
        "threshold": threshold,
        "correction": correction if method in ("ks", "chi2") else "none",
        "minSamples": min_samples,
        "windowSize": int(window),
        "enoughSamples": bool(rows) and all(r["enoughSamples"] for r in rows),
        "drifted": bool(drifted),
        "driftedFeatures": drifted,
        "features": rows,
    }


def aggregate(stats_list: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the live statistics of several replicas (the `/stats` JSON) into one of the same shape.

    Raises ValueError when the replicas counted over different reference binnings (e.g. two model
    versions during a canary): aggregate each version separately.
    """
    if not stats_list:
        raise ValueError("nothing to aggregate")
    fingerprints = {s.get("referenceFingerprint") for s in stats_list}
    if len(fingerprints) > 1:
        raise ValueError("live statistics were counted over different reference profiles")
    first = stats_list[0]
    out: dict[str, Any] = {
        "version": STATS_VERSION,
        "model": first.get("model"),
        "modelVersion": first.get("modelVersion"),
        "referenceFingerprint": first.get("referenceFingerprint"),
        "replicas": len(stats_list),
        "rows": sum(int(s.get("rows", 0)) for s in stats_list),
        "windowCapacity": sum(int(s.get("windowCapacity", 0)) for s in stats_list),
        "totalRows": sum(int(s.get("totalRows", 0)) for s in stats_list),
    }
    features: dict[str, dict[str, Any]] = {}
    for s in stats_list:
        for name, entry in (s.get("features") or {}).items():
            counts = np.asarray(entry.get("counts", []), dtype=np.int64)
            have = features.get(name)
            if have is None:
                features[name] = {
                    "kind": entry.get("kind"),
                    "counts": counts,
                    "nulls": int(entry.get("nulls", 0)),
                }
            else:
                if have["counts"].size != counts.size:
                    raise ValueError(f"feature {name!r}: replicas report different numbers of bins")
                have["counts"] = have["counts"] + counts
                have["nulls"] += int(entry.get("nulls", 0))
    out["features"] = {n: {**e, "counts": e["counts"].tolist()} for n, e in features.items()}
    out["predictions"] = _sum_nested([s.get("predictions") for s in stats_list])
    out["feedback"] = _sum_nested([s.get("feedback") for s in stats_list])
    return out


_SUMMED = frozenset(
    {
        "count",
        "totalCount",
        "capacity",
        "confusion",
        "counts",
        "nulls",
        "rows",
        "totalRows",
        "sumError",
        "sumAbsError",
        "sumSquaredError",
        "sumLabel",
        "sumSquaredLabel",
    }
)


def _sum_nested(items: Sequence[Any]) -> Any:
    """Add the count-like fields (`_SUMMED`) of equally shaped objects; keep the first of the rest."""
    present = [i for i in items if isinstance(i, Mapping)]
    if not present:
        return None
    out: dict[str, Any] = {}
    for item in present:
        for key, value in item.items():
            if key not in out:
                out[key] = value
            elif key in _SUMMED:
                a, b = np.asarray(out[key]), np.asarray(value)
                if a.shape != b.shape:
                    raise ValueError(f"replicas report {key!r} of different shapes")
                out[key] = (a + b).tolist()
            elif out[key] != value and key in ("classes", "binEdges", "task"):
                raise ValueError(f"replicas disagree on {key!r}")
    return out


def performance(feedback: Mapping[str, Any] | None) -> dict[str, float]:
    """Live quality metrics from the feedback sufficient statistics of `/stats` (or `aggregate`).

    Classification (a confusion matrix, rows true class, columns predicted): `accuracy`,
    `f1_macro` (over classes seen in labels or predictions). Regression (sums of errors and labels):
    `rmse`, `mae`, `r2`. Always `count`, the labelled rows. Empty when there is no feedback yet.
    """
    if not feedback or not feedback.get("count"):
        return {}
    n = float(feedback["count"])
    if feedback.get("task") == "classification":
        cm = np.asarray(feedback.get("confusion") or [[0.0]], dtype=np.float64)
        tp = np.diag(cm)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        seen = (support + predicted) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(seen, 2 * tp / np.where(seen, support + predicted, 1.0), 0.0)
        return {
            "count": n,
            "accuracy": float(tp.sum() / n),
            "f1_macro": float(f1[seen].mean()) if seen.any() else 0.0,
        }
    sse = float(feedback.get("sumSquaredError", 0.0))
    sum_y = float(feedback.get("sumLabel", 0.0))
    ss_tot = float(feedback.get("sumSquaredLabel", 0.0)) - sum_y * sum_y / n
    out = {
        "count": n,
        "rmse": math.sqrt(max(sse, 0.0) / n),
        "mae": float(feedback.get("sumAbsError", 0.0)) / n,
    }
    if ss_tot > 0:
        out["r2"] = 1.0 - sse / ss_tot
    return out
