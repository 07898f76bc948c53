"""Live statistics of the model server: the drift window, prediction counts and feedback labels.

Memory is bounded whatever the traffic:

- `LiveWindow` keeps the last `capacity` rows as bin indices over the reference profile's bins
  (one int32 per feature and row, in a ring buffer) and their counts, updated incrementally: a new
  batch adds its rows' bins and removes those of the rows it pushes out. It also keeps cumulative
  counts since start (monotonic, for Prometheus counters).
- `FeedbackStore` remembers the predictions of the last `max_requests` requests that carried an
  `id` (an LRU), and keeps the last `capacity` (prediction, label) pairs in a ring buffer, from
  which the sufficient statistics of the live metrics are computed (a confusion matrix, or sums of
  errors), so the monitor can add replicas together.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from modelcycle.workloads import drift

# Default edges of the regression prediction histogram when the profile does not bin the target.
DEFAULT_VALUE_EDGES = tuple(
    sorted({-(10.0**e) for e in range(-2, 7)} | {0.0} | {10.0**e for e in range(-2, 7)})
)


@dataclass(frozen=True)
class Column:
    """A tracked column: the binning, and where its values come from in the model's input."""

    bins: drift.FeatureBins
    index: int
    """Column of the model input (feature order); -1 for the prediction column."""


