"""Open Inference Protocol v2 codec: request bodies to numpy rows, predictions to response bodies.

Pure functions, independent of the HTTP transport (like MLServer's codecs). Supports JSON tensors
(`data` flat or nested, row-major) and the binary tensor data extension (the body is a JSON header
of `Inference-Header-Content-Length` bytes followed by the raw tensors; what `tritonclient.http`
sends by default).

Inputs are either one `[N, F]` tensor (any name that is not a feature name) of a numeric datatype,
or one tensor per feature, named after the features, each of shape `[N]` or `[N, 1]` (BYTES for
string-valued features). Outputs: `predict` (`[N]`), and for classifiers `predict_proba` (`[N, K]`,
columns in the order of the model metadata's `classes`).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from modelcycle.workloads.serve_model import ServedModel

JSON = "application/json"
OCTET = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"

NUMERIC_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMERIC_DTYPES, "BYTES")
OUTPUT_PREDICT = "predict"
OUTPUT_PROBA = "predict_proba"


class ProtocolError(Exception):
    """A request the protocol refuses; `status` is the HTTP status (400 unless said otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferenceRequest:
    """A validated inference request: the rows in the model's feature order, and what to return."""

    x: NDArray[Any]
    """`[N, F]` rows in feature order: float64, or object when some feature takes strings."""
    rows: int
    id: str | None
    outputs: list[RequestedOutput]

    @property
    def wants_proba(self) -> bool:
        return any(o.name == OUTPUT_PROBA for o in self.outputs)


# --------------------------------------------------------------------------- helpers


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding: gzip|deflate` (tritonclient's request compression), bounded by `limit`."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none", 415)
    wbits = 31 if encoding == "gzip" else 15
    try:
        decoder = zlib.decompressobj(wbits)
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"body is not valid {encoding}: {exc}") from exc
    if len(out) > limit:
        raise ProtocolError(f"decompressed body exceeds the limit of {limit} bytes", 413)
    return out


def _shape(tensor: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: `shape` must be a list of non-negative integers")
    return tuple(shape)


def _flatten(data: Any) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _decode_bytes_binary(raw: memoryview, count: int, name: str) -> NDArray[Any]:
    items: list[str] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: binary BYTES data is truncated")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"input {name!r}: binary BYTES data is truncated")
        try:
            items.append(bytes(raw[offset : offset + length]).decode())
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"input {name!r}: BYTES element is not UTF-8") from exc
        offset += length
    if offset != len(raw):
        raise ProtocolError(f"input {name!r}: {len(raw) - offset} bytes of binary data left over")
    return np.asarray(items, dtype=object)


def _json_numeric(data: Any, datatype: str, name: str) -> NDArray[Any]:
    try:
        arr = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise ProtocolError(f"input {name!r}: `data` is not a regular array: {exc}") from exc
    kind = arr.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise ProtocolError(f"input {name!r}: datatype BOOL needs true/false values")
        return arr
    if datatype.startswith(("INT", "UINT")):
        if kind not in "iu":
            raise ProtocolError(f"input {name!r}: datatype {datatype} needs integer values")
        return arr
    # FP16/FP32/FP64: numbers; JSON null means a missing value (NaN).
    if kind in "iuf":
        return arr
    if kind == "O":
        flat = _flatten(data)
        if all(v is None or (type(v) in (int, float)) for v in flat):
            return np.asarray([math.nan if v is None else v for v in flat], dtype=np.float64)
    raise ProtocolError(f"input {name!r}: datatype {datatype} needs numbers")


def decode_tensor(tensor: Any, binary: memoryview | None) -> tuple[str, NDArray[Any]]:
    """One input tensor as a numpy array of its declared shape (no model-specific checks)."""
    if not isinstance(tensor, dict):
        raise ProtocolError("each input must be a JSON object")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError("each input needs a `name`")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}"
        )
    shape = _shape(tensor, name)
    count = math.prod(shape)
    if binary is not None:
        if datatype == "BYTES":
            arr = _decode_bytes_binary(binary, count, name)
        else:
            dtype = NUMERIC_DTYPES[datatype]
            if len(binary) != count * dtype.itemsize:
                raise ProtocolError(
                    f"input {name!r}: {len(binary)} bytes of binary data for shape {list(shape)} "
                    f"of {datatype} (want {count * dtype.itemsize})"
                )
            arr = np.frombuffer(binary, dtype=dtype)
    else:
        if "data" not in tensor:
            raise ProtocolError(f"input {name!r}: no `data` (and no binary_data_size)")
        data = tensor["data"]
        if datatype == "BYTES":
            flat = _flatten(data) if isinstance(data, list) else [data]
            if not all(isinstance(v, str) for v in flat):
                raise ProtocolError(f"input {name!r}: datatype BYTES needs strings")
            arr = np.asarray(flat, dtype=object)
        else:
            arr = _json_numeric(data if isinstance(data, list) else [data], datatype, name)
    if arr.size != count:
        raise ProtocolError(
            f"input {name!r}: shape {list(shape)} needs {count} values, `data` has {arr.size}"
        )
    return name, arr.reshape(shape)


def _split_binary(payload: dict[str, Any], tail: memoryview) -> list[memoryview | None]:
    inputs = payload["inputs"]
    out: list[memoryview | None] = []
    offset = 0
    for tensor in inputs:
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            out.append(None)
            continue
        if type(size) is not int or size < 0 or offset + size > len(tail):
            raise ProtocolError("binary_data_size does not match the binary data that follows the header")
        out.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise ProtocolError(f"{len(tail) - offset} bytes of binary data not claimed by any input")
    return out


def parse_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[memoryview | None]]:
    """The JSON header of an infer request and the binary slice of each input (None for JSON data)."""
    tail = memoryview(b"")
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError as exc:
            raise ProtocolError("Inference-Header-Content-Length is not an integer") from exc
        if not 0 <= n <= len(body):
            raise ProtocolError("Inference-Header-Content-Length is larger than the body")
        tail = memoryview(body)[n:]
        body = body[:n]
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ProtocolError("body must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("`inputs` must be a non-empty list of tensors")
    binaries: list[memoryview | None] = (
        _split_binary(payload, tail) if header_length is not None else [None] * len(inputs)
    )
    return payload, binaries


# --------------------------------------------------------------------------- requests


def _requested_outputs(payload: Mapping[str, Any], model: ServedModel) -> list[RequestedOutput]:
    params = payload.get("parameters")
    binary_default = bool(isinstance(params, dict) and params.get("binary_data_output") is True)
    raw = payload.get("outputs")
    if raw is None:
        return requested_outputs(None, model, binary_default=binary_default)
    if not isinstance(raw, list) or not raw:
        raise ProtocolError("`outputs` must be a non-empty list")
    named: list[tuple[Any, Any]] = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        oparams = (item.get("parameters") or {}) if isinstance(item, dict) else {}
        named.append((name, oparams))
    return requested_outputs(named, model, binary_default=binary_default)


def requested_outputs(
    named: Sequence[tuple[Any, Any]] | None, model: ServedModel, *, binary_default: bool
) -> list[RequestedOutput]:
    """The outputs asked for as (name, parameters) pairs, checked against the model; None: all of them."""
    available = [OUTPUT_PREDICT, OUTPUT_PROBA] if model.has_proba else [OUTPUT_PREDICT]
    if named is None:
        return [RequestedOutput(n, binary_default) for n in available]
    out: list[RequestedOutput] = []
    for name, oparams in named:
        if name not in available:
            raise ProtocolError(f"unknown output {name!r}; this model has {', '.join(available)}")
        if not isinstance(oparams, dict):
            raise ProtocolError(f"output {name!r}: `parameters` must be an object")
        if oparams.get("classification"):
            raise ProtocolError("the classification extension is not supported; ask for predict_proba")
        binary = oparams.get("binary_data", binary_default)
        out.append(RequestedOutput(name, bool(binary)))
    return out


def _as_model_input(columns: Sequence[NDArray[Any]], model: ServedModel) -> NDArray[Any]:
    """`[N, F]` rows: float64 when every feature is numeric, else an object array (strings kept)."""
    if model.all_numeric:
        return np.column_stack([c.astype(np.float64, copy=False) for c in columns])
    out = np.empty((len(columns[0]), len(columns)), dtype=object)
    for i, (feature, column) in enumerate(zip(model.features, columns, strict=True)):
        out[:, i] = column if feature.is_string else column.astype(np.float64, copy=False)
    return out


def decode_infer(body: bytes, header_length: str | None, model: ServedModel) -> InferenceRequest:
    """Validate an infer request against the model and turn it into model-ready rows."""
    payload, binaries = parse_body(body, header_length)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("`id` must be a string")
    outputs = _requested_outputs(payload, model)
    inputs = payload["inputs"]
    x, rows = model_rows([decode_tensor(t, b) for t, b in zip(inputs, binaries, strict=True)], model)
    return InferenceRequest(x=x, rows=rows, id=request_id, outputs=outputs)


def model_rows(tensors: Sequence[tuple[str, NDArray[Any]]], model: ServedModel) -> tuple[NDArray[Any], int]:
    """`[N, F]` model rows and N from the decoded input tensors (of either transport).

    Either one `[N, F]` numeric tensor whose name is no feature name, or one `[N]`/`[N, 1]` tensor per
    feature.
    """
    names = model.feature_names
    if len(tensors) == 1 and tensors[0][0] not in names:
        name, arr = tensors[0]
        if arr.dtype == object:
            raise ProtocolError(f"input {name!r}: a [N, F] tensor must be numeric; send strings per feature")
        if arr.ndim != 2 or arr.shape[1] != model.n_features:
            raise ProtocolError(
                f"input {name!r}: shape {list(arr.shape)} does not match [N, {model.n_features}] "
                f"(or send one tensor per feature, named {', '.join(names[:3])}...)"
            )
        if not model.all_numeric:
            raise ProtocolError("this model has string features: send one tensor per feature")
        x = arr.astype(np.float64, copy=False)
        rows = arr.shape[0]
    else:
        by_name: dict[str, NDArray[Any]] = {}
        for name, arr in tensors:
            if name not in model.feature_names:
                raise ProtocolError(
                    f"unknown input {name!r}; inputs are one [N, {model.n_features}] tensor or {names}"
                )
            if name in by_name:
                raise ProtocolError(f"input {name!r} given twice")
            if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
                raise ProtocolError(f"input {name!r}: shape {list(arr.shape)} must be [N] or [N, 1]")
            by_name[name] = arr.reshape(-1)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ProtocolError(f"missing inputs {missing}")
        lengths = {len(a) for a in by_name.values()}
        if len(lengths) != 1:
            raise ProtocolError(f"inputs have different numbers of rows: {sorted(lengths)}")
        columns = [by_name[n] for n in names]
        for feature, column in zip(model.features, columns, strict=True):
            if column.dtype == object and not feature.is_string:
                raise ProtocolError(f"input {feature.name!r}: numeric feature sent as BYTES")
        x = _as_model_input(columns, model)
        rows = lengths.pop()
    if rows == 0:
        raise ProtocolError("the request has no rows")
    return x, rows


# --------------------------------------------------------------------------- responses


def binary_bytes(arr: NDArray[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in arr.ravel():
            raw = str(item).encode()
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=NUMERIC_DTYPES[datatype]).tobytes()


def _json_data(arr: NDArray[Any], datatype: str) -> Any:
    if datatype == "BYTES":
        return [str(v) for v in arr.ravel()]
    if datatype in ("FP64", "INT64", "BOOL") and arr.dtype == NUMERIC_DTYPES[datatype]:
        return np.ascontiguousarray(arr.ravel())
    return np.ascontiguousarray(arr.ravel(), dtype=NUMERIC_DTYPES[datatype])


def output_arrays(
    model: ServedModel,
    request: InferenceRequest,
    predictions: NDArray[Any],
    probabilities: NDArray[np.float64] | None,
) -> list[tuple[RequestedOutput, str, NDArray[Any]]]:
    """Each requested output with its datatype and values, in the order asked for."""
    out: list[tuple[RequestedOutput, str, NDArray[Any]]] = []
    for requested in request.outputs:
        if requested.name == OUTPUT_PREDICT:
            arr, datatype = predictions, model.predict_datatype
            if datatype == "INT64" and arr.dtype.kind not in "iu":
                arr = arr.astype(np.int64)
        else:
            if probabilities is None:
                raise RuntimeError("predict_proba requested but not computed")
            arr, datatype = probabilities, "FP64"
        out.append((requested, datatype, arr))
    return out


def encode_infer_response(
    model: ServedModel,
    request: InferenceRequest,
    predictions: NDArray[Any],
    probabilities: NDArray[np.float64] | None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and extra headers (the binary extension's header length)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out, datatype, arr in output_arrays(model, request, predictions, probabilities):
        tensor: dict[str, Any] = {"name": out.name, "datatype": datatype, "shape": list(arr.shape)}
        if out.binary:
            blob = binary_bytes(arr, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(arr, datatype)
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))}


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """Model metadata: the `[N, F]` input, the per-feature alternative, the outputs."""
    outputs: list[dict[str, Any]] = [
        {"name": OUTPUT_PREDICT, "datatype": model.predict_datatype, "shape": [-1]},
    ]
    if model.has_proba:
        outputs.append({"name": OUTPUT_PROBA, "datatype": "FP64", "shape": [-1, model.n_classes]})
    input_type = "FP64" if model.all_numeric else "BYTES"
    parameters: dict[str, Any] = {
        "task": model.task,
        "features": [{"name": f.name, "kind": f.kind, "dtype": f.dtype} for f in model.features],
        "perFeatureInputs": [
            {"name": f.name, "datatype": "BYTES" if f.is_string else "FP64", "shape": [-1]}
            for f in model.features
        ],
        "sha256": model.sha256,
    }
    if model.target:
        parameters["target"] = model.target
    if model.classes is not None:
        parameters["classes"] = model.classes.tolist()
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn_skops",
        "inputs": [{"name": "input-0", "datatype": input_type, "shape": [-1, model.n_features]}],
        "outputs": outputs,
        "parameters": parameters,
    }
