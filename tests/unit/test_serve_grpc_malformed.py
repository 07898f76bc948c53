"""Malformed gRPC messages never crash `modelcycle serve` nor read as a server fault.

Property-based (hypothesis): bytes that are not protobuf, protobuf of the wrong shape, and
ModelInferRequests with random names, datatypes, shapes, typed contents and raw contents are sent
raw over a real channel. Every answer is OK or a client-error status (never INTERNAL or UNKNOWN), and
the server still answers a valid request afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from support import models
from support.oip_server import ServerProcess, serve

NAME = "iris"
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
METHODS = ["ModelInfer", "ModelReady", "ModelMetadata", "ServerReady", "ServerLive", "ServerMetadata"]
DATATYPES = [
    "BOOL",
    "INT8",
    "INT32",
    "INT64",
    "UINT8",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
    "FLOAT",
    "",
]
NAMES = ["input-0", "sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)", "", "x"]
FIELDS = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = models.iris_classifier(tmp_path_factory.mktemp("iris"))
    with serve(model.path, name=NAME, args=("--max-body-bytes", "100000")) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as c:
        yield c


def call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    rpc = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
    try:
        rpc(payload, timeout=20)
    except grpc.RpcError as exc:
        assert exc.code() in CLIENT_ERRORS, (exc.code(), exc.details())
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def values_for(field: str) -> st.SearchStrategy[list[object]]:
    element: st.SearchStrategy[object] = {
        "bool_contents": st.booleans(),
        "int_contents": st.integers(-(2**31), 2**31 - 1),
        "int64_contents": st.integers(-(2**63), 2**63 - 1),
        "uint_contents": st.integers(0, 2**32 - 1),
        "uint64_contents": st.integers(0, 2**64 - 1),
        "fp32_contents": st.floats(width=32),
        "fp64_contents": st.floats(),
        "bytes_contents": st.binary(max_size=8),
    }[field]
    return st.lists(element, max_size=12)


@st.composite
def infer_requests(draw: st.DrawFn) -> bytes:
    request = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from([NAME, NAME, "other", ""])),
        model_version=draw(st.sampled_from(["", "", "1", "2"])),
        id=draw(st.text(max_size=4)),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 5))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(NAMES)),
            datatype=draw(st.sampled_from(DATATYPES)),
            shape=draw(st.lists(st.integers(-3, 2**40).filter(lambda d: d < 9 or d > 2**30), max_size=3)),
        )
        if raw:
            request.raw_input_contents.append(
                draw(
                    st.one_of(
                        st.binary(max_size=64),
                        st.lists(st.floats(), max_size=12).map(lambda v: struct.pack(f"<{len(v)}d", *v)),
                        st.just(struct.pack("<I", 2**31) + b"ab"),
                    )
                )
            )
        else:
            field = draw(st.sampled_from(FIELDS))
            getattr(tensor.contents, field).extend(draw(values_for(field)))
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(b"\x00" * 8)  # one more than there are inputs
    for _ in range(draw(st.integers(0, 2))):
        output = request.outputs.add(name=draw(st.sampled_from(["predict", "predict_proba", "labels", ""])))
        if draw(st.booleans()):
            output.parameters["classification"].int64_param = 2
    if draw(st.booleans()):
        choice = request.parameters["binary_data_output"]
        if draw(st.booleans()):
            choice.bool_param = True
        else:
            choice.string_param = "yes"
    return request.SerializeToString()


@SETTINGS
@given(payload=st.binary(max_size=256), method=st.sampled_from(METHODS))
def test_random_bytes_are_refused_as_client_errors(
    channel: grpc.Channel, payload: bytes, method: str
) -> None:
    call(channel, method, payload)


@SETTINGS
@given(payload=infer_requests())
def test_malformed_infer_requests_are_client_errors(channel: grpc.Channel, payload: bytes) -> None:
    call(channel, "ModelInfer", payload)


@SETTINGS
@given(payload=infer_requests(), cut=st.integers(0, 200))
def test_truncated_infer_requests_are_client_errors(channel: grpc.Channel, payload: bytes, cut: int) -> None:
    call(channel, "ModelInfer", payload[: max(0, len(payload) - cut)])


def test_server_still_serves_after_the_malformed_messages(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    assert server.proc.poll() is None
    request = service_pb2.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend(
        [5.1, 3.5, 1.4, 0.2]
    )
    rpc = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )
    response = rpc(request, timeout=10)
    assert list(response.outputs[0].contents.int64_contents) == [0]
    stats = server.get(f"/v2/models/{NAME}/stats").json()
    assert stats["totalRows"] >= 1
    assert np.isfinite(stats["totalRows"])
