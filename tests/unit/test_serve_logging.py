"""Inference logging: complete Parquet segments, bounded memory, flush on shutdown, crash safety.

The logger alone (a real LocalStore, stores that are slow or broken), then `modelcycle serve` with
logging on: REST and gRPC requests and feedback land in segments, SIGTERM flushes them, SIGKILL
mid-write leaves only readable segments.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import tritonclient.grpc as grpcclient

from modelcycle.workloads import serve_logging
from modelcycle.workloads.store import LocalStore, StoreUnavailable
from support import models
from support.oip_server import ServerProcess, serve

FEATURES = ["a", "b"]


def make_logger(store: Any, **config: Any) -> serve_logging.InferenceLogger:
    settings = {"flush_interval": 60.0, "segment_rows": 1000, "buffer_rows": 10_000, "replica": "r1"}
    settings.update(config)
    return serve_logging.InferenceLogger(
        serve_logging.LogConfig(store=store, namespace="ml", deployment="iris", **settings),
        model_name="iris",
        model_version="3",
        features=FEATURES,
    )


def segments(root: Path, stream: str = "inference-logs") -> list[Path]:
    return sorted(p for p in (root / stream).rglob("*.parquet") if not p.name.startswith("."))


def read_all(root: Path, stream: str = "inference-logs") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in segments(root, stream):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


class SlowStore(LocalStore):
    """A store whose writes wait until released: the store is slow, inference must not be."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def put_bytes(self, key: str, data: bytes) -> str:
        self.release.wait(30)
        return super().put_bytes(key, data)


class BrokenStore(LocalStore):
    def put_bytes(self, key: str, data: bytes) -> str:
        raise StoreUnavailable("no space left on device")


def test_segments_hold_each_row_with_its_request_identity_and_output(tmp_path: Path) -> None:
    logger = make_logger(LocalStore(tmp_path))
    logger.start()
    assert logger.log_request("req-1", np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0, 1]))
    assert logger.log_request("req-2", np.array([[5.0, 6.0]]), np.array([2]))
    assert logger.log_feedback("req-1", [0, 0])
    assert logger.close()
    [segment] = segments(tmp_path)
    key = segment.relative_to(tmp_path).as_posix()
    assert key.startswith("inference-logs/ml/iris/date=") and "-r1-" in key
    table = pq.read_table(segment)
    meta = json.loads(table.schema.metadata[serve_logging.META_KEY])
    assert meta == {"stream": "requests", "version": 1, "features": FEATURES}
    rows = table.to_pylist()
    assert [(r["_request_id"], r["_row"], r["a"], r["b"], r["_prediction"]) for r in rows] == [
        ("req-1", 0, 1.0, 2.0, 0),
        ("req-1", 1, 3.0, 4.0, 1),
        ("req-2", 0, 5.0, 6.0, 2),
    ]
    assert {(r["_model"], r["_version"], r["_replica"]) for r in rows} == {("iris", "3", "r1")}
    assert all(abs(r["_time"] - time.time()) < 60 for r in rows)
    labels = read_all(tmp_path, "feedback")
    assert [(r["_request_id"], r["_row"], r["_label"]) for r in labels] == [("req-1", 0, 0), ("req-1", 1, 0)]
    stats = logger.statistics()
    assert stats["requests"] == {"logged": 3, "dropped": 0, "flushed": 3, "segments": 1}
    assert stats["feedback"]["flushed"] == 2


@pytest.mark.parametrize(
    ("rows", "segment_rows", "expected"),
    [(12, 5, [5, 5, 2]), (4, 5, [4]), (10, 5, [5, 5])],
    ids=["remainder", "under-one-segment", "exact"],
)
def test_a_segment_holds_at_most_segment_rows(
    tmp_path: Path, rows: int, segment_rows: int, expected: list[int]
) -> None:
    logger = make_logger(LocalStore(tmp_path), segment_rows=segment_rows)
    for i in range(rows):
        logger.log_request(f"id-{i}", np.array([[float(i), 0.0]]), np.array([i]))
    logger.close()
    assert sorted((pq.read_metadata(p).num_rows for p in segments(tmp_path)), reverse=True) == expected
    assert sorted(r["_request_id"] for r in read_all(tmp_path)) == sorted(f"id-{i}" for i in range(rows))


def test_segments_are_written_on_the_flush_interval_without_a_shutdown(tmp_path: Path) -> None:
    logger = make_logger(LocalStore(tmp_path), flush_interval=0.2)
    logger.start()
    try:
        logger.log_request("early", np.array([[1.0, 1.0]]), np.array([1]))
        deadline = time.monotonic() + 10
        while not segments(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["_request_id"] for r in read_all(tmp_path)] == ["early"]
    finally:
        logger.close()


