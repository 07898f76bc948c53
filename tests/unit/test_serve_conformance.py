"""Open Inference Protocol v2 conformance of `modelcycle serve`: every endpoint, and its errors.

A real server process on 127.0.0.1 serves a model fitted in the fixture (skops file + metadata.json).
"""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from support import models
from support.oip_server import ServerProcess, serve

NAME = "iris"
VERSION = "3"
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> models.ModelDir:
    return models.iris_classifier(tmp_path_factory.mktemp("iris"))


@pytest.fixture(scope="module")
def server(iris: models.ModelDir) -> Iterator[ServerProcess]:
    with serve(iris.path, name=NAME, version=VERSION, args=("--max-body-bytes", "200000")) as s:
        yield s


def matrix(rows: np.ndarray, *, datatype: str = "FP64", nested: bool = True, name: str = "input-0") -> dict:
    data = rows.tolist() if nested else rows.ravel().tolist()
    return {"name": name, "datatype": datatype, "shape": list(rows.shape), "data": data}


def assert_error(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


# --------------------------------------------------------------------------- health and metadata


def test_health_endpoints(server: ServerProcess) -> None:
    assert server.get("/v2/health/live").status_code == 200
    ready = server.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_server_metadata(server: ServerProcess) -> None:
    body = server.get("/v2").json()
    assert body["name"] == "modelcycle" and body["version"]
    assert "binary_tensor_data" in body["extensions"]


@pytest.mark.parametrize("path", [f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/{VERSION}"])
def test_model_metadata(server: ServerProcess, iris: models.ModelDir, path: str) -> None:
    body = server.get(path).json()
    assert body["name"] == NAME and body["versions"] == [VERSION]
    assert body["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert body["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert [f["name"] for f in body["parameters"]["features"]] == iris.features
    assert body["parameters"]["classes"] == [0, 1, 2]
    assert body["parameters"]["sha256"] == iris.sha256


@pytest.mark.parametrize("path", [f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}/versions/{VERSION}/ready"])
def test_model_ready(server: ServerProcess, path: str) -> None:
    response = server.get(path)
    assert response.status_code == 200 and response.json() == {"name": NAME, "ready": True}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        f"/v2/models/{NAME}/versions/4",
        f"/v2/models/{NAME}/versions/4/ready",
        "/v2/nothing",
        "/elsewhere",
        f"/v2/models/{NAME}/unknown-action",
    ],
)
def test_unknown_model_version_or_path_is_404(server: ServerProcess, path: str) -> None:
    assert_error(server.get(path), 404)


def test_unknown_model_or_version_on_infer_is_404(server: ServerProcess, iris: models.ModelDir) -> None:
    body = {"inputs": [matrix(iris.x[:1])]}
    assert "nope" in assert_error(server.post("/v2/models/nope/infer", json=body), 404)
    assert_error(server.post(f"/v2/models/{NAME}/versions/9/infer", json=body), 404)
    ok = server.post(f"/v2/models/{NAME}/versions/{VERSION}/infer", json=body)
    assert ok.status_code == 200


def test_wrong_method_is_405(server: ServerProcess) -> None:
    assert_error(server.get(INFER), 405)
    assert_error(server.post("/v2/health/live", data=b""), 405)


# --------------------------------------------------------------------------- inference


def test_infer_matches_the_estimator(server: ServerProcess, iris: models.ModelDir) -> None:
    rows = iris.x[::10]
    response = server.post(INFER, json={"id": "req-1", "inputs": [matrix(rows)]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == NAME and body["model_version"] == VERSION and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["datatype"] == "INT64" and outputs["predict"]["shape"] == [len(rows)]
    expected = iris.predict(rows)
    assert outputs["predict"]["data"] == expected.tolist()
    proba = np.asarray(outputs["predict_proba"]["data"]).reshape(outputs["predict_proba"]["shape"])
    np.testing.assert_allclose(proba, iris.predict_proba(rows), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("datatype", "nested"), [("FP64", False), ("FP32", True), ("FP32", False), ("FP16", True)]
)
def test_infer_flat_or_nested_float_data(
    server: ServerProcess, iris: models.ModelDir, datatype: str, nested: bool
) -> None:
    rows = iris.x[:5]
    response = server.post(INFER, json={"inputs": [matrix(rows, datatype=datatype, nested=nested)]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == iris.predict(rows).tolist()


def test_infer_integer_tensor(server: ServerProcess, iris: models.ModelDir) -> None:
    rows = np.rint(iris.x[:3]).astype(np.int64)
    response = server.post(INFER, json={"inputs": [matrix(rows, datatype="INT64")]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == iris.predict(rows.astype(float)).tolist()


def test_infer_one_tensor_per_feature(server: ServerProcess, iris: models.ModelDir) -> None:
    rows = iris.x[40:46]
    inputs = [
        {
            "name": f,
            "datatype": "FP64",
            "shape": [len(rows)] if i % 2 else [len(rows), 1],
            "data": rows[:, i].tolist(),
        }
        for i, f in reversed(list(enumerate(iris.features)))  # any order
    ]
    response = server.post(INFER, json={"inputs": inputs, "outputs": [{"name": "predict"}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [o["name"] for o in body["outputs"]] == ["predict"]
    assert body["outputs"][0]["data"] == iris.predict(rows).tolist()
    assert "id" not in body


def test_infer_requested_outputs_only(server: ServerProcess, iris: models.ModelDir) -> None:
    body = {"inputs": [matrix(iris.x[:2])], "outputs": [{"name": "predict_proba"}]}
    outputs = server.post(INFER, json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["predict_proba"] and outputs[0]["shape"] == [2, 3]


def test_infer_binary_tensor_extension(server: ServerProcess, iris: models.ModelDir) -> None:
    rows = iris.x[:7].astype(np.float32)
    raw = rows.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [7, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "predict", "parameters": {"binary_data": True}}, {"name": "predict_proba"}],
        }
    ).encode()
    response = server.post(
        INFER,
        data=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    head = json.loads(response.content[:length])
    predict, proba = head["outputs"]
    assert predict["parameters"]["binary_data_size"] == 7 * 8 and "data" not in predict
    values = np.frombuffer(response.content[length:], dtype="<i8")
    assert values.tolist() == iris.predict(rows.astype(np.float64)).tolist()
    assert len(proba["data"]) == 21


def test_infer_gzip_request_body(server: ServerProcess, iris: models.ModelDir) -> None:
    body = gzip.compress(json.dumps({"inputs": [matrix(iris.x[:3])]}).encode())
    response = server.post(INFER, data=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- inference errors


@pytest.mark.parametrize(
    ("tensor", "needle"),
    [
        ({"name": "x", "datatype": "FP64", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}, "shape"),
        ({"name": "x", "datatype": "FP64", "shape": [8], "data": [1] * 8}, "shape"),
        ({"name": "x", "datatype": "FP64", "shape": [2, 4], "data": [1, 2, 3]}, "needs 8 values"),
        ({"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [[1, 2], [3, 4, 5]]}, "regular"),
        ({"name": "x", "datatype": "FP64", "shape": "1x4", "data": [1, 2, 3, 4]}, "shape"),
        ({"name": "x", "datatype": "FP64", "shape": [-1, 4], "data": [1, 2, 3, 4]}, "shape"),
        ({"name": "x", "datatype": "FP64", "shape": [0, 4], "data": []}, "no rows"),
    ],
)
def test_wrong_shape_is_400(server: ServerProcess, tensor: dict, needle: str) -> None:
    assert needle in assert_error(server.post(INFER, json={"inputs": [tensor]}), 400)


@pytest.mark.parametrize(
    ("tensor", "needle"),
    [
        ({"name": "x", "datatype": "FP128", "shape": [1, 4], "data": [1, 2, 3, 4]}, "unknown datatype"),
        ({"name": "x", "datatype": "BYTES", "shape": [1, 4], "data": ["a", "b", "c", "d"]}, "numeric"),
        ({"name": "x", "datatype": "FP64", "shape": [1, 4], "data": ["1", "2", "3", "4"]}, "numbers"),
        ({"name": "x", "datatype": "INT64", "shape": [1, 4], "data": [1.5, 2, 3, 4]}, "integer"),
        ({"name": "x", "datatype": "BOOL", "shape": [1, 4], "data": [1, 0, 1, 0]}, "BOOL"),
    ],
)
def test_wrong_datatype_is_400(server: ServerProcess, tensor: dict, needle: str) -> None:
    assert needle in assert_error(server.post(INFER, json={"inputs": [tensor]}), 400)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"this is not json", "JSON"),
        (b"", "JSON"),
        (b"[1, 2]", "object"),
        (b'{"inputs": []}', "inputs"),
        (b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4]}]}', "data"),
        (
            b'{"id": 7, "inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1,2,3,4]}]}',
            "id",
        ),
    ],
)
def test_malformed_body_is_400(server: ServerProcess, body: bytes, needle: str) -> None:
    response = server.post(INFER, data=body, headers={"Content-Type": "application/json"})
    assert needle in assert_error(response, 400)


def test_per_feature_input_errors(server: ServerProcess, iris: models.ModelDir) -> None:
    full = [{"name": f, "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]} for f in iris.features]
    assert "missing" in assert_error(server.post(INFER, json={"inputs": full[:3]}), 400)
    unknown = [*full, {"name": "colour", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]
    assert "colour" in assert_error(server.post(INFER, json={"inputs": unknown}), 400)
    ragged = [*full[:3], {**full[3], "shape": [3], "data": [1.0, 2.0, 3.0]}]
    assert "rows" in assert_error(server.post(INFER, json={"inputs": ragged}), 400)
    twice = [*full, full[0]]
    assert "twice" in assert_error(server.post(INFER, json={"inputs": twice}), 400)


def test_unknown_output_is_400(server: ServerProcess, iris: models.ModelDir) -> None:
    body = {"inputs": [matrix(iris.x[:1])], "outputs": [{"name": "embedding"}]}
    assert "embedding" in assert_error(server.post(INFER, json=body), 400)


def test_binary_size_mismatch_is_400(server: ServerProcess) -> None:
    header = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}'
    response = server.post(
        INFER, data=header + b"\0" * 12, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert_error(response, 400)


def test_oversized_body_is_413(server: ServerProcess) -> None:
    big = {"inputs": [matrix(np.ones((10_000, 4)))]}  # ~ 200 kB of JSON, over the 200000-byte limit
    assert "limit" in assert_error(server.post(INFER, json=big), 413)
    # the server still works afterwards
    assert server.get("/v2/health/ready").status_code == 200


def test_oversized_chunked_body_is_413(server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 10_000

    assert_error(server.post(INFER, data=chunks()), 413)


def test_nan_rows_fail_alone(server: ServerProcess, iris: models.ModelDir) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1.0, None, 2.0, 3.0]}]}
    # LogisticRegression refuses NaN: a 400 naming the prediction failure, not a crash
    assert "prediction failed" in assert_error(server.post(INFER, json=body), 400)


# --------------------------------------------------------------------------- HTTP behaviour


def _raw_exchange(server: ServerProcess, payload: bytes, *, expect: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < expect or not _complete(data, expect):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def _complete(data: bytes, expect: int) -> bool:
    parts = data.split(b"HTTP/1.1 ")[1:]
    if len(parts) < expect:
        return False
    last = parts[-1]
    head, _, body = last.partition(b"\r\n\r\n")
    length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
    return bool(length) and len(body) >= length[0]


def test_pipelined_requests_are_answered_in_order(server: ServerProcess, iris: models.ModelDir) -> None:
    body = json.dumps({"id": "second", "inputs": [matrix(iris.x[:1])]}).encode()
    payload = (
        b"GET /v2/models/iris HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\n\r\n" + body
        + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    )  # fmt: skip
    responses = _raw_exchange(server, payload, expect=3)
    assert len(responses) == 3
    assert b'"versions"' in responses[0]
    assert b'"id":"second"' in responses[1]
    assert responses[2].startswith(b"HTTP/1.1 200")


def test_malformed_http_is_400(server: ServerProcess) -> None:
    responses = _raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n", expect=1)
    assert responses and responses[0].startswith(b"HTTP/1.1 400")


def test_expect_100_continue(server: ServerProcess, iris: models.ModelDir) -> None:
    body = json.dumps({"inputs": [matrix(iris.x[:1])]}).encode()
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_http_1_0_closes_the_connection(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data.lower()


# --------------------------------------------------------------------------- a regression model


def test_regression_model(tmp_path: Path) -> None:
    model = models.diabetes_regressor(tmp_path / "diabetes")
    with serve(model.path, name="diabetes", version="1") as server:
        meta = server.get("/v2/models/diabetes").json()
        assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
        rows = model.x[:4]
        body = {"inputs": [matrix(rows)]}
        response = server.post("/v2/models/diabetes/infer", json=body)
        assert response.status_code == 200, response.text
        out = response.json()["outputs"]
        assert [o["name"] for o in out] == ["predict"]
        np.testing.assert_allclose(out[0]["data"], model.predict(rows), rtol=1e-12)
        proba = {**body, "outputs": [{"name": "predict_proba"}]}
        assert_error(server.post("/v2/models/diabetes/infer", json=proba), 400)


def test_bad_model_directory_fails_to_start(tmp_path: Path, iris: models.ModelDir) -> None:
    (tmp_path / "metadata.json").write_text((iris.path / "metadata.json").read_text())
    (tmp_path / "model.skops").write_bytes(iris.model_file.read_bytes() + b"tampered")
    with pytest.raises(RuntimeError, match="sha256"), serve(tmp_path, name="x", timeout=30):
        pass
