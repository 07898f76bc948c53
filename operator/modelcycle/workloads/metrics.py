"""The holdout split, the metrics of each task, gate direction, and prediction latency.

Training and validation both call `holdout_split` with the same Split, so validation evaluates
on exactly the rows training held out.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.api.common import Split
from modelcycle.workloads.results import WorkloadError

CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss", "mse", "max_error", "mape"})


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def holdout_split(
    X: pd.DataFrame, y: pd.Series, task: str, split: Split | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """(X_train, X_test, y_train, y_test): shuffled with the split's seed, stratified for classification."""
    from sklearn.model_selection import train_test_split

    split = split or Split()
    stratify = y if task == "classification" and split.stratify else None
    try:
        parts = train_test_split(
            X, y, test_size=split.test_fraction, random_state=split.seed, shuffle=True, stratify=stratify
        )
    except ValueError as exc:
        raise WorkloadError(
            f"cannot split {len(X)} rows with testFraction {split.test_fraction}"
            f"{' (stratified)' if stratify is not None else ''}: {exc}",
            reason="SplitFailed",
        ) from exc
    X_train, X_test, y_train, y_test = parts
    return X_train, X_test, y_train, y_test


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def evaluate(model: Any, X: pd.DataFrame, y: pd.Series, task: str) -> dict[str, float]:
    """Holdout metrics. Classification: accuracy, f1_macro, and, when the model has predict_proba,
    roc_auc (one-vs-rest for multiclass) and log_loss. Regression: rmse, mae, r2."""
    from sklearn import metrics as skm

    predictions = model.predict(X)
    if task == "regression":
        return _finite(
            {
                "rmse": math.sqrt(skm.mean_squared_error(y, predictions)),
                "mae": skm.mean_absolute_error(y, predictions),
                "r2": skm.r2_score(y, predictions) if len(y) > 1 else None,
            }
        )
    out: dict[str, Any] = {
        "accuracy": skm.accuracy_score(y, predictions),
        "f1_macro": skm.f1_score(y, predictions, average="macro", zero_division=0),
    }
    if hasattr(model, "predict_proba"):
        classes = list(model.classes_)
        proba = model.predict_proba(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(ValueError):
                out["log_loss"] = skm.log_loss(y, proba, labels=classes)
            try:
                if len(classes) == 2:
                    out["roc_auc"] = skm.roc_auc_score(y == classes[1], proba[:, 1])
                elif len(classes) > 2:
                    out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
            except ValueError:  # a class missing from the holdout rows
                pass
    return _finite({k: out[k] for k in CLASSIFICATION_METRICS if k in out})


def measure_latency(
    model: Any, X: pd.DataFrame, *, calls: int = 50, min_batch_rows: int = 2000
) -> dict[str, float]:
    """Median single-row predict time (ms, over `calls` calls) and batch throughput (rows/s)."""
    if len(X) == 0:
        return {}
    rows = [X.iloc[[i % len(X)]] for i in range(calls)]
    for row in rows[:3]:  # warm up
        model.predict(row)
    timings = []
    for row in rows:
        start = time.perf_counter()
        model.predict(row)
        timings.append(time.perf_counter() - start)
    repeat = max(1, math.ceil(min_batch_rows / len(X)))
    batch = pd.concat([X] * repeat, ignore_index=True) if repeat > 1 else X
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        model.predict(batch)
        best = min(best, time.perf_counter() - start)
    return {
        "singleRowMs": round(statistics.median(timings) * 1000.0, 4),
        "batchRowsPerSecond": round(len(batch) / max(best, 1e-9), 1),
    }


def predictions_digest(model: Any, X: pd.DataFrame) -> str:
    """A short fingerprint of the model's predictions on X (determinism checks)."""
    import hashlib

    values = np.asarray(model.predict(X))
    text = ",".join(repr(v.item() if hasattr(v, "item") else v) for v in values)
    return hashlib.sha256(text.encode()).hexdigest()
