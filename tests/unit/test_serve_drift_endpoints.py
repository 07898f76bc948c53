"""The server's drift, stats, profile and feedback endpoints (the ModelMonitor's inputs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelcycle.workloads import drift
from support import models
from support.oip_server import ServerProcess, serve

NAME = "iris"
BASE = f"/v2/models/{NAME}"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> models.ModelDir:
    return models.iris_classifier(tmp_path_factory.mktemp("iris"))


def start(model: models.ModelDir, *extra: str):  # type: ignore[no-untyped-def]
    args = ("--reference-profile", str(model.profile_path), "--drift-window", "300", *extra)
    return serve(model.path, name=NAME, version="1", args=args)


@pytest.fixture(scope="module")
def server(model: models.ModelDir) -> Iterator[ServerProcess]:
    """One server for the module: each test first fills the window (300 rows) with its own rows."""
    with start(model, "--drift-min-samples", "100") as s:
        yield s


def fill(server: ServerProcess, rows: np.ndarray) -> None:
    """Replace the whole window: 300 rows, `rows` repeated."""
    reps = -(-300 // len(rows))
    infer(server, np.concatenate([rows] * reps)[:300])


def infer(server: ServerProcess, rows: np.ndarray, request_id: str | None = None) -> dict:
    body: dict = {
        "inputs": [{"name": "x", "datatype": "FP64", "shape": list(rows.shape), "data": rows.tolist()}]
    }
    if request_id:
        body["id"] = request_id
    response = server.post(f"{BASE}/infer", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_stats_contract(server: ServerProcess, model: models.ModelDir) -> None:
    fill(server, model.x[:120])  # 120 + 120 + 60 rows
    window = np.concatenate([model.x[:120], model.x[:120], model.x[:60]])
    stats = server.get(f"{BASE}/stats").json()
    assert stats["version"] == 1 and stats["model"] == NAME and stats["modelVersion"] == "1"
    assert stats["rows"] == 300 and stats["totalRows"] >= 300 and stats["windowCapacity"] == 300
    assert stats["replica"]
    profile = models.json_profile(model)
    assert stats["referenceFingerprint"] == drift.profile_fingerprint(profile)
    assert list(stats["features"]) == model.features
    for name, entry in stats["features"].items():
        feature = next(f for f in profile["features"] if f["name"] == name)
        assert entry["kind"] == "numeric" and len(entry["counts"]) == len(feature["binEdges"]) + 1
        assert sum(entry["counts"]) == 300 and entry["nulls"] == 0
        expected = drift.bin_numeric(window[:, model.features.index(name)], feature["binEdges"])
        assert entry["counts"] == np.bincount(expected, minlength=len(entry["counts"])).tolist()
    assert stats["predictions"]["kind"] == "classes" and stats["predictions"]["classes"] == [0, 1, 2]
    assert sum(stats["predictions"]["counts"]) == 300


def test_window_is_bounded(server: ServerProcess, model: models.ModelDir) -> None:
    before = server.get(f"{BASE}/stats").json()["totalRows"]
    for _ in range(3):
        infer(server, model.x)  # 450 rows into a window of 300
    stats = server.get(f"{BASE}/stats").json()
    assert stats["rows"] == 300 and stats["totalRows"] == before + 450
    assert all(sum(e["counts"]) == 300 for e in stats["features"].values())


def test_profile_endpoint(server: ServerProcess, model: models.ModelDir) -> None:
    body = server.get(f"{BASE}/profile").json()
    assert body["profile"] == models.json_profile(model)
    assert body["referenceFingerprint"] == drift.profile_fingerprint(body["profile"])


def test_drift_no_verdict_below_min_samples(server: ServerProcess, model: models.ModelDir) -> None:
    fill(server, model.x + 5.0)
    assert server.get(f"{BASE}/drift").json()["drifted"]
    report = server.get(f"{BASE}/drift", params={"minSamples": "1000"}).json()
    assert report["windowSize"] == 300 and report["minSamples"] == 1000
    assert not report["drifted"] and not report["enoughSamples"]
    assert all(f["samples"] == 300 and not f["drifted"] for f in report["features"])


def test_drift_on_training_rows_vs_shifted_rows(server: ServerProcess, model: models.ModelDir) -> None:
    rng = np.random.default_rng(0)
    fill(server, model.x[rng.permutation(150)])
    report = server.get(f"{BASE}/drift").json()
    assert report["windowSize"] == 300 and report["enoughSamples"] and not report["drifted"]
    assert report["method"] == "ks" and report["correction"] == "holm"
    shifted = model.x.copy()
    shifted[:, 2] += 1.5  # petal length
    fill(server, shifted)
    report = server.get(f"{BASE}/drift").json()
    assert report["drifted"] and report["driftedFeatures"] == [model.features[2]]
    row = next(f for f in report["features"] if f["name"] == model.features[2])
    assert row["pValue"] < 1e-6 and row["psi"] > 0.5 and row["samples"] == 300
    psi = server.get(f"{BASE}/drift", params={"method": "psi", "threshold": "0.2"}).json()
    assert psi["method"] == "psi" and psi["driftedFeatures"] == [model.features[2]]


def test_drift_query_errors(server: ServerProcess) -> None:
    for params in ({"method": "magic"}, {"threshold": "x"}, {"threshold": "0"}, {"correction": "sidak"}):
        response = server.get(f"{BASE}/drift", params=params)
        assert response.status_code == 400 and "error" in response.json()


def test_feedback_gives_live_accuracy(server: ServerProcess, model: models.ModelDir) -> None:
    rows = model.x[::15]  # 10 rows
    predicted = infer(server, rows, "req-a")["outputs"][0]["data"]
    truth = model.y[::15].tolist()
    response = server.post(f"{BASE}/feedback", json={"id": "req-a", "labels": truth})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 10 and body["unknownIds"] == []
    expected = float(np.mean(np.asarray(predicted) == np.asarray(truth)))
    assert body["metrics"]["count"] >= 10
    if body["metrics"]["count"] == 10:
        assert body["metrics"]["accuracy"] == pytest.approx(expected)
    stats = server.get(f"{BASE}/stats").json()["feedback"]
    assert stats["count"] >= 10 and np.asarray(stats["confusion"]).sum() == stats["count"]
    # a list of items, one with its predictions instead of an id
    more = [{"predictions": [0, 1], "labels": [0, 2]}, {"id": "never-seen", "label": 1}]
    body = server.post(f"{BASE}/feedback", json=more).json()
    assert body["accepted"] == 2 and body["unknownIds"] == ["never-seen"]


def test_feedback_errors(server: ServerProcess, model: models.ModelDir) -> None:
    infer(server, model.x[:2], "two")
    cases = [
        (b"not json", 400),
        (b'{"labels": [1]}', 400),  # neither id nor predictions
        (b'{"id": "two", "labels": [1]}', 400),  # one label for two rows
        (b'{"id": "two", "labels": [7, 7]}', 400),  # not a class
        (b'{"id": "unknown", "labels": [1]}', 404),
        (b'{"id": "two"}', 400),
    ]
    for body, status in cases:
        response = server.post(f"{BASE}/feedback", data=body)
        assert response.status_code == status, (body, response.text)
        assert "error" in response.json()


def test_no_profile_means_no_drift(tmp_path: Path, model: models.ModelDir) -> None:
    with serve(model.path, name=NAME, version="1") as server:
        assert server.get(f"{BASE}/drift").status_code == 404
        assert server.get(f"{BASE}/profile").status_code == 404
        infer(server, model.x[:3])
        stats = server.get(f"{BASE}/stats").json()
        assert stats["features"] == {} and stats["referenceFingerprint"] is None and stats["rows"] == 3


def test_profile_from_metadata(tmp_path: Path) -> None:
    # Training records the profile's URI and sha256 in metadata.json; the server finds it there.
    model = models.iris_classifier(tmp_path / "iris", record_profile=True)
    with serve(model.path, name=NAME, version="1") as server:
        assert server.get(f"{BASE}/profile").status_code == 200
