"""Property-based fuzzing of the model server: no input gets a 5xx or takes the process down.

Three properties, each checked with hypothesis on examples it generates (and shrinks on failure):

- arbitrary bytes, and requests put together from real methods, paths, headers and bodies, sent
  raw to a real `modelcycle serve` process: every response is below 500 and the server lives on;
- arbitrary JSON, and OIP v2 shaped JSON with arbitrary values, POSTed to the infer endpoint:
  the answer is 200 or a 4xx JSON error;
- OIP v2 decoding in process (serve_protocol.decode_infer) on arbitrary bodies: it returns a
  request or raises ProtocolError with a 4xx status, nothing else.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcycle.workloads import serve_model
from modelcycle.workloads.serve_protocol import ProtocolError, decode_infer
from support import models
from support.oip_server import ServerProcess, serve

NAME = "iris"
INFER = f"/v2/models/{NAME}/infer"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> models.ModelDir:
    return models.iris_classifier(tmp_path_factory.mktemp("iris"))


@pytest.fixture(scope="module")
def server(iris: models.ModelDir) -> Iterator[ServerProcess]:
    with serve(iris.path, name=NAME, version="1", args=("--max-body-bytes", "65536")) as s:
        yield s
        assert s.proc.poll() is None, s.stderr()
        assert "Traceback" not in s.stderr(), s.stderr()


# --------------------------------------------------------------------------- strategies

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
NUMBERS = st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from([*FEATURES, "input-0", "x"]) | JSON,
        "datatype": st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT32", "UINT8", "BOOL", "BYTES"])
        | JSON,
        "shape": st.lists(st.integers(-2, 6), max_size=3) | JSON,
        "data": st.lists(NUMBERS | st.lists(NUMBERS, max_size=6) | st.text(max_size=5), max_size=10) | JSON,
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), JSON, max_size=2)},
)
OIP = st.fixed_dictionaries(
    {"inputs": st.lists(TENSOR, max_size=5) | JSON},
    optional={
        "id": JSON,
        "outputs": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["predict", "predict_proba"]) | JSON}), max_size=3
        )
        | JSON,
        "parameters": JSON,
    },
)
PATHS = st.sampled_from(
    [
        "/v2",
        INFER,
        f"/v2/models/{NAME}/versions/1/infer",
        "/v2/health/ready",
        "/metrics",
        f"/v2/models/{NAME}/feedback",
        f"/v2/models/{NAME}/drift",
        f"/v2/models/{NAME}/stats",
        f"/v2/models/{NAME}/profile",
        "/v2/repository/index",
    ]
).map(str.encode)
HEADERS = st.lists(
    st.sampled_from(
        [b"Content-Type", b"Content-Encoding", b"Inference-Header-Content-Length", b"Expect", b"Host", b"X"]
    ).flatmap(lambda name: st.tuples(st.just(name), st.binary(max_size=40))),
    max_size=6,
)


@st.composite
def requests_(draw: Any) -> bytes:
    """An HTTP request from real parts: method, path (maybe with garbage), headers, a body."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS"]) | st.binary(max_size=6))
    path = draw(PATHS) + draw(st.binary(max_size=20) | st.just(b""))
    body = draw(st.binary(max_size=300) | OIP.map(lambda v: json.dumps(v).encode()))
    head = b"".join(n + b": " + v + b"\r\n" for n, v in draw(HEADERS))
    length = draw(st.sampled_from(["exact", "none", "wrong"]))
    if length == "exact":
        head += b"Content-Length: %d\r\n" % len(body)
    elif length == "wrong":
        head += b"Content-Length: %d\r\n" % draw(st.integers(0, 400))
    return method + b" " + path + b" HTTP/1.1\r\n" + head + b"\r\n" + body


def _statuses(data: bytes) -> list[int]:
    """The status of every response in a byte stream, walking heads and bodies."""
    found = []
    while data.startswith(b"HTTP/1.1 "):
        head, _, rest = data.partition(b"\r\n\r\n")
        found.append(int(head[9:12]))
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        data = rest[length:]
    assert data == b"", data[:200]
    return found


def _send_raw(server: ServerProcess, payload: bytes) -> list[int]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused while sending
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return _statuses(data)


# --------------------------------------------------------------------------- properties


@FUZZ
@given(payload=st.binary(max_size=2000) | requests_())
def test_arbitrary_bytes_never_get_a_5xx(server: ServerProcess, payload: bytes) -> None:
    statuses = _send_raw(server, payload)
    assert all(status < 500 for status in statuses), statuses
    assert server.proc.poll() is None, server.stderr()


@FUZZ
@given(body=OIP | JSON)
def test_arbitrary_json_to_infer_never_gets_a_5xx(server: ServerProcess, body: Any) -> None:
    response = server.post(INFER, data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    assert response.status_code == 200 or "error" in response.json()


@pytest.fixture(scope="module")
def served(iris: models.ModelDir) -> serve_model.ServedModel:
    return serve_model.load_model_dir(Path(iris.path), name=NAME, version="1")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=500) | (OIP | JSON).map(lambda v: json.dumps(v).encode()),
    split=st.none() | st.text(max_size=6),
)
def test_oip_decoding_refuses_with_a_4xx_or_decodes(
    served: serve_model.ServedModel, body: bytes, split: str | None
) -> None:
    try:
        decode_infer(body, split, served)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500
