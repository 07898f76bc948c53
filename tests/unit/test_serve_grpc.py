"""Open Inference Protocol v2 over gRPC: the real `tritonclient.grpc` client against `modelcycle serve`.

Health, metadata, inference with raw and typed tensors, the status code of each refusal, and that a
gRPC request is served by the same model, batching, statistics and feedback as a REST one.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from support import models
from support.oip_server import ServerProcess, serve

NAME = "iris"
VERSION = "3"
MAX_BODY = 200_000


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> models.ModelDir:
    return models.iris_classifier(tmp_path_factory.mktemp("iris"), record_profile=True)


@pytest.fixture(scope="module")
def server(iris: models.ModelDir) -> Iterator[ServerProcess]:
    with serve(iris.path, name=NAME, version=VERSION, args=("--max-body-bytes", str(MAX_BODY))) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    yield c
    c.close()


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def raw_input(rows: np.ndarray, datatype: str = "FP64", name: str = "input-0") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)
    return tensor


def status_of(call: object) -> str:
    assert isinstance(call, InferenceServerException), call
    return str(call.status())


# --------------------------------------------------------------------------- health and metadata


def test_health(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(NAME)
    assert client.is_model_ready(NAME, VERSION)


@pytest.mark.parametrize(("name", "version"), [("other", ""), (NAME, "9")], ids=["model", "version"])
def test_unknown_model_or_version_is_not_found(
    client: grpcclient.InferenceServerClient, name: str, version: str
) -> None:
    for call in (client.is_model_ready, client.get_model_metadata):
        with pytest.raises(InferenceServerException) as caught:
            call(name, version)
        assert status_of(caught.value) == "StatusCode.NOT_FOUND"
        assert "unknown" in caught.value.message()


def test_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "modelcycle" and meta["version"]
    assert "modelcycle_drift" in meta["extensions"]


def test_model_metadata_matches_rest(
    client: grpcclient.InferenceServerClient, server: ServerProcess, iris: models.ModelDir
) -> None:
    meta = client.get_model_metadata(NAME, VERSION, as_json=True)
    rest = server.get(f"/v2/models/{NAME}").json()
    assert meta["name"] == NAME and meta["versions"] == [VERSION]
    assert meta["platform"] == rest["platform"]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": ["-1", str(iris.n_features)]}]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]


OWN_STUB_CLIENT = """
import json, sys
import grpc
from modelcycle.workloads.oip import inference_pb2 as pb, inference_pb2_grpc as pb_grpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    meta = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(pb.ModelMetadataRequest(name=sys.argv[2]))
print(json.dumps(dict(meta.properties)))
"""


def test_model_properties_through_our_own_generated_stub(
    server: ServerProcess, iris: models.ModelDir
) -> None:
    # In a process of its own: tritonclient's messages hold the same `inference.*` names.
    out = subprocess.run(
        [sys.executable, "-c", OWN_STUB_CLIENT, f"127.0.0.1:{server.grpc_port}", NAME],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    properties = json.loads(out)
    rest = server.get(f"/v2/models/{NAME}").json()["parameters"]
    assert properties["task"] == "classification" and properties["sha256"] == rest["sha256"]
    assert json.loads(properties["classes"]) == [0, 1, 2]
    assert [f["name"] for f in json.loads(properties["features"])] == iris.features


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "FP16", "INT64"])
def test_infer_raw_tensor(
    client: grpcclient.InferenceServerClient, iris: models.ModelDir, datatype: str
) -> None:
    rows = iris.x[:16]
    sent = rows.astype(
        {"FP64": np.float64, "FP32": np.float32, "FP16": np.float16, "INT64": np.int64}[datatype]
    )
    outputs = [grpcclient.InferRequestedOutput("predict"), grpcclient.InferRequestedOutput("predict_proba")]
    result = client.infer(
        NAME, [raw_input(sent, datatype)], model_version=VERSION, outputs=outputs, request_id="abc"
    )
    response = result.get_response()
    assert response.id == "abc" and response.model_version == VERSION
    x = sent.astype(np.float64)
    np.testing.assert_array_equal(result.as_numpy("predict"), iris.predict(x))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), iris.predict_proba(x), rtol=0, atol=1e-12)


def test_infer_default_outputs_and_per_feature_inputs(
    client: grpcclient.InferenceServerClient, iris: models.ModelDir
) -> None:
    rows = iris.x[40:47]
    inputs = [raw_input(np.ascontiguousarray(rows[:, i]), name=f) for i, f in enumerate(iris.features)]
    result = client.infer(NAME, inputs)
    np.testing.assert_array_equal(result.as_numpy("predict"), iris.predict(rows))
    assert result.as_numpy("predict_proba").shape == (7, 3)


def test_infer_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub, iris: models.ModelDir) -> None:
    rows = iris.x[60:65]
    request = service_pb2.ModelInferRequest(model_name=NAME, id="typed")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.ravel().tolist())
    request.outputs.add(name="predict")
    response = stub.ModelInfer(request)
    assert response.id == "typed" and not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("predict", "INT64", [5])
    assert list(output.contents.int64_contents) == iris.predict(rows).tolist()


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [("INT32", "int_contents", int), ("FP32", "fp32_contents", float), ("UINT8", "uint_contents", int)],
)
def test_infer_typed_contents_of_other_datatypes(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    iris: models.ModelDir,
    datatype: str,
    field: str,
    values: type,
) -> None:
    rows = np.round(iris.x[:3])
    request = service_pb2.ModelInferRequest(model_name=NAME)
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=list(rows.shape))
    getattr(tensor.contents, field).extend(values(v) for v in rows.ravel())
    request.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(request)
    predict = np.frombuffer(response.raw_output_contents[0], dtype="<i8")
    np.testing.assert_array_equal(predict, iris.predict(rows))


def test_concurrent_async_requests_each_get_their_answer(
    client: grpcclient.InferenceServerClient, iris: models.ModelDir
) -> None:
    results: dict[int, np.ndarray] = {}
    done = threading.Event()

    def callback(index: int, *, result: grpcclient.InferResult | None, error: object) -> None:
        assert error is None, error
        assert result is not None
        results[index] = result.as_numpy("predict")
        if len(results) == 40:
            done.set()

    for i in range(40):
        client.async_infer(NAME, [raw_input(iris.x[i : i + 1])], functools.partial(callback, i))
    assert done.wait(30)
    for i in range(40):
        np.testing.assert_array_equal(results[i], iris.predict(iris.x[i : i + 1]))


def test_compressed_request(client: grpcclient.InferenceServerClient, iris: models.ModelDir) -> None:
    rows = iris.x[:4]
    for algorithm in ("gzip", "deflate"):
        result = client.infer(NAME, [raw_input(rows)], compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("predict"), iris.predict(rows))


# --------------------------------------------------------------------------- refusals


def invalid(
    client: grpcclient.InferenceServerClient, inputs: list[grpcclient.InferInput], **kw: object
) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(NAME, inputs, **kw)  # type: ignore[arg-type]
    assert status_of(caught.value) == "StatusCode.INVALID_ARGUMENT", caught.value
    return str(caught.value.message())


def test_bad_shape_is_invalid_argument(
    client: grpcclient.InferenceServerClient, iris: models.ModelDir
) -> None:
    assert "does not match [N, 4]" in invalid(client, [raw_input(iris.x[:2, :3].copy())])
    lying = grpcclient.InferInput("input-0", [3, 4], "FP64")
    lying.set_data_from_numpy(iris.x[:3])
    lying._input.shape[:] = [2, 4]  # the raw data says 3 rows
    assert "bytes of binary data for shape [2, 4]" in invalid(client, [lying])


def test_bad_datatype_is_invalid_argument(
    client: grpcclient.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    iris: models.ModelDir,
) -> None:
    words = grpcclient.InferInput("input-0", [1, 4], "BYTES")
    words.set_data_from_numpy(np.array([["a", "b", "c", "d"]], dtype=object))
    assert "must be numeric" in invalid(client, [words])
    request = service_pb2.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="input-0", datatype="FLOAT", shape=[1, 4]).contents.fp32_contents.extend(
        [1, 2, 3, 4]
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown datatype 'FLOAT'" in caught.value.details()
    request = service_pb2.ModelInferRequest(model_name=NAME)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])  # the wrong field for FP64
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "contents.fp64_contents" in caught.value.details() and "fp32_contents" in caught.value.details()


def test_unknown_model_on_infer_is_not_found(
    client: grpcclient.InferenceServerClient, iris: models.ModelDir
) -> None:
    for name, version in (("other", ""), (NAME, "9")):
        with pytest.raises(InferenceServerException) as caught:
            client.infer(name, [raw_input(iris.x[:1])], model_version=version)
        assert status_of(caught.value) == "StatusCode.NOT_FOUND"


def test_oversize_message_is_resource_exhausted(
    client: grpcclient.InferenceServerClient, iris: models.ModelDir
) -> None:
    rows = np.tile(iris.x, (MAX_BODY // iris.x.nbytes + 1, 1))
    assert rows.nbytes > MAX_BODY
    with pytest.raises(InferenceServerException) as caught:
        client.infer(NAME, [raw_input(rows)])
    assert status_of(caught.value) == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.is_server_live()


def test_unknown_output_and_raw_count_mismatch(
    client: grpcclient.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    iris: models.ModelDir,
) -> None:
    message = invalid(client, [raw_input(iris.x[:1])], outputs=[grpcclient.InferRequestedOutput("labels")])
    assert "unknown output 'labels'" in message
    request = service_pb2.ModelInferRequest(model_name=NAME, raw_input_contents=[b"", b""])
    request.inputs.add(name="input-0", datatype="FP64", shape=[0, 4])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2 entries for 1 inputs" in caught.value.details()


# --------------------------------------------------------------------------- one server, two transports


def metric(server: ServerProcess, name: str, outcome: str) -> float:
    text = server.get("/metrics").text
    match = re.search(
        rf'^{name}\{{model="{NAME}",outcome="{outcome}",version="{VERSION}"\}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def test_grpc_requests_count_in_stats_metrics_and_feedback_like_rest(
    client: grpcclient.InferenceServerClient, server: ServerProcess, iris: models.ModelDir
) -> None:
    before_rows = server.get(f"/v2/models/{NAME}/stats").json()["totalRows"]
    before_ok = metric(server, "modelcycle_inference_requests_total", "success")
    before_bad = metric(server, "modelcycle_inference_requests_total", "client_error")
    rows = iris.x[100:110]
    client.infer(NAME, [raw_input(rows)], request_id="grpc-1")
    rest = {
        "id": "rest-1",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [10, 4], "data": rows.tolist()}],
    }
    assert server.post(f"/v2/models/{NAME}/infer", json=rest).status_code == 200
    invalid(client, [raw_input(iris.x[:1, :2].copy())])
    stats = server.get(f"/v2/models/{NAME}/stats").json()
    assert stats["totalRows"] == before_rows + 20
    assert metric(server, "modelcycle_inference_requests_total", "success") == before_ok + 2
    assert metric(server, "modelcycle_inference_requests_total", "client_error") == before_bad + 1
    labels = iris.y[100:110].tolist()
    feedback = server.post(
        f"/v2/models/{NAME}/feedback",
        json=[{"id": "grpc-1", "labels": labels}, {"id": "rest-1", "labels": labels}],
    )
    assert feedback.status_code == 200, feedback.text
    assert feedback.json()["accepted"] == 20 and feedback.json()["unknownIds"] == []


def test_grpc_port_off_and_port_in_use(iris: models.ModelDir, server: ServerProcess) -> None:
    with serve(iris.path, name=NAME, args=("--grpc-port", "off")) as rest_only:
        assert rest_only.grpc_port is None
        assert rest_only.get("/v2/health/ready").status_code == 200
    taken = str(server.grpc_port)
    with (
        pytest.raises(RuntimeError, match=rf"cannot listen for gRPC on 127.0.0.1:{taken}"),
        serve(iris.path, name=NAME, args=("--grpc-port", taken)),
    ):
        pass


def test_sigterm_drains_grpc_like_rest(iris: models.ModelDir) -> None:
    with serve(iris.path, name=NAME, args=("--drain-delay", "3")) as s:
        c = grpcclient.InferenceServerClient(url=f"127.0.0.1:{s.grpc_port}")
        try:
            assert c.is_server_ready()
            s.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 2
            while c.is_server_ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not c.is_server_ready() and c.is_server_live()
            assert not c.is_model_ready(NAME)
            result = c.infer(NAME, [raw_input(iris.x[:2])])  # still answered while draining
            np.testing.assert_array_equal(result.as_numpy("predict"), iris.predict(iris.x[:2]))
        finally:
            c.close()
        assert s.proc.wait(15) == 0
