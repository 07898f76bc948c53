"""A Dataset's traffic source: logs joined with labels by request id, offline, across replicas.

Segments are written with the server's own writer (serve_logging), into a real LocalStore; the
join and the data Job (`snapshot_dataset`) read them back.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelcycle.api import dataset as api
from modelcycle.workloads import data, serve_logging, traffic_join
from modelcycle.workloads.results import WorkloadError
from modelcycle.workloads.store import LocalStore

FEATURES = ["x1", "x2"]
NOW = 1_800_000_000.0
_seq = itertools.count()


def write(
    store: LocalStore,
    stream: serve_logging.Stream,
    entries: list[serve_logging._Entry],
    *,
    replica: str = "r1",
    deployment: str = "iris",
    model: str = "iris",
) -> str:
    """One segment, as the server writes it."""
    blob = serve_logging.segment_bytes(
        stream, entries, model=model, version="1", replica=replica, features=FEATURES
    )
    prefix = serve_logging.stream_prefix(stream, "ml", deployment)
    key = f"{prefix}date=2027-01-15/{next(_seq):06d}-{replica}.parquet"
    store.put_bytes(key, blob)
    return key


def request(request_id: str, rows: list[list[float]], at: float = NOW - 10) -> serve_logging._Entry:
    x = np.array(rows, dtype=np.float64)
    return serve_logging._Entry(request_id, at, x, np.zeros(len(rows), dtype=np.int64))


def label(
    request_id: str | None, labels: list[Any], at: float = NOW - 5, x: Any = None
) -> serve_logging._Entry:
    return serve_logging._Entry(request_id, at, x, np.array(labels, dtype=object))


def spec(**traffic: Any) -> api.DatasetSpec:
    source = {"deployment": "iris", **traffic}
    return api.DatasetSpec.model_validate({"source": {"traffic": source}, "target": "label"})


def load(store: LocalStore, **traffic: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    frame, _, stats = traffic_join.load_traffic(spec(**traffic), store, namespace="ml", now=NOW)
    return frame, stats


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path)


def test_requests_and_labels_join_across_replicas_by_request_id_and_row(store: LocalStore) -> None:
    write(store, "requests", [request("a", [[1, 2], [3, 4]])], replica="r1")
    write(store, "requests", [request("b", [[5, 6]])], replica="r2")
    write(store, "requests", [request("c", [[7, 8]])], replica="r2")  # never labelled
    write(store, "feedback", [label("a", [1, 0]), label("b", [1])], replica="r3")
    frame, stats = load(store)
    assert frame.to_dict("records") == [
        {"x1": 1.0, "x2": 2.0, "label": 1},
        {"x1": 3.0, "x2": 4.0, "label": 0},
        {"x1": 5.0, "x2": 6.0, "label": 1},
    ]
    assert stats["logged"] == 4 and stats["labelled"] == 3 and stats["joined"] == 3
    assert stats["unmatchedLabels"] == 0 and stats["segments"] == 4 and stats["corruptSegments"] == 0


def test_labels_for_unknown_ids_are_counted_not_fatal(store: LocalStore) -> None:
    write(store, "requests", [request("a", [[1, 2]])])
    write(store, "feedback", [label("a", [2]), label("ghost", [1, 1])])
    frame, stats = load(store)
    assert len(frame) == 1 and stats["unmatchedLabels"] == 2 and stats["joined"] == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda blob: blob[: len(blob) // 2], id="truncated"),
        pytest.param(lambda blob: b"not parquet at all", id="garbage"),
        pytest.param(lambda blob: b"", id="empty"),
    ],
)
def test_a_corrupt_segment_is_skipped_and_counted(store: LocalStore, damage: Any) -> None:
    write(store, "requests", [request("a", [[1, 2]])])
    key = write(store, "requests", [request("b", [[3, 4]])])
    store.put_bytes(key, damage(store.get_bytes(key)))
    write(store, "feedback", [label("a", [1]), label("b", [0])])
    frame, stats = load(store)
    assert frame["x1"].tolist() == [1.0]
    assert stats["corruptSegments"] == 1 and stats["unmatchedLabels"] == 1
    assert stats["corruptExamples"] == [key]


def test_the_window_of_last_seconds_keeps_recent_requests_only(store: LocalStore) -> None:
    write(store, "requests", [request("old", [[1, 1]], at=NOW - 3600), request("new", [[2, 2]], at=NOW - 60)])
    write(store, "feedback", [label("old", [0]), label("new", [1])])
    frame, stats = load(store, window={"lastSeconds": 600})
    assert frame["x1"].tolist() == [2.0]
    assert stats["logged"] == 1 and stats["unmatchedLabels"] == 0  # "old" was logged: not unmatched
    assert stats["since"] == "2027-01-15T07:50:00Z" and stats["until"] == "2027-01-15T08:00:00Z"


def test_the_window_of_last_rows_keeps_the_most_recent_labelled_rows(store: LocalStore) -> None:
    entries = [request(f"r{i}", [[float(i), 0.0]], at=NOW - 100 + i) for i in range(10)]
    write(store, "requests", entries)
    write(store, "feedback", [label(f"r{i}", [i % 2]) for i in range(10) if i != 9])
    frame, stats = load(store, window={"lastRows": 3})
    assert frame["x1"].tolist() == [6.0, 7.0, 8.0]
    assert stats["joined"] == 3 and stats["logged"] == 10


def test_the_latest_label_of_a_row_wins(store: LocalStore) -> None:
    write(store, "requests", [request("a", [[1, 2]])])
    write(store, "feedback", [label("a", [0], at=NOW - 5)])
    write(store, "feedback", [label("a", [1], at=NOW - 1)])
    frame, stats = load(store)
    assert frame["label"].tolist() == [1] and stats["labelled"] == 2


def test_feedback_with_features_is_labelled_data_without_a_request(store: LocalStore) -> None:
    write(store, "feedback", [label(None, [1, 0], x=np.array([[9.0, 9.5], [8.0, 8.5]], dtype=object))])
    frame, stats = load(store)
    assert frame.to_dict("records") == [
        {"x1": 9.0, "x2": 9.5, "label": 1},
        {"x1": 8.0, "x2": 8.5, "label": 0},
    ]
    assert stats["labelledWithFeatures"] == 2 and stats["joined"] == 0


def test_a_model_source_reads_every_deployment_of_that_model(store: LocalStore) -> None:
    write(store, "requests", [request("a", [[1, 2]])], deployment="iris")
    write(store, "requests", [request("b", [[3, 4]])], deployment="iris-canary")
    write(store, "requests", [request("c", [[5, 6]])], deployment="wine", model="wine")
    write(store, "feedback", [label("a", [1])], deployment="iris")
    write(store, "feedback", [label("b", [0])], deployment="iris-canary")
    frame, _, stats = traffic_join.load_traffic(
        api.DatasetSpec.model_validate({"source": {"traffic": {"model": "iris"}}, "target": "label"}),
        store,
        namespace="ml",
        now=NOW,
    )
    assert sorted(frame["x1"].tolist()) == [1.0, 3.0] and stats["logged"] == 2


def test_too_few_labelled_rows_fail_with_the_statistics_and_write_nothing(
    store: LocalStore, tmp_path: Path
) -> None:
    write(store, "requests", [request("a", [[1, 2]]), request("b", [[3, 4]])])
    write(store, "feedback", [label("a", [1])])
    with pytest.raises(WorkloadError) as caught:
        data.snapshot_dataset(spec(minLabelledRows=5), store, namespace="ml")
    assert caught.value.reason == "TooFewLabelledRows"
    assert "1 labelled rows" in caught.value.message and "minLabelledRows is 5" in caught.value.message
    assert caught.value.details["traffic"]["joined"] == 1
    assert store.list_keys("datasets/") == []


def test_no_logs_at_all_is_too_few_labelled_rows(store: LocalStore) -> None:
    with pytest.raises(WorkloadError) as caught:
        data.snapshot_dataset(spec(), store, namespace="ml")
    assert caught.value.reason == "TooFewLabelledRows"
    assert caught.value.details["traffic"]["logged"] == 0


def test_the_snapshot_is_content_addressed_and_reproducible(store: LocalStore) -> None:
    write(store, "requests", [request(f"r{i}", [[float(i), 1.0]]) for i in range(20)])
    write(store, "feedback", [label(f"r{i}", [i % 3]) for i in range(20)])
    first = data.snapshot_dataset(spec(), store, namespace="ml")
    second = data.snapshot_dataset(spec(), store, namespace="ml")
    assert first["sha256"] == second["sha256"] and first["rows"] == 20
    assert first["task"] == "classification"
    assert first["traffic"]["joined"] == 20
    assert store.exists(f"datasets/sha256/{first['sha256']}/data.parquet")


def test_traffic_rows_pass_the_same_schema_rules(store: LocalStore) -> None:
    write(store, "requests", [request("a", [[1, 2]]), request("b", [[-5, 2]])])
    write(store, "feedback", [label("a", [1]), label("b", [0])])
    traffic_spec = api.DatasetSpec.model_validate(
        {
            "source": {"traffic": {"deployment": "iris"}},
            "target": "label",
            "schema": [{"name": "x1", "min": 0}, {"name": "x2"}],
        }
    )
    with pytest.raises(WorkloadError) as caught:
        data.snapshot_dataset(traffic_spec, store, namespace="ml")
    assert caught.value.reason == "ValidationFailed"
    assert "below min 0" in caught.value.details["violations"][0]
    assert caught.value.details["traffic"]["joined"] == 2


@pytest.mark.parametrize(
    ("share", "base_rows"), [(0.5, 10), (0.2, 2), (0.9, 30)], ids=["half", "fifth", "most"]
)
def test_merge_with_adds_a_seeded_share_of_the_base_snapshot(
    store: LocalStore, share: float, base_rows: int
) -> None:
    base_spec = api.DatasetSpec.model_validate(
        {"source": {"configMap": {"name": "base", "key": "data.csv"}}, "target": "label"}
    )
    base_frame = pd.DataFrame({"x1": np.arange(30.0), "x2": np.ones(30), "label": np.arange(30) % 2})
    features, violations = data.validate_frame(base_frame, base_spec)
    assert not violations
    base = data.make_snapshot(base_frame, base_spec, features)
    write(store, "requests", [request(f"r{i}", [[100.0 + i, 0.0]]) for i in range(10)])
    write(store, "feedback", [label(f"r{i}", [1]) for i in range(10)])
    merged_spec = spec(mergeWith={"dataset": "base", "share": share})
    frame, _, stats = traffic_join.load_traffic(
        merged_spec, store, namespace="ml", merge_frame=base.frame, merge_sha256=base.sha256, now=NOW
    )
    assert stats["mergedRows"] == base_rows and stats["mergedSnapshot"] == base.sha256
    assert len(frame) == 10 + base_rows and (frame["x1"] >= 100).sum() == 10
    assert frame["label"].dtype == np.int64
    again, _, _ = traffic_join.load_traffic(
        merged_spec, store, namespace="ml", merge_frame=base.frame, merge_sha256=base.sha256, now=NOW
    )
    pd.testing.assert_frame_equal(frame, again)


def test_merge_with_needs_the_snapshot_from_the_operator(store: LocalStore) -> None:
    write(store, "requests", [request("a", [[1, 2]])])
    write(store, "feedback", [label("a", [1])])
    with pytest.raises(WorkloadError) as caught:
        data.snapshot_dataset(spec(mergeWith={"dataset": "base", "share": 0.5}), store, namespace="ml")
    assert caught.value.reason == "InvalidSpec"


def test_the_data_command_reads_the_logs_of_the_objects_namespace(store: LocalStore, tmp_path: Path) -> None:
    import json

    from workload_helpers import run_inproc

    write(store, "requests", [request("a", [[1, 2]]), request("b", [[3, 4]])])
    write(store, "feedback", [label("a", [1]), label("b", [0])])
    obj = {
        "apiVersion": "modelcycle.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "recent", "namespace": "ml"},
        "spec": {"source": {"traffic": {"deployment": "iris"}}, "target": "label"},
    }
    out = run_inproc(["data", "--spec-json", json.dumps(obj)], store=tmp_path)
    assert out.code == 0, out
    assert out.result["rows"] == 2 and out.result["traffic"]["joined"] == 2
    elsewhere = run_inproc(
        ["data", "--spec-json", json.dumps({**obj, "metadata": {"name": "recent", "namespace": "other"}})],
        store=tmp_path,
    )
    assert elsewhere.code == 1 and elsewhere.result["reason"] == "TooFewLabelledRows"
    climbing = run_inproc(
        ["data", "--spec-json", json.dumps({**obj, "metadata": {"name": "recent", "namespace": ".."}})],
        store=tmp_path,
    )
    assert climbing.code == 2 and climbing.result["reason"] == "InvalidSpec"