def test_a_full_segment_is_written_before_the_interval(tmp_path: Path) -> None:
    logger = make_logger(LocalStore(tmp_path), flush_interval=3600, segment_rows=3)
    logger.start()
    try:
        logger.log_request("x", np.zeros((3, 2)), np.zeros(3))
        deadline = time.monotonic() + 10
        while not segments(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(read_all(tmp_path)) == 3
    finally:
        logger.close()


def test_a_slow_store_bounds_memory_drops_and_counts_and_never_blocks(tmp_path: Path) -> None:
    store = SlowStore(tmp_path)
    logger = make_logger(store, flush_interval=0.05, segment_rows=10, buffer_rows=50)
    logger.start()
    started = time.perf_counter()
    kept = sum(logger.log_request(f"r{i}", np.zeros((5, 2)), np.zeros(5)) for i in range(100))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"logging 100 requests took {elapsed:.2f}s against a stuck store"
    assert kept == 10  # 50 rows of 5-row requests; the rest dropped
    stats = logger.statistics()
    assert stats["bufferedRows"] <= 50
    assert stats["requests"]["logged"] == 50 and stats["requests"]["dropped"] == 450
    store.release.set()
    assert logger.close()
    assert len(read_all(tmp_path)) == 50
    assert logger.statistics()["bufferedRows"] == 0


def test_a_failing_store_drops_and_counts_the_rows_of_the_failed_write(tmp_path: Path) -> None:
    logger = make_logger(BrokenStore(tmp_path))
    assert logger.log_request("a", np.zeros((4, 2)), np.zeros(4))
    assert logger.close()
    stats = logger.statistics()
    assert stats["requests"] == {"logged": 4, "dropped": 4, "flushed": 0, "segments": 0}
    assert stats["bufferedRows"] == 0 and not segments(tmp_path)


def test_records_after_close_are_dropped_and_counted(tmp_path: Path) -> None:
    logger = make_logger(LocalStore(tmp_path))
    logger.close()
    assert not logger.log_request("late", np.zeros((1, 2)), np.zeros(1))
    assert logger.statistics()["requests"]["dropped"] == 1


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9], ids=["10pct", "50pct", "90pct"])
def test_sampling_by_request_id_is_deterministic_and_near_the_rate(rate: float) -> None:
    ids = [f"request-{i}" for i in range(20_000)]
    chosen = [serve_logging.sampled(i, rate) for i in ids]
    assert chosen == [serve_logging.sampled(i, rate) for i in ids]
    assert abs(sum(chosen) / len(ids) - rate) < 0.02


def test_feedback_with_features_keeps_the_features_and_mixed_labels_as_text(tmp_path: Path) -> None:
    logger = make_logger(LocalStore(tmp_path))
    logger.log_feedback(None, ["yes", 1], np.array([[1.0, 2.0], [3.0, 4.0]], dtype=object))
    logger.close()
    rows = read_all(tmp_path, "feedback")
    assert [(r["_request_id"], r["a"], r["b"], r["_label"]) for r in rows] == [
        (None, 1.0, 2.0, "yes"),
        (None, 3.0, 4.0, "1"),
    ]


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> models.ModelDir:
    return models.iris_classifier(tmp_path_factory.mktemp("iris"))


def logging_server(iris: models.ModelDir, store: Path, *extra: str):  # type: ignore[no-untyped-def]
    args = ("--store", str(store), "--log-sample-rate", "1", "--log-namespace", "ml")
    return serve(iris.path, name="iris", version="3", args=(*args, "--log-deployment", "iris-prod", *extra))


def infer(server: ServerProcess, rows: np.ndarray, request_id: str) -> requests.Response:
    body = {
        "id": request_id,
        "inputs": [{"name": "x", "datatype": "FP64", "shape": list(rows.shape), "data": rows.tolist()}],
    }
    return server.post("/v2/models/iris/infer", json=body)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "store"


def test_rest_and_grpc_requests_and_feedback_are_logged_and_flushed_on_sigterm(
    iris: models.ModelDir, store: Path
) -> None:
    with logging_server(iris, store, "--log-flush-seconds", "3600") as server:
        assert infer(server, iris.x[:3], "rest-1").status_code == 200
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
        tensor = grpcclient.InferInput("x", [2, 4], "FP64")
        tensor.set_data_from_numpy(iris.x[3:5].astype(np.float64))
        client.infer("iris", [tensor], request_id="grpc-1")
        client.close()
        feedback = server.post(
            "/v2/models/iris/feedback",
            json=[{"id": "rest-1", "labels": [0, 0, 0]}, {"id": "served-elsewhere", "labels": [1]}],
        )
        assert feedback.status_code == 200, feedback.text
        assert feedback.json()["persisted"] == 4 and feedback.json()["unknownIds"] == ["served-elsewhere"]
        metrics = server.get("/metrics").text
        assert (
            'modelcycle_inference_log_rows_logged_total{model="iris",stream="requests",version="3"} 5.0'
            in (metrics)
        )
        assert not segments(store)  # nothing flushed before the shutdown
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    rows = read_all(store)
    assert sorted((r["_request_id"], r["_row"]) for r in rows) == [
        ("grpc-1", 0),
        ("grpc-1", 1),
        ("rest-1", 0),
        ("rest-1", 1),
        ("rest-1", 2),
    ]
    assert all(
        p.relative_to(store).as_posix().startswith("inference-logs/ml/iris-prod/") for p in segments(store)
    )
    by_id = {(r["_request_id"], r["_row"]): r for r in rows}
    assert by_id[("rest-1", 0)][iris.features[0]] == pytest.approx(iris.x[0, 0])
    labels = read_all(store, "feedback")
    assert sorted(r["_request_id"] for r in labels) == ["rest-1", "rest-1", "rest-1", "served-elsewhere"]