class LiveWindow:
    """Sliding window over the last `capacity` rows, as counts over the reference bins."""

    def __init__(self, columns: Sequence[Column], capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the drift window needs a capacity of at least 1 row")
        self.columns = list(columns)
        self.capacity = capacity
        widths = [c.bins.bins + 1 for c in self.columns]  # + the null bin
        self.offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        self.width = int(sum(widths))
        self.counts = np.zeros(self.width, dtype=np.int64)
        self.cumulative = np.zeros(self.width, dtype=np.int64)
        self.ring = np.zeros((capacity, len(self.columns)), dtype=np.int32)
        self.filled = 0
        self.position = 0
        self.total_rows = 0
        self.lock = threading.Lock()
        numeric = [i for i, c in enumerate(self.columns) if c.bins.kind == "numeric" and c.index >= 0]
        self._numeric = np.asarray(numeric, dtype=np.int64)
        self._numeric_src = np.asarray([self.columns[i].index for i in numeric], dtype=np.int64)
        longest = max((self.columns[i].bins.edges.size for i in numeric), default=0)
        # Edges padded with +inf, so the bin of x is the number of edges strictly below it.
        self._edges = np.full((len(numeric), max(longest, 1)), np.inf)
        for row, i in enumerate(numeric):
            e = self.columns[i].bins.edges
            self._edges[row, : e.size] = e
        self._null_bin = np.asarray([self.columns[i].bins.bins for i in numeric], dtype=np.int64)
        # Categorical input columns, binned together when a batch holds their values as strings: the
        # labels of all their categories, and per label (and for unseen, null) each column's bin.
        categorical = [i for i, c in enumerate(self.columns) if c.bins.kind == "categorical" and c.index >= 0]
        self._categorical = np.asarray(categorical, dtype=np.int64)
        self._categorical_src = np.asarray([self.columns[i].index for i in categorical], dtype=np.int64)
        indexes = [self.columns[i].bins.index for i in categorical]
        labels = sorted({label for index in indexes for label in index.positions})
        self._label_rows = {label: row for row, label in enumerate(labels)}
        # rows: the labels, then unseen, then null
        self._label_bins = np.zeros((len(labels) + 2, len(indexes)), dtype=np.int64)
        for j, index in enumerate(indexes):
            self._label_bins[:, j] = np.insert(index.of_labels(labels, len(labels)), len(labels), index.size)

    def _bin_strings(self, block: NDArray[Any]) -> NDArray[np.int64] | None:
        """Bins of the categorical columns of an object batch, if they all hold strings (or nulls)."""
        if pd.api.types.infer_dtype(block.ravel(), skipna=True) != "string":
            return None
        codes, uniques = pd.factorize(block.ravel(), use_na_sentinel=True)
        unseen = len(self._label_rows)
        rows = np.fromiter((self._label_rows.get(u, unseen) for u in uniques), np.int64, len(uniques))
        rows = np.append(rows, unseen + 1)[codes].reshape(block.shape)  # code -1 (null): the last row
        return self._label_bins[rows, np.arange(block.shape[1])[None, :]]

    def bin_rows(self, x: Any, predictions: NDArray[Any] | None) -> NDArray[np.int32]:
        """Flat bin indices `[N, columns]` of a batch (model input rows and their predictions)."""
        n = len(x)
        out = np.empty((n, len(self.columns)), dtype=np.int64)
        done: set[int] = set()
        if self._numeric.size and isinstance(x, np.ndarray) and x.dtype.kind in "fO":
            # numbers (an object batch holds Python floats there), as np.asarray(column, float64) does
            values = x[:, self._numeric_src].astype(np.float64, copy=False)
            idx = (self._edges[None, :, :] < values[:, :, None]).sum(axis=2)
            nan = np.isnan(values)
            if nan.any():
                idx = np.where(nan, self._null_bin[None, :], idx)
            out[:, self._numeric] = idx
            done.update(self._numeric.tolist())
        if self._categorical.size and isinstance(x, np.ndarray) and x.dtype.kind == "O":
            strings = self._bin_strings(x[:, self._categorical_src])
            if strings is not None:
                out[:, self._categorical] = strings
                done.update(self._categorical.tolist())
        for i, column in enumerate(self.columns):
            if i in done:
                continue
            if column.index < 0:
                if predictions is None:
                    out[:, i] = column.bins.bins  # null bin
                    continue
                values = predictions
            elif isinstance(x, np.ndarray):
                values = x[:, column.index]
            else:  # DataFrame
                values = x.iloc[:, column.index].to_numpy()
            out[:, i] = column.bins.bin(values)
        out += self.offsets[None, :]
        return out.astype(np.int32)

    def add(self, flat: NDArray[np.int32]) -> None:
        """Push a batch of binned rows, evicting the oldest ones beyond the capacity."""
        n = len(flat)
        if n == 0:
            return
        new = np.bincount(flat.ravel(), minlength=self.width)
        with self.lock:
            self.cumulative += new
            self.total_rows += n
            if n >= self.capacity:
                kept = flat[n - self.capacity :]
                self.ring[:] = kept
                self.position = 0
                self.filled = self.capacity
                self.counts = np.bincount(kept.ravel(), minlength=self.width).astype(np.int64)
                return
            slots = (self.position + np.arange(n)) % self.capacity
            if self.filled == self.capacity:
                evicted = self.ring[slots]
            else:  # slots at or past `filled` were never written
                evicted = self.ring[slots[slots < self.filled]]
            if evicted.size:
                self.counts -= np.bincount(evicted.ravel(), minlength=self.width)
            self.ring[slots] = flat
            self.counts += new
            self.position = int((self.position + n) % self.capacity)
            self.filled = min(self.capacity, self.filled + n)

    def snapshot(self) -> tuple[NDArray[np.int64], NDArray[np.int64], int, int]:
        """(window counts, cumulative counts, window rows, total rows), consistently."""
        with self.lock:
            return self.counts.copy(), self.cumulative.copy(), self.filled, self.total_rows

    def split(self, flat_counts: NDArray[np.int64]) -> Iterator[tuple[Column, NDArray[np.int64], int]]:
        """Per column: (column, counts over its bins, nulls)."""
        for column, start in zip(self.columns, self.offsets, strict=True):
            width = column.bins.bins
            yield column, flat_counts[start : start + width], int(flat_counts[start + width])


class FeedbackStore:
    """Predictions awaiting labels (by request id) and a window of labelled pairs."""

    def __init__(
        self,
        *,
        task: str,
        classes: NDArray[Any] | None,
        capacity: int = 10_000,
        max_requests: int = 10_000,
    ) -> None:
        self.task = task
        self.classes = classes
        self.capacity = capacity
        self.max_requests = max_requests
        self.pending: OrderedDict[str, NDArray[Any]] = OrderedDict()
        self.predicted = np.zeros(capacity, dtype=np.float64)
        self.labels = np.zeros(capacity, dtype=np.float64)
        self.filled = 0
        self.position = 0
        self.total = 0
        self.lock = threading.Lock()

    def remember(self, request_id: str, predictions: NDArray[Any]) -> None:
        pending = self.pending
        if request_id in pending:
            pending.move_to_end(request_id)
        pending[request_id] = predictions
        if len(pending) > self.max_requests:
            pending.popitem(last=False)

    def _encode(self, values: NDArray[Any], what: str) -> NDArray[np.float64]:
        if self.task == "classification" and self.classes is not None:
            idx = drift.bin_categorical(values, list(self.classes.tolist()))
            bad = idx >= len(self.classes)
            if bad.any():
                raise ValueError(f"{what} {values[bad][:3].tolist()} are not classes of the model")
            return idx.astype(np.float64)
        try:
            out = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be numbers") from exc
        if not np.isfinite(out).all():
            raise ValueError(f"{what} must be finite numbers")
        return out

    def add(self, labels: Sequence[Any], *, request_id: str | None, predictions: Sequence[Any] | None) -> int:
        """Record labels for a remembered request (by id) or for predictions given with them."""
        if predictions is None:
            if request_id is None:
                raise ValueError("feedback needs an `id` of an earlier request, or `predictions`")
            found = self.pending.get(request_id)
            if found is None:
                raise KeyError(request_id)
            predicted = found
        else:
            predicted = np.asarray(predictions)
        label_array = np.asarray(labels)
        if label_array.ndim != 1 or label_array.size != predicted.size:
            raise ValueError(f"{label_array.size} labels for {predicted.size} predictions")
        p = self._encode(predicted, "predictions")
        y = self._encode(label_array, "labels")
        if request_id is not None and predictions is None:
            self.pending.pop(request_id, None)
        count = len(p)
        with self.lock:
            self.total += count
            p, y = p[-self.capacity :], y[-self.capacity :]
            slots = (self.position + np.arange(len(p))) % self.capacity
            self.predicted[slots] = p
            self.labels[slots] = y
            self.position = int((self.position + len(p)) % self.capacity)
            self.filled = min(self.capacity, self.filled + len(p))
        return count

    def statistics(self) -> dict[str, Any]:
        """Sufficient statistics of the labelled window (the `feedback` of `/stats`)."""
        with self.lock:
            p = self.predicted[: self.filled].copy()
            y = self.labels[: self.filled].copy()
            total = self.total
        out: dict[str, Any] = {
            "task": self.task,
            "count": len(p),
            "totalCount": total,
            "capacity": self.capacity,
        }
        if self.task == "classification" and self.classes is not None:
            k = len(self.classes)
            cm = np.bincount((y.astype(np.int64) * k + p.astype(np.int64)), minlength=k * k).reshape(k, k)
            out["classes"] = self.classes.tolist()
            out["confusion"] = cm.tolist()
        else:
            err = y - p
            out.update(
                sumError=float(err.sum()),
                sumAbsError=float(np.abs(err).sum()),
                sumSquaredError=float((err * err).sum()),
                sumLabel=float(y.sum()),
                sumSquaredLabel=float((y * y).sum()),
            )
        return out


def prediction_bins(
    task: str, classes: NDArray[Any] | None, profile: Mapping[str, Any] | None, target: str | None
) -> drift.FeatureBins:
    """How predictions are counted: by class, or over the target's reference edges (if profiled)."""
    if task == "classification" and classes is not None:
        return drift.FeatureBins(
            "__prediction__", "categorical", np.empty(0), tuple(classes.tolist()), np.zeros(len(classes) + 1)
        )
    edges = np.asarray(DEFAULT_VALUE_EDGES)
    if profile is not None and target:
        for f in drift.feature_bins(profile):
            if f.name == target and f.kind == "numeric" and f.edges.size:
                edges = f.edges
    return drift.FeatureBins("__prediction__", "numeric", edges, (), np.zeros(edges.size + 1))


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
