"""The real `tritonclient.http` client against `modelcycle serve`: readiness, metadata, inference."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support import models
from support.oip_server import ServerProcess, serve

NAME = "breast-cancer"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> models.ModelDir:
    return models.breast_cancer_model(tmp_path_factory.mktemp("bc"), "lr")


@pytest.fixture(scope="module")
def server(model: models.ModelDir) -> Iterator[ServerProcess]:
    with serve(model.path, name=NAME, version="2") as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", concurrency=4)
    yield c
    c.close()


def test_readiness(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(NAME)
    assert client.is_model_ready(NAME, "2")
    assert not client.is_model_ready(NAME, "3")
    assert not client.is_model_ready("other")


def test_metadata(client: httpclient.InferenceServerClient, model: models.ModelDir) -> None:
    server = client.get_server_metadata()
    assert server["name"] == "modelcycle"
    meta = client.get_model_metadata(NAME, "2")
    assert meta["name"] == NAME and meta["versions"] == ["2"]
    assert meta["inputs"][0]["shape"] == [-1, model.n_features]
    assert {o["name"] for o in meta["outputs"]} == {"predict", "predict_proba"}
    index = client.get_model_repository_index()
    assert index == [{"name": NAME, "version": "2", "state": "READY"}]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matrix(client: httpclient.InferenceServerClient, model: models.ModelDir, binary: bool) -> None:
    rows = model.x[:16].astype(np.float32)
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("predict", binary_data=binary),
        httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
    ]
    result = client.infer(NAME, [tensor], model_version="2", outputs=outputs, request_id="abc")
    assert result.get_response()["id"] == "abc"
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows.astype(np.float64)))
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), model.predict_proba(rows.astype(np.float64)), rtol=0, atol=1e-12
    )


def test_infer_default_outputs(client: httpclient.InferenceServerClient, model: models.ModelDir) -> None:
    rows = model.x[100:103]
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)  # binary by default; no outputs: all of them, binary
    result = client.infer(NAME, [tensor])
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows))
    assert result.as_numpy("predict_proba").shape == (3, 2)


def test_infer_per_feature_inputs(client: httpclient.InferenceServerClient, model: models.ModelDir) -> None:
    rows = model.x[200:205]
    inputs = []
    for i, feature in enumerate(model.features):
        tensor = httpclient.InferInput(feature, [len(rows)], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, i]), binary_data=i % 2 == 0)
        inputs.append(tensor)
    result = client.infer(
        NAME, inputs, outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)]
    )
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows))


def test_async_infer_batches_concurrent_requests(
    client: httpclient.InferenceServerClient, model: models.ModelDir
) -> None:
    pending = []
    for i in range(40):
        tensor = httpclient.InferInput("input-0", [1, model.n_features], "FP64")
        tensor.set_data_from_numpy(model.x[i : i + 1])
        pending.append(client.async_infer(NAME, [tensor], request_id=str(i)))
    for i, request in enumerate(pending):
        result = request.get_result()
        assert result.get_response()["id"] == str(i)
        np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(model.x[i : i + 1]))


def test_compressed_request(client: httpclient.InferenceServerClient, model: models.ModelDir) -> None:
    rows = model.x[:4]
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    for algorithm in ("gzip", "deflate"):
        result = client.infer(NAME, [tensor], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows))


def test_errors_raise(client: httpclient.InferenceServerClient, model: models.ModelDir) -> None:
    rows = model.x[:1]
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("other", [tensor])
    wrong = httpclient.InferInput("input-0", [1, 3], "FP64")
    wrong.set_data_from_numpy(rows[:, :3].copy())
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer(NAME, [wrong])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("other")