def test_a_sigkill_while_logging_leaves_every_finished_segment_readable(
    iris: models.ModelDir, store: Path
) -> None:
    extra = ("--log-flush-seconds", "0.05", "--log-segment-rows", "20")
    with logging_server(iris, store, *extra) as server:
        stop = threading.Event()
        sent: list[str] = []

        def load() -> None:
            i = 0
            session = requests.Session()
            while not stop.is_set():
                request_id = f"k-{i}"
                try:
                    body = {
                        "id": request_id,
                        "inputs": [
                            {"name": "x", "datatype": "FP64", "shape": [4, 4], "data": iris.x[:4].tolist()}
                        ],
                    }
                    if session.post(f"{server.url}/v2/models/iris/infer", json=body, timeout=5).ok:
                        sent.append(request_id)
                except requests.RequestException:
                    return
                i += 1

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while len(segments(store)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        stop.set()
        worker.join(10)
    finished = segments(store)
    assert len(finished) >= 10
    logged: set[str] = set()
    for path in finished:
        table = pq.read_table(path)  # raises on a torn file
        assert table.num_rows > 0 and table.num_rows % 4 == 0
        logged.update(table.column("_request_id").to_pylist())
    assert logged <= set(sent) | {f"k-{len(sent)}"}  # the one in flight may be logged, not answered
    assert len(logged) >= 0.5 * len(sent)


def test_an_unwritable_store_never_fails_a_request_and_counts_the_dropped_rows(
    iris: models.ModelDir, tmp_path: Path
) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directories should go")
    with logging_server(iris, blocker, "--log-flush-seconds", "0.1") as server:
        for i in range(5):
            assert infer(server, iris.x[:2], f"r-{i}").status_code == 200
        feedback = server.post("/v2/models/iris/feedback", json={"id": "r-0", "labels": [0, 0]})
        assert feedback.status_code == 200

        def dropped() -> str:
            lines = server.get("/metrics").text.splitlines()
            return next(
                (
                    line
                    for line in lines
                    if line.startswith("modelcycle_inference_log_rows_dropped_total")
                    and 'reason="store_error"' in line
                    and 'stream="requests"' in line
                    and line.endswith(" 10.0")
                ),
                "",
            )

        deadline = time.monotonic() + 10
        while not dropped() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dropped(), server.get("/metrics").text
        assert infer(server, iris.x[:1], "after").status_code == 200


def test_feedback_with_inputs_is_kept_as_labelled_rows(iris: models.ModelDir, store: Path) -> None:
    with logging_server(iris, store, "--log-flush-seconds", "3600") as server:
        rows = iris.x[:2].tolist()
        by_row = server.post("/v2/models/iris/feedback", json={"inputs": rows, "labels": [0, 1]})
        assert by_row.status_code == 200 and by_row.json()["persisted"] == 2, by_row.text
        columns = {name: [row[i] for row in rows] for i, name in enumerate(iris.features)}
        by_name = server.post("/v2/models/iris/feedback", json={"inputs": columns, "labels": [2, 2]})
        assert by_name.status_code == 200 and by_name.json()["persisted"] == 2, by_name.text
        short = server.post("/v2/models/iris/feedback", json={"inputs": rows[:1], "labels": [0, 1]})
        assert short.status_code == 400 and "2 rows" in short.json()["error"]
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    labels = read_all(store, "feedback")
    assert [(r["_request_id"], r["_label"]) for r in labels] == [(None, 0), (None, 1), (None, 2), (None, 2)]
    assert labels[0][iris.features[0]] == pytest.approx(iris.x[0, 0])


def test_feedback_with_inputs_needs_logging_on(iris: models.ModelDir) -> None:
    with serve(iris.path, name="iris", version="3") as server:
        refused = server.post("/v2/models/iris/feedback", json={"inputs": iris.x[:1].tolist(), "labels": [0]})
        assert refused.status_code == 400 and "inference logging" in refused.json()["error"]
        unknown = server.post("/v2/models/iris/feedback", json={"id": "nobody", "labels": [0]})
        assert unknown.status_code == 404  # without logging, an unknown id is still refused
