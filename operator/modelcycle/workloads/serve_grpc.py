"""The Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService` for `modelcycle serve`.

The transport only: the messages (modelcycle.workloads.oip, generated from its .proto) are turned into
the same `InferenceRequest` the REST codec produces, and answered by the same `InferenceApp` (one
model, micro-batching, drift counts, feedback, metrics, readiness). ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata and ModelInfer; typed `contents` and
`raw_input_contents`. The answer uses `raw_output_contents` when the request came raw (what
tritonclient.grpc sends and reads), typed `contents` otherwise; the request parameter
`binary_data_output` (bool) overrides that.

Refusals carry a gRPC status: INVALID_ARGUMENT (bad request), NOT_FOUND (unknown model or version),
UNAVAILABLE (not ready, shutting down), RESOURCE_EXHAUSTED (a message over --max-body-bytes, refused
by gRPC itself), INTERNAL (a bug).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from modelcycle import __version__
from modelcycle.workloads.oip import inference_pb2 as pb
from modelcycle.workloads.serve_app import EXTENSIONS, SERVER_NAME, InferenceApp
from modelcycle.workloads.serve_protocol import (
    NUMERIC_DTYPES,
    InferenceRequest,
    ProtocolError,
    binary_bytes,
    decode_tensor,
    model_metadata,
    model_rows,
    output_arrays,
    requested_outputs,
)

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed `contents` field of each datatype (FP16 has none: it travels raw)."""
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
"""The gRPC status of each HTTP status the protocol layer refuses with; anything else is INTERNAL."""


class Failure:
    """A refused or failed inference: the gRPC status and its message."""

    __slots__ = ("code", "message")

    def __init__(self, status: int, message: str) -> None:
        self.code = STATUS_CODES.get(status, grpc.StatusCode.INTERNAL)
        self.message = message


Reply = pb.ModelInferResponse | Failure


# --------------------------------------------------------------------------- codec


def parameter_value(parameter: pb.InferParameter) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def _typed_tensor(tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[str, NDArray[Any]]:
    name, datatype = tensor.name, tensor.datatype
    if not name:
        raise ProtocolError("each input needs a `name`")
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        if datatype in NUMERIC_DTYPES:
            raise ProtocolError(f"input {name!r}: {datatype} values can only be sent in raw_input_contents")
        raise ProtocolError(
            f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(CONTENTS_FIELD)}, FP16"
        )
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise ProtocolError(f"input {name!r}: `shape` must be non-negative integers, got {shape}")
    count = math.prod(shape)
    values = getattr(tensor.contents, field)
    if len(values) != count:
        filled = [f.name for f, _ in tensor.contents.ListFields()]
        where = f" (the values are in {', '.join(filled)})" if filled and field not in filled else ""
        raise ProtocolError(
            f"input {name!r}: shape {shape} needs {count} values in contents.{field}, "
            f"got {len(values)}{where}"
        )
    if datatype == "BYTES":
        try:
            arr = np.asarray([v.decode() for v in values], dtype=object)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"input {name!r}: BYTES element is not UTF-8") from exc
    else:
        try:
            arr = np.asarray(values, dtype=NUMERIC_DTYPES[datatype])
        except (OverflowError, ValueError) as exc:
            raise ProtocolError(f"input {name!r}: values out of range for {datatype}: {exc}") from exc
    return name, arr.reshape(shape)


def decode_request(message: pb.ModelInferRequest, app: InferenceApp) -> InferenceRequest:
    """A ModelInferRequest as model rows and requested outputs, checked as a REST request is."""
    model = app.model
    inputs = message.inputs
    if not inputs:
        raise ProtocolError("`inputs` must be a non-empty list of tensors")
    raw = message.raw_input_contents
    if raw:
        if len(raw) != len(inputs):
            raise ProtocolError(
                f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs "
                "(one per input, in order)"
            )
        if any(t.HasField("contents") for t in inputs):
            raise ProtocolError("an input has typed `contents` although the request uses raw_input_contents")
        tensors = [
            decode_tensor(
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}, memoryview(contents)
            )
            for t, contents in zip(inputs, raw, strict=True)
        ]
    else:
        tensors = [_typed_tensor(t) for t in inputs]
    x, rows = model_rows(tensors, model)
    binary = bool(raw)
    if "binary_data_output" in message.parameters:
        choice = parameter_value(message.parameters["binary_data_output"])
        if not isinstance(choice, bool):
            raise ProtocolError("parameter binary_data_output must be a bool")
        binary = choice
    named = None
    if message.outputs:
        named = [
            (o.name, {k: parameter_value(v) for k, v in o.parameters.items()} | {"binary_data": binary})
            for o in message.outputs
        ]
    outputs = requested_outputs(named, model, binary_default=binary)
    return InferenceRequest(x=x, rows=rows, id=message.id or None, outputs=outputs)


