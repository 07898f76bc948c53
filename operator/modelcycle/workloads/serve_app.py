"""The model server's endpoints, independent of the HTTP transport.

`InferenceApp.handle(method, path, query, headers, body)` returns a `Response`, or a future of one
for inference (answered when its micro-batch has run). `InferenceApp.infer` is the inference path
of any transport (REST here, gRPC in serve_grpc.py): one model, batcher, statistics and metrics.
Endpoints:

| method | path | what |
|---|---|---|
| GET | /v2/health/live, /v2/health/ready | liveness; readiness (503 while loading or shutting down) |
| GET | /v2 | server metadata |
| GET | /v2/models/{m}[/versions/{v}] | model metadata |
| GET | /v2/models/{m}[/versions/{v}]/ready | model readiness |
| POST | /v2/models/{m}[/versions/{v}]/infer | inference |
| GET | /v2/models/{m}[/versions/{v}]/drift | drift of the live window against the reference profile |
| GET | /v2/models/{m}[/versions/{v}]/stats | raw live window counts (for the ModelMonitor) |
| GET | /v2/models/{m}[/versions/{v}]/profile | the reference profile the counts are over |
| POST | /v2/models/{m}[/versions/{v}]/feedback | ground-truth labels |
| POST | /v2/repository/index | the one served model (tritonclient's repository index) |
| GET | /metrics | Prometheus exposition |

Errors are `{"error": "..."}` with 400 (bad request), 404 (unknown model, version or path),
405 (wrong method), 413 (body too large), 503 (not ready), 500 (bug); the transport adds 408, 414
and 431 (serve_http.Limits), and counts its refusals here through `refused`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

import numpy as np
import orjson
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelcycle import __version__
from modelcycle.workloads import drift
from modelcycle.workloads.serve_batching import Job, MicroBatcher, Outcome
from modelcycle.workloads.serve_logging import InferenceLogger, LogConfig
from modelcycle.workloads.serve_model import ServedModel
from modelcycle.workloads.serve_protocol import (
    HEADER_LENGTH,
    JSON,
    OCTET,
    InferenceRequest,
    ProtocolError,
    decode_infer,
    decompress,
    encode_infer_response,
    error_body,
    model_metadata,
)
from modelcycle.workloads.serve_stats import Column, FeedbackStore, LiveWindow, prediction_bins

log = logging.getLogger(__name__)

SERVER_NAME = "modelcycle"
EXTENSIONS = ["binary_tensor_data", "modelcycle_drift", "modelcycle_stats", "modelcycle_feedback"]
LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
R = TypeVar("R")
Encoder = Callable[[InferenceRequest, NDArray[Any], NDArray[np.float64] | None], R]
"""Turns a request's predictions (and probabilities) into the transport's answer."""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(status: int, value: Any) -> Response:
    return Response(status, orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def error(status: int, message: str) -> Response:
    return Response(status, error_body(message))


@dataclass
class DriftConfig:
    method: drift.Method = "ks"
    threshold: float = 0.05
    min_samples: int = 200
    correction: drift.Correction = "holm"


class _LiveCollector:
    """Prometheus view of the live statistics, read from numpy counts at scrape time."""

    DRIFT_TTL = 10.0
    """Seconds a drift report is reused across scrapes (KS p-values can take a while to compute)."""

    def __init__(self, app: InferenceApp) -> None:
        self.app = app
        self._drift_cache: tuple[float, dict[str, Any]] | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        app = self.app
        labels = [app.model.name, app.model.version]
        _, cumulative, window_rows, _ = app.window.snapshot()
        window = GaugeMetricFamily(
            "modelcycle_drift_window_rows", "Rows in the live drift window.", labels=["model", "version"]
        )
        window.add_metric(labels, window_rows)
        yield window
        bins = CounterMetricFamily(
            "modelcycle_feature_bin_rows",
            "Rows served per feature and reference bin (upper: the bin's upper edge, or its category).",
            labels=["model", "version", "feature", "bin", "upper"],
        )
        nulls = CounterMetricFamily(
            "modelcycle_feature_null_rows",
            "Rows served with a missing value, per feature.",
            labels=["model", "version", "feature"],
        )
        for column, col_counts, col_nulls in app.window.split(cumulative):
            fb = column.bins
            if column.index < 0:
                yield from self._predictions(fb, col_counts, labels)
                continue
            if fb.kind == "numeric":
                uppers = [repr(float(e)) for e in fb.edges] + ["+Inf"]
            else:
                uppers = [str(c) for c in fb.categories] + ["__unseen__"]
            for i, (upper, value) in enumerate(zip(uppers, col_counts.tolist(), strict=True)):
                bins.add_metric([*labels, fb.name, str(i), upper], value)
            nulls.add_metric([*labels, fb.name], col_nulls)
        yield bins
        yield nulls
        if app.profile is not None:
            yield from self._drift(labels, window_rows)
        yield from self._feedback(labels)

    def _predictions(
        self, fb: drift.FeatureBins, counts: NDArray[np.int64], labels: list[str]
    ) -> Iterable[Metric]:
        if fb.kind == "categorical":
            family = CounterMetricFamily(
                "modelcycle_predictions",
                "Predictions served per class.",
                labels=["model", "version", "class"],
            )
            for cls, value in zip(fb.categories, counts.tolist(), strict=False):
                family.add_metric([*labels, str(cls)], value)
            yield family
            return
        hist = HistogramMetricFamily(
            "modelcycle_prediction_value", "Regression predictions served.", labels=["model", "version"]
        )
        cumulative = np.cumsum(counts)
        buckets = [(repr(float(e)), int(c)) for e, c in zip(fb.edges, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", int(cumulative[-1])))
        hist.add_metric(labels, buckets, self.app.prediction_sum)
        yield hist

    def _drift(self, labels: list[str], window_rows: int) -> Iterable[Metric]:
        now = time.monotonic()
        if self._drift_cache is None or now - self._drift_cache[0] > self.DRIFT_TTL:
            self._drift_cache = (now, self.app.drift_report(self.app.drift_config))
        result = self._drift_cache[1]
        detected = GaugeMetricFamily(
            "modelcycle_drift_detected",
            "1 when some feature of the live window drifted from the reference.",
            labels=["model", "version"],
        )
        detected.add_metric(labels, 1.0 if result["drifted"] else 0.0)
        yield detected
        p_values = GaugeMetricFamily(
            "modelcycle_feature_drift_p_value",
            "Adjusted p-value of the drift test per feature (KS or chi-squared).",
            labels=["model", "version", "feature"],
        )
        psi = GaugeMetricFamily(
            "modelcycle_feature_psi",
            "Population stability index per feature.",
            labels=["model", "version", "feature"],
        )
        for row in result["features"]:
            p_values.add_metric([*labels, row["name"]], row["pValue"])
            psi.add_metric([*labels, row["name"]], row["psi"])
        yield p_values
        yield psi

    def _feedback(self, labels: list[str]) -> Iterable[Metric]:
        stats = self.app.feedback.statistics()
        total = CounterMetricFamily(
            "modelcycle_feedback_labels", "Ground-truth labels received.", labels=["model", "version"]
        )
        total.add_metric(labels, stats["totalCount"])
        yield total
        metrics = drift.performance(stats)
        gauge = GaugeMetricFamily(
            "modelcycle_live_metric",
            "Quality over the feedback window (accuracy, f1_macro, rmse, mae, r2).",
            labels=["model", "version", "metric"],
        )
        for name, value in metrics.items():
            if name != "count" and math.isfinite(value):
                gauge.add_metric([*labels, name], value)
        yield gauge


class InferenceApp:
    """One served model version behind the Open Inference Protocol v2 endpoints."""

    def __init__(
        self,
        model: ServedModel,
        *,
        profile: Mapping[str, Any] | None = None,
        drift_window: int = 10_000,
        drift_config: DriftConfig | None = None,
        max_batch_size: int = 64,
        max_delay: float = 0.002,
        executor: Any = None,
        max_body_bytes: int = 16 << 20,
        feedback_window: int = 10_000,
        log_config: LogConfig | None = None,
    ) -> None:
        self.model = model
        self.profile = profile
        self.drift_config = drift_config or DriftConfig()
        self.max_body_bytes = max_body_bytes
        self.ready = False
        """Readiness: false while loading and from the start of a shutdown."""
        self.serving = False
        """Inference accepted: from start until the queue is drained (so in-flight requests finish)."""
        self.replica = socket.gethostname()
        self.fingerprint = drift.profile_fingerprint(profile) if profile is not None else None
        columns: list[Column] = []
        if profile is not None:
            position = {name: i for i, name in enumerate(model.feature_names)}
            columns = [
                Column(fb, position[fb.name]) for fb in drift.feature_bins(profile) if fb.name in position
            ]
        self.prediction_column = Column(
            prediction_bins(model.task, model.classes, profile, model.target), index=-1
        )
        self.window = LiveWindow([*columns, self.prediction_column], drift_window)
        self.prediction_sum = 0.0
        self.feedback = FeedbackStore(task=model.task, classes=model.classes, capacity=feedback_window)
        self.batcher = MicroBatcher(
            lambda x, proba: model.predict(x, proba=proba),
            max_batch_size=max_batch_size,
            max_delay=max_delay,
            executor=executor,
            on_batch=self._record_batch,
            on_dispatch=self._record_dispatch,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        common = ["model", "version"]
        self._requests = Counter(
            "modelcycle_inference_requests",
            "Inference requests by outcome (success, client_error, server_error).",
            [*common, "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "modelcycle_inference_request_duration_seconds",
            "Time from a complete inference request to its response, by outcome.",
            [*common, "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._rows = Counter("modelcycle_inference_rows", "Rows predicted.", common, registry=self.registry)
        self._batch_rows = Histogram(
            "modelcycle_batch_rows",
            "Rows per predict call.",
            common,
            buckets=ROW_BUCKETS,
            registry=self.registry,
        )
        self._batch_requests = Histogram(
            "modelcycle_batch_requests",
            "Requests per predict call (micro-batching).",
            common,
            buckets=ROW_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self))
        labels = (model.name, model.version)
        self._outcomes = {
            o: (self._requests.labels(*labels, o), self._latency.labels(*labels, o))
            for o in ("success", "client_error", "server_error")
        }
        self._rows_child = self._rows.labels(*labels)
        self.logger = (
            None
            if log_config is None
            else InferenceLogger(
                log_config,
                model_name=model.name,
                model_version=model.version,
                features=model.feature_names,
                registry=self.registry,
            )
        )
        self._batch_rows_child = self._batch_rows.labels(*labels)
        self._batch_requests_child = self._batch_requests.labels(*labels)
        self._metadata = orjson.dumps(model_metadata(model))
        self._server_metadata = orjson.dumps(
            {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}
        )
        self._model_ready = orjson.dumps({"name": model.name, "ready": True})
        self._model_not_ready = orjson.dumps({"name": model.name, "ready": False})

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the micro-batcher on the running loop and report ready."""
        self.loop = asyncio.get_running_loop()
        self.batcher.start()
        if self.logger is not None:
            self.logger.start()
        self.serving = True
        self.ready = True

    async def close(self) -> None:
        """Stop reporting ready, finish the queued requests, write the inference log's last records."""
        self.ready = False
        await self.batcher.close()
        self.serving = False
        if self.logger is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.logger.close)

    # ------------------------------------------------------------------ statistics hooks

    def _record_batch(self, x: Any, predictions: NDArray[Any]) -> None:
        """Runs in the predict thread: bin the batch into the drift window."""
        if self.model.task == "regression":
            with np.errstate(all="ignore"):
                total = float(np.nansum(np.asarray(predictions, dtype=np.float64)))
            self.prediction_sum += total
        self.window.add(self.window.bin_rows(x, predictions))

    def _record_dispatch(self, requests: int, rows: int) -> None:
        self._batch_requests_child.observe(requests)
        self._batch_rows_child.observe(rows)
        self._rows_child.inc(rows)

    def _observe(self, outcome: str, started: float) -> None:
        counter, histogram = self._outcomes[outcome]
        counter.inc()
        histogram.observe(time.perf_counter() - started)

    def refused(self, status: int) -> None:
        """Count a request the HTTP transport refused before routing it (400, 408, 413, 414, 431)."""
        self._observe("server_error" if status >= 500 else "client_error", time.perf_counter())

    # ------------------------------------------------------------------ routing

    def handle(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Response | asyncio.Future[Response]:
        try:
            return self._route(method, path, query, headers, body)
        except ProtocolError as exc:
            return error(exc.status, str(exc))
        except Exception as exc:
            log.exception("%s %s failed", method, path)
            return error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _route(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Response | asyncio.Future[Response]:
        parts = path.strip("/").split("/")
        if parts[0] == "metrics" and len(parts) == 1:
            self._allow(method, "GET")
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if parts[0] != "v2":
            return error(404, f"no such path {path!r}")
        if len(parts) == 1:
            self._allow(method, "GET")
            return Response(200, self._server_metadata)
        if parts[1] == "health" and len(parts) == 3 and parts[2] in ("live", "ready"):
            self._allow(method, "GET")
            if parts[2] == "live":
                return json_response(200, {"live": True})
            return json_response(200 if self.ready else 503, {"ready": self.ready})
        if parts[1] == "repository" and parts[2:] == ["index"]:
            self._allow(method, "POST")
            state = "READY" if self.ready else "UNAVAILABLE"
            return json_response(
                200, [{"name": self.model.name, "version": self.model.version, "state": state}]
            )
        if parts[1] != "models" or len(parts) < 3:
            return error(404, f"no such path {path!r}")
        name, rest = parts[2], parts[3:]
        if name != self.model.name:
            return error(404, f"unknown model {name!r}; this server serves {self.model.name!r}")
        if len(rest) >= 2 and rest[0] == "versions":
            if rest[1] != self.model.version:
                return error(
                    404,
                    f"unknown version {rest[1]!r} of model {name!r}; "
                    f"this server serves {self.model.version!r}",
                )
            rest = rest[2:]
        if not rest:
            self._allow(method, "GET")
            return Response(200, self._metadata)
        if len(rest) != 1:
            return error(404, f"no such path {path!r}")
        action = rest[0]
        if action == "infer":
            self._allow(method, "POST")
            return self._infer(headers, body)
        if action == "ready":
            self._allow(method, "GET")
            return Response(200, self._model_ready) if self.ready else Response(503, self._model_not_ready)
        if action == "drift":
            self._allow(method, "GET")
            return self._drift(query)
        if action == "stats":
            self._allow(method, "GET")
            return json_response(200, self.stats())
        if action == "profile":
            # The ModelMonitor's drift reference: it aggregates /stats across replicas and compares
            # with this, so the operator never needs the artifact store (it checks the fingerprint).
            self._allow(method, "GET")
            if self.profile is None:
                return error(404, "no reference profile: start the server with --reference-profile")
            return json_response(
                200,
                {
                    "model": self.model.name,
                    "modelVersion": self.model.version,
                    "referenceFingerprint": self.fingerprint,
                    "profile": self.profile,
                },
            )
        if action == "feedback":
            self._allow(method, "POST")
            return self._feedback(headers, body)
        return error(404, f"no such path {path!r}")

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise ProtocolError(f"method {method} not allowed here; use {allowed}", 405)

    # ------------------------------------------------------------------ inference

    def _infer(self, headers: Mapping[str, str], body: bytes) -> Response | asyncio.Future[Response]:
        def decode() -> InferenceRequest:
            encoding = headers.get("content-encoding")
            raw = decompress(body, encoding.strip().lower(), self.max_body_bytes) if encoding else body
            return decode_infer(raw, headers.get(HEADER_LENGTH), self.model)

        return self.infer(decode, self._encode_rest, error)

    def _encode_rest(
        self, request: InferenceRequest, predictions: NDArray[Any], probabilities: NDArray[np.float64] | None
    ) -> Response:
        body, extra = encode_infer_response(self.model, request, predictions, probabilities)
        return Response(200, body, OCTET if extra else JSON, extra)

    def infer(
        self,
        decode: Callable[[], InferenceRequest],
        encode: Encoder[R],
        fail: Callable[[int, str], R],
        *,
        trickles: bool = False,
    ) -> R | asyncio.Future[R]:
        """One inference request of any transport: `decode` it, predict it in a micro-batch, `encode`
        the answer. Refusals and failures are `fail(http_status, message)`. Counted in the metrics
        and remembered for feedback the same way whatever the transport. `trickles`: see
        `serve_batching.Job`."""
        started = time.perf_counter()
        if not self.serving:
            self._observe("server_error", started)
            return fail(503, "the model is not ready")
        try:
            request = decode()
        except ProtocolError as exc:
            self._observe("client_error", started)
            return fail(exc.status, str(exc))
        future: asyncio.Future[R] = self.loop.create_future()

        def done(outcome: Outcome) -> None:
            if future.done():
                return
            future.set_result(self._respond(request, outcome, started, encode, fail))

        self.batcher.submit(Job(request.x, request.rows, request.wants_proba, done, trickles=trickles))
        return future

    def _respond(
        self,
        request: InferenceRequest,
        outcome: Outcome,
        started: float,
        encode: Encoder[R],
        fail: Callable[[int, str], R],
    ) -> R:
        if isinstance(outcome, BaseException):
            if isinstance(outcome, ValueError | TypeError | KeyError):
                self._observe("client_error", started)
                return fail(400, f"prediction failed: {outcome}")
            log.error("predict failed", exc_info=outcome)
            self._observe("server_error", started)
            return fail(500, f"prediction failed: {type(outcome).__name__}: {outcome}")
        predictions, probabilities = outcome
        try:
            answer = encode(request, predictions, probabilities)
        except Exception as exc:
            log.exception("encoding the response failed")
            self._observe("server_error", started)
            return fail(500, f"encoding the response failed: {exc}")
        if request.id is not None:
            self.feedback.remember(request.id, predictions)
        if self.logger is not None:
            self.logger.log_request(request.id, request.x, predictions)
        self._observe("success", started)
        return answer

    # ------------------------------------------------------------------ drift, stats, feedback

    def stats(self) -> dict[str, Any]:
        """The live-statistics JSON (docs/serving.md): window counts per feature, predictions, feedback."""
        counts, _, rows, total = self.window.snapshot()
        features: dict[str, Any] = {}
        predictions: dict[str, Any] = {}
        for column, col_counts, nulls in self.window.split(counts):
            fb = column.bins
            entry: dict[str, Any] = {"kind": fb.kind, "counts": col_counts.tolist(), "nulls": nulls}
            if column.index < 0:
                if fb.kind == "categorical":  # no "unseen" bin: a model predicts only its classes
                    predictions = {"kind": "classes", "classes": list(fb.categories), "nulls": nulls}
                    predictions["counts"] = col_counts[:-1].tolist()
                else:
                    predictions = {**entry, "kind": "values", "binEdges": fb.edges.tolist()}
                continue
            features[fb.name] = entry
        return {
            "version": drift.STATS_VERSION,
            "model": self.model.name,
            "modelVersion": self.model.version,
            "replica": self.replica,
            "referenceFingerprint": self.fingerprint,
            "windowCapacity": self.window.capacity,
            "rows": rows,
            "totalRows": total,
            "features": features,
            "predictions": predictions,
            "feedback": self.feedback.statistics(),
        }

    def drift_report(self, config: DriftConfig) -> dict[str, Any]:
        if self.profile is None:
            raise ProtocolError("no reference profile: start the server with --reference-profile", 404)
        result = drift.detect(
            self.profile,
            self.stats(),
            method=config.method,
            threshold=config.threshold,
            min_samples=config.min_samples,
            correction=config.correction,
        )
        result["model"] = self.model.name
        result["modelVersion"] = self.model.version
        result["windowCapacity"] = self.window.capacity
        return result

    def _drift(self, query: str) -> Response:
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        base = self.drift_config
        try:
            config = DriftConfig(
                method=params.get("method", base.method),  # type: ignore[arg-type]
                threshold=float(params.get("threshold", base.threshold)),
                min_samples=int(params.get("minSamples", base.min_samples)),
                correction=params.get("correction", base.correction),  # type: ignore[arg-type]
            )
        except ValueError as exc:
            raise ProtocolError(f"bad query parameter: {exc}") from exc
        if config.method not in ("ks", "chi2", "psi", "jsd"):
            raise ProtocolError(f"unknown method {config.method!r}; use ks, chi2, psi or jsd")
        if config.correction not in ("holm", "bh", "none"):
            raise ProtocolError(f"unknown correction {config.correction!r}; use holm, bh or none")
        if not (config.threshold > 0 and config.min_samples >= 1):
            raise ProtocolError("threshold must be > 0 and minSamples >= 1")
        return json_response(200, self.drift_report(config))

    def _feedback_inputs(self, value: Any, rows: int) -> NDArray[Any]:
        """The `inputs` of a feedback item: rows in feature order, or columns by feature name."""
        names = self.model.feature_names
        if isinstance(value, dict):
            missing = [n for n in names if n not in value]
            if missing:
                raise ProtocolError(f"`inputs` lacks the features {missing[:5]}")
            columns = [value[n] for n in names]
            if not all(isinstance(c, list) and len(c) == rows for c in columns):
                raise ProtocolError(f"every feature of `inputs` needs a list of {rows} values")
            return np.array(columns, dtype=object).T.reshape(rows, len(names))
        if not isinstance(value, list) or len(value) != rows:
            raise ProtocolError(f"`inputs` must hold {rows} rows (one per label)")
        if not all(isinstance(r, list) and len(r) == len(names) for r in value):
            raise ProtocolError(f"each row of `inputs` needs {len(names)} values, in feature order")
        return np.array(value, dtype=object).reshape(rows, len(names))

    def _feedback(self, headers: Mapping[str, str], body: bytes) -> Response:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"body is not valid JSON: {exc}") from exc
        items = payload if isinstance(payload, list) else [payload]
        parsed: list[tuple[str | None, list[Any], list[Any] | None, NDArray[Any] | None]] = []
        for item in items:
            if not isinstance(item, dict):
                raise ProtocolError("feedback must be an object or a list of objects")
            request_id = item.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise ProtocolError("`id` must be a string")
            labels = item.get("labels", [item["label"]] if "label" in item else None)
            if not isinstance(labels, list) or not labels:
                raise ProtocolError("feedback needs `labels` (a list) or `label`")
            predictions = item.get("predictions")
            if predictions is not None and not isinstance(predictions, list):
                raise ProtocolError("`predictions` must be a list")
            x = None if item.get("inputs") is None else self._feedback_inputs(item["inputs"], len(labels))
            if x is not None and self.logger is None:
                raise ProtocolError("feedback with `inputs` is only kept when inference logging is on")
            if request_id is None and predictions is None and x is None:
                raise ProtocolError(
                    "feedback needs the `id` of an inference request, `predictions` or `inputs`"
                )
            parsed.append((request_id, labels, predictions, x))
        accepted = 0
        persisted = 0
        unknown: list[str] = []
        for request_id, labels, predictions, _ in parsed:
            if request_id is None and predictions is None:
                continue
            try:
                accepted += self.feedback.add(labels, request_id=request_id, predictions=predictions)
            except KeyError:
                unknown.append(str(request_id))
            except ValueError as exc:
                raise ProtocolError(f"feedback for {request_id or 'predictions'}: {exc}") from exc
        if self.logger is not None:
            for request_id, labels, _, x in parsed:
                if self.logger.log_feedback(request_id, labels, x):
                    persisted += len(labels)
        stats = self.feedback.statistics()
        result: dict[str, Any] = {
            "accepted": accepted,
            "unknownIds": unknown,
            "metrics": drift.performance(stats),
        }
        if self.logger is not None:
            # Kept for the offline join, which matches ids served by any replica.
            result["persisted"] = persisted
        if unknown and not accepted and not persisted:
            return Response(
                404,
                orjson.dumps(
                    {"error": f"unknown request ids {unknown} (expired or served elsewhere)", **result}
                ),
            )
        return json_response(200, result)


AppFactory = Callable[[], InferenceApp]
