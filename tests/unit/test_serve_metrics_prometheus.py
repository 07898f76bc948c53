"""A real Prometheus scrapes the model server's /metrics; the series are read back through its HTTP API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from support import models
from support.cluster import missing_prerequisite
from support.oip_server import ServerProcess, serve

NAME = "iris"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> models.ModelDir:
    return models.iris_classifier(tmp_path_factory.mktemp("iris"))


@pytest.fixture(scope="module")
def server(model: models.ModelDir) -> Iterator[ServerProcess]:
    args = ("--reference-profile", str(model.profile_path), "--drift-min-samples", "10")
    with serve(model.path, name=NAME, version="5", args=args) as s:
        yield s


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, server: ServerProcess) -> Iterator[str]:
    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if binary is None:
        missing_prerequisite("prometheus is not installed (tools/setup.sh installs the Debian package)")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: modelcycle-serve\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 900ms\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start:\n{(tmp / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for_value(url: str, promql: str, at_least: float, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = query(url, promql)
        if result and sum(float(r["value"][1]) for r in result) >= at_least:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql} never reached {at_least}: {result}")


def test_prometheus_scrapes_serving_metrics(
    server: ServerProcess, prometheus: str, model: models.ModelDir
) -> None:
    rows = model.x[::3]  # 50 rows, 10 requests of 5
    for start in range(0, len(rows), 5):
        chunk = rows[start : start + 5]
        body = {
            "inputs": [{"name": "x", "datatype": "FP64", "shape": list(chunk.shape), "data": chunk.tolist()}]
        }
        assert server.post(f"/v2/models/{NAME}/infer", json=body).status_code == 200
    bad = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert server.post(f"/v2/models/{NAME}/infer", json=bad).status_code == 400

    ok = wait_for_value(
        prometheus, f'modelcycle_inference_requests_total{{model="{NAME}",version="5",outcome="success"}}', 10
    )
    assert ok[0]["metric"]["job"] == "modelcycle-serve"
    wait_for_value(prometheus, 'modelcycle_inference_requests_total{outcome="client_error"}', 1)
    latency = wait_for_value(
        prometheus, 'modelcycle_inference_request_duration_seconds_count{outcome="success"}', 10
    )
    assert latency
    wait_for_value(prometheus, 'modelcycle_inference_request_duration_seconds_bucket{le="+Inf"}', 11)

    # prediction distribution: class counts add up to the rows served
    classes = wait_for_value(prometheus, f'modelcycle_predictions_total{{model="{NAME}"}}', 50)
    assert {r["metric"]["class"] for r in classes} == {"0", "1", "2"}
    assert sum(float(r["value"][1]) for r in classes) == 50
    expected = model.predict(rows)
    by_class = {r["metric"]["class"]: float(r["value"][1]) for r in classes}
    assert by_class == {str(c): float((expected == c).sum()) for c in (0, 1, 2)}

    # per-feature binned counts over the reference edges: each feature's bins add up to the rows
    feature = model.features[2]
    bins = wait_for_value(prometheus, f'modelcycle_feature_bin_rows_total{{feature="{feature}"}}', 50)
    assert sum(float(r["value"][1]) for r in bins) == 50
    assert any(r["metric"]["upper"] == "+Inf" for r in bins)
    window = wait_for_value(prometheus, "modelcycle_drift_window_rows", 50)
    assert float(window[0]["value"][1]) == 50
    assert query(prometheus, "modelcycle_feature_drift_p_value")
