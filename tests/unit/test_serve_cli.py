"""`modelcycle serve` loading from the artifact store by URI, and its refusals."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from support import models
from support.oip_server import serve


def test_serves_from_a_store_uri_with_sha256(tmp_path: Path) -> None:
    model = models.iris_classifier(tmp_path / "build", record_profile=False)
    store = tmp_path / "store"
    target = store / "models" / "demo" / "iris" / "v2"
    target.mkdir(parents=True)
    shutil.copy(model.model_file, target / "model.skops")
    shutil.copy(model.path / "metadata.json", target / "metadata.json")
    args = (
        "--artifact-uri",
        "pvc://models/demo/iris/v2/model.skops",
        "--sha256",
        model.sha256,
        "--store",
        str(store),
        "--max-batch-delay-us",
        "500",  # the spelling the ModelDeployment builder uses
        "--reference-profile",
        model.profile_path.as_uri(),
    )
    with serve(None, name="iris", version="2", args=args) as server:
        body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [3, 4], "data": model.x[:3].tolist()}]}
        response = server.post("/v2/models/iris/versions/2/infer", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == model.predict(model.x[:3]).tolist()
        assert server.get("/v2/models/iris/profile").status_code == 200


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelcycle", "serve", "--model-name", "m", "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_refusals(tmp_path: Path) -> None:
    model = models.iris_classifier(tmp_path / "m")
    uri = model.model_file.as_uri()
    wrong = run_serve("--artifact-uri", uri, "--sha256", "0" * 64)
    assert wrong.returncode == 2 and "sha256" in wrong.stderr
    assert "needs --sha256" in run_serve("--artifact-uri", uri).stderr
    assert "exactly one" in run_serve().stderr
    assert "exactly one" in run_serve("--model-dir", str(model.path), "--artifact-uri", uri).stderr
    missing = run_serve("--model-dir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    pickle = tmp_path / "pickled"
    pickle.mkdir()
    (pickle / "metadata.json").write_text(
        (model.path / "metadata.json").read_text().replace(model.sha256, "")
    )
    (pickle / "model.skops").write_bytes(b"\x80\x04\x95" + np.arange(10).tobytes())
    refused = run_serve("--model-dir", str(pickle))
    assert refused.returncode == 2 and "pickle" in refused.stderr
