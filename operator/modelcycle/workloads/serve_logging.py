"""Inference logging: what a model server served, and the labels it was told, as Parquet segments.

The data flywheel's first step (docs/serving.md, "Inference logging"). `modelcycle serve
--log-sample-rate R` keeps a sample of its requests (inputs, outputs, model name and version, request
id, time) and every feedback label it receives, and writes them to the artifact store as rolling
Parquet segments, so a Dataset with a `traffic` source can join them offline by request id, whatever
replica served a request or took its labels.

Layout (keys relative to the store root; `<day>` is the UTC date of the segment's first record):

    inference-logs/<namespace>/<deployment>/date=<day>/<ms>-<replica>-<pid>-<seq>.parquet
    feedback/<namespace>/<deployment>/date=<day>/<ms>-<replica>-<pid>-<seq>.parquet

A request segment has the columns `_request_id`, `_row` (the row's index in its request), `_time`
(unix seconds), `_model`, `_version`, `_replica`, `_prediction` and one column per feature, named as
the feature. A feedback segment has `_request_id` (null for labelled rows sent with their features),
`_row`, `_time`, `_model`, `_version`, `_replica`, `_label`, and the feature columns when the
feedback carried the features. The Parquet schema metadata key `modelcycle.log` names the stream
and the feature columns.

Guarantees:

- Inference never waits for the store. Records go to a bounded in-memory buffer (`buffer_rows`
  rows, both streams together, counting rows still being written); a full buffer drops the record
  and counts it (`modelcycle_inference_log_rows_dropped_total{reason="buffer_full"}`), and a write
  that fails drops its rows and counts them (`reason="store_error"`).
- A background thread writes a segment every `flush_interval` seconds, or as soon as `segment_rows`
  rows are waiting, and on `close()` (SIGTERM, after the drain) it writes what is left.
- Segments are written atomically by the store (a hidden temporary file, fsync, rename; one PUT on
  S3), so a crash or a SIGKILL at any moment leaves only complete segments under their final names:
  at most the records not yet flushed are lost.
- Sampling is by request id (a hash), so every replica keeps or skips the same requests; a request
  without an id is sampled at random and logged under a generated id.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter

from modelcycle.workloads import store as store_mod

log = logging.getLogger(__name__)

REQUESTS_PREFIX = "inference-logs"
FEEDBACK_PREFIX = "feedback"
META_KEY = b"modelcycle.log"
LOG_VERSION = 1
Stream = Literal["requests", "feedback"]
STREAMS: tuple[Stream, ...] = ("requests", "feedback")
REQUEST_ID = "_request_id"
ROW = "_row"
TIME = "_time"
MODEL = "_model"
VERSION = "_version"
REPLICA = "_replica"
PREDICTION = "_prediction"
LABEL = "_label"
RESERVED = (REQUEST_ID, ROW, TIME, MODEL, VERSION, REPLICA, PREDICTION, LABEL)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def stream_prefix(stream: Stream, namespace: str, deployment: str | None = None) -> str:
    """`inference-logs/<ns>/[<deployment>/]` or `feedback/<ns>/[<deployment>/]`."""
    top = REQUESTS_PREFIX if stream == "requests" else FEEDBACK_PREFIX
    return "/".join(p for p in (top, namespace, deployment) if p) + "/"


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request id is in the sample: the same answer on every replica."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return (zlib.crc32(request_id.encode("utf-8", "surrogatepass")) & 0xFFFFFFFF) < rate * 2**32


@dataclass(frozen=True)
class LogConfig:
    """Where and how much to log (`modelcycle serve --log-*`, ModelDeployment.spec.logging)."""

    store: store_mod.ArtifactStore
    namespace: str
    deployment: str
    sample_rate: float = 1.0
    flush_interval: float = 10.0
    segment_rows: int = 10_000
    buffer_rows: int = 100_000
    replica: str = field(default_factory=lambda: os.environ.get("POD_NAME") or os.uname().nodename)


@dataclass
class _Entry:
    request_id: str | None
    time: float
    x: NDArray[Any] | None
    values: NDArray[Any]
    """Predictions (requests) or labels (feedback), one per row."""

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])


def _column(values: NDArray[Any] | Sequence[Any]) -> Any:
    """A pyarrow array of one column: numbers stay numbers, anything else is text (nulls kept)."""
    import pyarrow as pa

    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return pa.array(arr)
    items = arr.tolist()
    if all(isinstance(v, bool) for v in items):
        return pa.array(items, type=pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return pa.array(items, type=pa.int64())
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in items):
        return pa.array([None if v is None else float(v) for v in items], type=pa.float64())
    return pa.array([None if v is None else str(v) for v in items], type=pa.string())


def segment_bytes(
    stream: Stream,
    entries: Sequence[_Entry],
    *,
    model: str,
    version: str,
    replica: str,
    features: Sequence[str],
) -> bytes:
    """One Parquet segment of `entries` (all of the same stream)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sum(e.rows for e in entries)
    ids: list[str | None] = []
    row_index: list[NDArray[np.int64]] = []
    times: list[NDArray[np.float64]] = []
    for e in entries:
        ids.extend([e.request_id] * e.rows)
        row_index.append(np.arange(e.rows, dtype=np.int64))
        times.append(np.full(e.rows, e.time, dtype=np.float64))
    columns: dict[str, Any] = {
        REQUEST_ID: pa.array(ids, type=pa.string()),
        ROW: pa.array(np.concatenate(row_index) if row_index else np.zeros(0, np.int64)),
        TIME: pa.array(np.concatenate(times) if times else np.zeros(0)),
        MODEL: pa.array([model] * rows, type=pa.string()).dictionary_encode(),
        VERSION: pa.array([version] * rows, type=pa.string()).dictionary_encode(),
        REPLICA: pa.array([replica] * rows, type=pa.string()).dictionary_encode(),
    }
    values = [e.values for e in entries]
    columns[PREDICTION if stream == "requests" else LABEL] = _column(
        np.concatenate(values) if values else np.zeros(0)
    )
    logged_features: list[str] = []
    if features and any(e.x is not None for e in entries):
        width = len(features)
        blocks = [e.x if e.x is not None else np.full((e.rows, width), None, dtype=object) for e in entries]
        x = np.concatenate([np.asarray(b).reshape(-1, width) for b in blocks])
        for i, name in enumerate(features):
            columns[name] = _column(x[:, i])
        logged_features = list(features)
    meta = {"stream": stream, "version": LOG_VERSION, "features": logged_features}
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class InferenceLogger:
    """A bounded buffer of served requests and feedback labels, flushed to the store by a thread."""

    def __init__(
        self,
        config: LogConfig,
        *,
        model_name: str,
        model_version: str,
        features: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.model_name = model_name
        self.model_version = model_version
        self.features = list(features)
        self.replica = _UNSAFE.sub("-", config.replica).strip("-.") or "replica"
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._buffers: dict[Stream, list[_Entry]] = {s: [] for s in STREAMS}
        self._buffered: dict[Stream, int] = {s: 0 for s in STREAMS}
        self._held = 0
        """Rows in memory: buffered plus being written. Bounded by config.buffer_rows."""
        self._closing = False
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._last_error = 0.0
        registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        labels = ["model", "version", "stream"]
        self._logged = Counter(
            "modelcycle_inference_log_rows_logged",
            "Rows accepted into the inference log buffer, by stream (requests, feedback).",
            labels,
            registry=registry,
        )
        self._dropped = Counter(
            "modelcycle_inference_log_rows_dropped",
            "Rows not logged: the buffer was full (the store is slow) or the write failed.",
            [*labels, "reason"],
            registry=registry,
        )
        self._flushed = Counter(
            "modelcycle_inference_log_rows_flushed",
            "Rows written to the artifact store in complete segments.",
            labels,
            registry=registry,
        )
        self._segments = Counter(
            "modelcycle_inference_log_segments",
            "Parquet segments written to the artifact store.",
            labels,
            registry=registry,
        )
        ident = (model_name, model_version)
        self._counters = {
            s: (
                self._logged.labels(*ident, s),
                self._dropped.labels(*ident, s, "buffer_full"),
                self._dropped.labels(*ident, s, "store_error"),
                self._flushed.labels(*ident, s),
                self._segments.labels(*ident, s),
            )
            for s in STREAMS
        }

    # ------------------------------------------------------------------ producers (any thread)

    def log_request(self, request_id: str | None, x: NDArray[Any], predictions: NDArray[Any]) -> bool:
        """Keep one served request if it is in the sample and the buffer has room. Never blocks
        for long: the lock is only held to append."""
        rate = self.config.sample_rate
        if request_id is None:
            if rate < 1.0 and random.random() >= rate:
                return False
            request_id = "gen-" + uuid.uuid4().hex
        elif not sampled(request_id, rate):
            return False
        values = np.asarray(predictions).reshape(-1)
        return self._add("requests", _Entry(request_id, time.time(), x, values))

    def log_feedback(
        self, request_id: str | None, labels: Sequence[Any], x: NDArray[Any] | None = None
    ) -> bool:
        """Keep the labels of one request (by id, whatever replica served it) or of rows given with
        their features (`x`). Not sampled: a label is rarer and worth more than a request."""
        values = np.asarray(list(labels), dtype=object)
        if x is not None:
            x = np.asarray(x).reshape(values.shape[0], len(self.features))
        return self._add("feedback", _Entry(request_id, time.time(), x, values))

    def _add(self, stream: Stream, entry: _Entry) -> bool:
        logged, full, _, _, _ = self._counters[stream]
        with self._lock:
            if self._closing or self._held + entry.rows > self.config.buffer_rows:
                full.inc(entry.rows)
                return False
            self._buffers[stream].append(entry)
            self._buffered[stream] += entry.rows
            self._held += entry.rows
            if self._buffered[stream] >= self.config.segment_rows:
                self._wake.notify()
        logged.inc(entry.rows)
        return True

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop taking records, write what is buffered, stop the thread. False if it timed out."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        if self._thread is None:
            self.flush()
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        deadline = time.monotonic() + self.config.flush_interval
        while True:
            with self._lock:
                while not self._closing and not self._full_segment() and time.monotonic() < deadline:
                    self._wake.wait(max(0.0, deadline - time.monotonic()))
                closing = self._closing
            if time.monotonic() >= deadline or closing:
                self.flush()
                deadline = time.monotonic() + self.config.flush_interval
            else:
                self.flush(full_only=True)
            if closing:
                return

    def _full_segment(self) -> bool:
        return any(n >= self.config.segment_rows for n in self._buffered.values())

    # ------------------------------------------------------------------ writing (flusher thread)

    def flush(self, *, full_only: bool = False) -> int:
        """Write the buffered records as segments of at most `segment_rows` rows; rows written."""
        written = 0
        for stream in STREAMS:
            with self._lock:
                if full_only and self._buffered[stream] < self.config.segment_rows:
                    continue
                entries, self._buffers[stream] = self._buffers[stream], []
                self._buffered[stream] = 0
            for chunk in self._chunks(entries):
                written += self._write(stream, chunk)
        return written

    def _chunks(self, entries: list[_Entry]) -> list[list[_Entry]]:
        chunks: list[list[_Entry]] = []
        current: list[_Entry] = []
        rows = 0
        for entry in entries:
            if current and rows + entry.rows > self.config.segment_rows:
                chunks.append(current)
                current, rows = [], 0
            current.append(entry)
            rows += entry.rows
        if current:
            chunks.append(current)
        return chunks

    def segment_key(self, stream: Stream, first_time: float) -> str:
        self._seq += 1
        day = time.strftime("%Y-%m-%d", time.gmtime(first_time))
        name = f"{int(first_time * 1000):013d}-{self.replica}-{os.getpid()}-{self._seq:06d}.parquet"
        prefix = stream_prefix(stream, self.config.namespace, self.config.deployment)
        return f"{prefix}date={day}/{name}"

    def _write(self, stream: Stream, entries: list[_Entry]) -> int:
        rows = sum(e.rows for e in entries)
        _, _, failed, flushed, segments = self._counters[stream]
        try:
            data = segment_bytes(
                stream,
                entries,
                model=self.model_name,
                version=self.model_version,
                replica=self.replica,
                features=self.features,
            )
            self.config.store.put_bytes(self.segment_key(stream, entries[0].time), data)
        except Exception as exc:  # a full or unavailable store must never reach inference
            failed.inc(rows)
            now = time.monotonic()
            if now - self._last_error > 60:
                self._last_error = now
                log.warning("inference log: %d %s rows dropped: %s", rows, stream, exc)
            return 0
        finally:
            with self._lock:
                self._held -= rows
        flushed.inc(rows)
        segments.inc()
        return rows

    def statistics(self) -> dict[str, Any]:
        def value(counter: Any) -> int:
            with contextlib.suppress(Exception):
                return int(counter._value.get())
            return 0

        out: dict[str, Any] = {"sampleRate": self.config.sample_rate, "bufferedRows": self._held}
        for stream, (logged, full, failed, flushed, segments) in self._counters.items():
            out[stream] = {
                "logged": value(logged),
                "dropped": value(full) + value(failed),
                "flushed": value(flushed),
                "segments": value(segments),
            }
        return out
