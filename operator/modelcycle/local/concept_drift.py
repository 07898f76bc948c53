"""The concept-drift scenario: the relation between features and label changes, the inputs do not.

Data comes from scikit-learn's generator `make_regression` (no download): four standard-normal
features and a linear teacher `w`; the label is `1` where `x·w + noise > 0`. The change flips the
sign of the strongest coefficient: the same inputs now mean the opposite for that feature,
so a model trained before answers worse while the input distribution (what drift detection sees)
is unchanged. Only feedback labels reveal it.

`examples/concept-drift/` holds the objects; `modelcycle local demo --scenario concept-drift`
creates the base data as a ConfigMap (`config_map()`), runs v1, sends traffic before and after the
change with feedback, and follows the monitor's retraining on recent labelled traffic.
`offline_accuracies()` runs the same scenario without a cluster (tests/unit/test_concept_drift.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

FEATURES = ("x1", "x2", "x3", "x4")
TARGET = "label"
TEACHER_SEED = 7
BASE_SEED = 11
BASE_ROWS = 1200
NOISE = 0.35
"""Noise on `x·w` (in units of its spread): pre-change accuracy is near 0.9, not 1."""
CONFIG_MAP = "concept-drift-data"
CONFIG_MAP_KEY = "data.csv"
TRAFFIC_ROWS = 500
"""The example monitor's traffic window (`retrain.traffic.window.lastRows`)."""
BASE_SHARE = 0.1
"""The example monitor's `retrain.traffic.baseShare`: a little of the old relation, so v2 keeps its
coverage of the inputs; more of it pulls v2 back toward the old relation (0.3 costs ~5 points)."""
DROP_TARGET = 0.15
RECOVER_TARGET = 0.05


def teacher(*, changed: bool) -> NDArray[np.float64]:
    """The coefficients of the relation, before or after the change."""
    from sklearn.datasets import make_regression

    _, _, coef = make_regression(
        n_samples=1,
        n_features=len(FEATURES),
        n_informative=len(FEATURES),
        coef=True,
        random_state=TEACHER_SEED,
    )
    w = np.asarray(coef, dtype=np.float64)
    w = w / np.linalg.norm(w)
    if changed:
        strongest = int(np.argmax(np.abs(w)))
        w = w.copy()
        w[strongest] = -w[strongest]
    return w


def sample(n: int, seed: int, *, changed: bool) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """`n` rows and their labels under the relation before (or after) the change."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(FEATURES)))
    score = x @ teacher(changed=changed) + NOISE * rng.standard_normal(n)
    return np.round(x, 6), (score > 0).astype(np.int64)


def base_csv(rows: int = BASE_ROWS) -> str:
    x, y = sample(rows, BASE_SEED, changed=False)
    lines = [",".join((*FEATURES, TARGET))]
    lines += [
        ",".join([*(f"{v:.6f}" for v in row), str(int(label))]) for row, label in zip(x, y, strict=True)
    ]
    return "\n".join(lines) + "\n"


def config_map(rows: int = BASE_ROWS) -> dict[str, Any]:
    """The base training data as the ConfigMap the example's Dataset reads."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "labels": {"app.kubernetes.io/part-of": "modelcycle-demo"}},
        "data": {CONFIG_MAP_KEY: base_csv(rows)},
    }


def accuracy(predictions: Any, labels: Any) -> float:
    p = np.asarray(predictions).astype(np.int64)
    y = np.asarray(labels).astype(np.int64)
    return float(np.mean(p == y)) if len(y) else float("nan")


def _fit(x: NDArray[np.float64], y: NDArray[np.int64]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


def offline_accuracies(
    *, traffic_rows: int = TRAFFIC_ROWS, base_share: float = BASE_SHARE, seed: int = 100
) -> dict[str, float]:
    """The scenario without a cluster, as the platform runs it: v1 on the base data; v2 on the last
    `traffic_rows` labelled rows after the change plus a `base_share` of base rows (what the
    monitor's traffic Dataset holds). Accuracies on fresh traffic before and after the change."""
    import pandas as pd

    from modelcycle.workloads import traffic_join

    x_base, y_base = sample(BASE_ROWS, BASE_SEED, changed=False)
    v1 = _fit(x_base, y_base)
    x_before, y_before = sample(2000, seed, changed=False)
    x_after, y_after = sample(2000, seed + 1, changed=True)
    x_recent, y_recent = sample(traffic_rows, seed + 2, changed=True)
    columns = list(FEATURES)
    recent = pd.DataFrame(x_recent, columns=columns).assign(**{TARGET: y_recent})
    base = pd.DataFrame(x_base, columns=columns).assign(**{TARGET: y_base})
    mixed, _ = traffic_join.merge(recent, base, base_share, TARGET)
    v2 = _fit(mixed[columns].to_numpy(), mixed[TARGET].to_numpy())
    return {
        "v1Before": accuracy(v1.predict(x_before), y_before),
        "v1After": accuracy(v1.predict(x_after), y_after),
        "v2After": accuracy(v2.predict(x_after), y_after),
    }


def verdict(v1_before: float, v1_after: float, v2_after: float) -> list[str]:
    """The scenario's targets, as lines for the summary: v1 falls by 15 points, v2 recovers to within
    5 points of v1 before the change."""
    drop = v1_before - v1_after
    gap = v1_before - v2_after
    return [
        f"v1 fell by {drop * 100:.1f} points (target: at least {DROP_TARGET * 100:.0f}): "
        + ("met" if drop >= DROP_TARGET else "NOT MET"),
        f"v2 is {gap * 100:.1f} points below v1 before the change "
        f"(target: at most {RECOVER_TARGET * 100:.0f}): " + ("met" if gap <= RECOVER_TARGET else "NOT MET"),
    ]