def encode_response(
    app: InferenceApp,
    request: InferenceRequest,
    predictions: NDArray[Any],
    probabilities: NDArray[np.float64] | None,
) -> pb.ModelInferResponse:
    model = app.model
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id or "")
    raw = any(o.binary for o in request.outputs)
    for requested, datatype, arr in output_arrays(model, request, predictions, probabilities):
        tensor = response.outputs.add(name=requested.name, datatype=datatype, shape=arr.shape)
        if raw:
            response.raw_output_contents.append(binary_bytes(arr, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in arr.ravel())
        else:
            values = np.ascontiguousarray(arr, dtype=NUMERIC_DTYPES[datatype]).ravel().tolist()
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    return response


def metadata_response(app: InferenceApp) -> pb.ModelMetadataResponse:
    """ModelMetadata: as on REST; the REST `parameters` become `properties` (JSON unless a string)."""
    meta = model_metadata(app.model)
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=meta["name"],
        versions=meta["versions"],
        platform=meta["platform"],
        inputs=[tensor(**t) for t in meta["inputs"]],
        outputs=[tensor(**t) for t in meta["outputs"]],
        properties={
            k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
            for k, v in meta["parameters"].items()
        },
    )


# --------------------------------------------------------------------------- service


class InferenceService:
    """The RPC handlers, over one `InferenceApp` (shared with the REST transport)."""

    def __init__(self, app: InferenceApp) -> None:
        self.app = app
        self._metadata = metadata_response(app)
        self._server_metadata = pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    async def _check_model(self, name: str, version: str, context: grpc.aio.ServicerContext) -> None:
        """NOT_FOUND unless `name` (and `version`, when given) is the model served."""
        model = self.app.model
        if name == model.name and (not version or version == model.version):
            return
        if name != model.name:
            message = f"unknown model {name!r}; this server serves {model.name!r}"
        else:
            message = f"unknown version {version!r} of model {name!r}; this server serves {model.version!r}"
        await context.abort(grpc.StatusCode.NOT_FOUND, message)

    async def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.app.ready)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.app.ready)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return self._server_metadata

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        return self._metadata

    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        await self._check_model(request.model_name, request.model_version, context)
        app = self.app

        def encode(
            decoded: InferenceRequest, predictions: NDArray[Any], probabilities: NDArray[np.float64] | None
        ) -> Reply:
            return encode_response(app, decoded, predictions, probabilities)

        pending = app.infer(lambda: decode_request(request, app), encode, Failure, trickles=True)
        answer = await pending if isinstance(pending, asyncio.Future) else pending
        if isinstance(answer, Failure):
            await context.abort(answer.code, answer.message)
        assert isinstance(answer, pb.ModelInferResponse)
        return answer

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's methods. Requests arrive as bytes and are parsed here, so a message that is
        not valid protobuf is INVALID_ARGUMENT (gRPC's own deserializer would answer INTERNAL)."""

        def unary(fn: Callable[[Any, Any], Awaitable[Any]], request_type: Any) -> grpc.RpcMethodHandler:
            parse = request_type.FromString

            async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Any:
                try:
                    message = parse(data)
                except DecodeError as exc:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {request_type.__name__}: {exc}"
                    )
                try:
                    return await fn(message, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    log.exception("gRPC %s failed", request_type.__name__)
                    await context.abort(
                        grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
                    )

            return grpc.unary_unary_rpc_method_handler(
                handle, response_serializer=lambda message: message.SerializeToString()
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
                "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
                "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
                "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
                "ModelInfer": unary(self.model_infer, pb.ModelInferRequest),
            },
        )


class GrpcServer:
    """A grpc.aio server on the running event loop, answering `InferenceService`."""

    def __init__(self, app: InferenceApp, *, max_message_bytes: int) -> None:
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared listener
            ]
        )
        self.server.add_generic_rpc_handlers((InferenceService(app).handler(),))

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); return the port. OSError when it cannot bind."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot bind {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot bind {address}")
        await self.server.start()
        return bound

    async def shutdown(self, timeout: float) -> None:
        """Refuse new calls, let the ones in flight finish for up to `timeout` seconds, then cancel."""
        await self.server.stop(timeout)
