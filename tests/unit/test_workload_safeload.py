"""Safe loading: sha256 first, skops only (never unpickle), an explicit trusted-type allowlist."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import joblib
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from workload_helpers import (
    builtin,
    model_version,
    run_cli,
    snapshot_inproc,
    store_files,
    train_inproc,
    training_run,
)

from modelcycle.workloads import safeload
from modelcycle.workloads.store import sha256_bytes


class CreatesAFile:
    """Unpickling this calls open(path, "w"): the file appears iff the payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def iris_model() -> bytes:
    iris = load_iris(as_frame=True)
    return sio.dumps(LogisticRegression(max_iter=500).fit(iris.data, iris.target))


def test_a_good_model_loads(iris_model: bytes) -> None:
    model = safeload.load_model(iris_model, expected_sha256=sha256_bytes(iris_model))
    assert model.predict(load_iris(as_frame=True).data.head(3)).tolist() == [0, 0, 0]


def test_sha256_is_checked_first(tmp_path: Path, iris_model: bytes) -> None:
    flipped = bytearray(iris_model)
    flipped[100] ^= 0xFF
    with pytest.raises(safeload.ArtifactCorrupted, match="expected " + sha256_bytes(iris_model)):
        safeload.load_model(bytes(flipped), expected_sha256=sha256_bytes(iris_model))
    path = tmp_path / "m.skops"
    path.write_bytes(iris_model)
    with pytest.raises(safeload.ArtifactCorrupted):
        safeload.load_model(path, expected_sha256="0" * 64)
    assert safeload.load_model(path, expected_sha256=sha256_bytes(iris_model)) is not None


@pytest.mark.parametrize("compress", [None, 3, "gzip", "bz2", "xz", "lzma"])
def test_pickle_and_joblib_files_are_refused_without_unpickling(tmp_path: Path, compress: Any) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(CreatesAFile(control))).close()  # the payload is real: unpickling runs it
    assert control.exists()
    marker = tmp_path / "pwned"
    if compress is None:
        data = pickle.dumps(CreatesAFile(marker))
    else:
        joblib.dump(CreatesAFile(marker), tmp_path / "m.joblib", compress=compress)
        data = (tmp_path / "m.joblib").read_bytes()
    assert not marker.exists()
    # even with the right sha256 (someone registered it on purpose)
    with pytest.raises(safeload.UnsafeFormat, match="only skops archives are loaded"):
        safeload.load_model(data, expected_sha256=sha256_bytes(data))
    assert not marker.exists()


def test_protocol_zero_pickle_and_other_zips_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(CreatesAFile(marker), protocol=0)
    with pytest.raises(safeload.UnsafeFormat, match="pickle"):
        safeload.load_model(data, expected_sha256=sha256_bytes(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.pkl", pickle.dumps(CreatesAFile(marker)))
    with pytest.raises(safeload.UnsafeFormat, match=r"no schema\.json"):
        safeload.load_model(buf.getvalue(), expected_sha256=sha256_bytes(buf.getvalue()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("schema.json", json.dumps({"__loader__": "ObjectNode"}))
        zf.writestr("payload.pkl", pickle.dumps(CreatesAFile(marker)))
    with pytest.raises(safeload.UnsafeFormat, match="unexpected members"):
        safeload.load_model(buf.getvalue(), expected_sha256=sha256_bytes(buf.getvalue()))
    assert not marker.exists()


EVIL_MODULE = """
import os, pathlib
pathlib.Path(os.environ["EVIL_MARKER"]).write_text("imported")
from sklearn.base import BaseEstimator, ClassifierMixin
import numpy as np

class Sneaky(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])
"""


@pytest.fixture(scope="module")
def sneaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A skops file holding a custom (non-allowlisted) class, written in a separate process."""
    root = tmp_path_factory.mktemp("sneaky")
    (root / "evilskops.py").write_text(EVIL_MODULE)
    out = root / "sneaky.skops"
    code = (
        "import skops.io as sio, evilskops; from sklearn.datasets import load_iris; "
        "d = load_iris(as_frame=True); "
        f"sio.dump(evilskops.Sneaky().fit(d.data, d.target), {str(out)!r})"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"PYTHONPATH": str(root), "EVIL_MARKER": str(root / "dump.marker"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    return root, out.read_bytes()


def test_untrusted_type_is_refused_without_importing_it(
    sneaky: tuple[Path, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, data = sneaky
    marker = tmp_path / "import.marker"
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    with pytest.raises(safeload.UntrustedType, match=r"evilskops\.Sneaky") as info:
        safeload.load_model(data, expected_sha256=sha256_bytes(data))
    assert info.value.details["untrustedTypes"] == ["evilskops.Sneaky"]
    assert not marker.exists() and "evilskops" not in sys.modules


def test_validate_cli_refuses_pickle_and_untrusted_skops(tmp_path: Path, sneaky: tuple[Path, bytes]) -> None:
    """The workload end to end: a registered pickle or foreign-type skops file is refused, nothing runs."""
    root, sneaky_bytes = sneaky
    store = tmp_path / "store"
    snap = snapshot_inproc(builtin("iris"), store)
    result = train_inproc(
        training_run("sklearn.tree.DecisionTreeClassifier", name="ok", model="iris"), snap, store
    )
    marker = tmp_path / "pwned"
    pickled = pickle.dumps(CreatesAFile(marker))
    for name, data, reason in (
        ("evil.pkl", pickled, "UnsafeFormat"),
        ("sneaky.skops", sneaky_bytes, "UntrustedType"),
    ):
        path = store / "models/ml/iris/runs/bad" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        bad = dict(
            result, artifact={"uri": f"pvc://models/ml/iris/runs/bad/{name}", "sha256": sha256_bytes(data)}
        )
        before = store_files(store)
        out = run_cli(
            [
                "validate",
                "--spec-json",
                json.dumps(model_version(bad, snap, model="iris", version=2)),
                "--publish",
            ],
            store=store,
            tmp=tmp_path,
            env={"PYTHONPATH": str(root), "EVIL_MARKER": str(marker)},
        )
        assert out.code == 1 and out.result["reason"] == reason, out
        assert out.stderr.count("error:") == 1
        assert not marker.exists()
        assert store_files(store) == before


def test_trusted_type_rules() -> None:
    assert safeload.is_trusted("sklearn.tree._tree.Tree")
    assert safeload.is_trusted("numpy.dtype")
    assert safeload.is_trusted("scipy.sparse._csr.csr_matrix")
    assert not safeload.is_trusted("sklearnx.Tree")
    assert not safeload.is_trusted("builtins.eval")
    assert not safeload.is_trusted("posix.system")
    assert not safeload.is_trusted("collections.OrderedDict")


def test_extra_trusted_prefixes_from_env(sneaky: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    _, data = sneaky
    monkeypatch.setenv(safeload.ENV_TRUSTED_PREFIXES, "evilskops")
    assert safeload.check_types(data) == ["evilskops.Sneaky"]
