"""The artifact store: local directory and S3 (moto in server mode, a real HTTP endpoint)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sklearn.datasets import load_iris
from workload_helpers import (
    assert_store_clean,
    builtin,
    dataset,
    model_version,
    run_cli,
    train_args,
    training_run,
)

from modelcycle.workloads import store as store_mod
from modelcycle.workloads.results import WorkloadError

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# --- local ------------------------------------------------------------------------------------------


def test_local_store_round_trip_and_uris(tmp_path: Path) -> None:
    store = store_mod.LocalStore(tmp_path / "artifacts")
    uri = store.put_bytes("models/ns/m/runs/r/model.skops", b"abc")
    assert uri == "pvc://models/ns/m/runs/r/model.skops"
    assert store.exists("models/ns/m/runs/r/model.skops")
    assert store.get_bytes("models/ns/m/runs/r/model.skops") == b"abc"
    with store.open("models/ns/m/runs/r/model.skops") as fh:
        assert fh.read() == b"abc"
    assert (
        store.local_path("models/ns/m/runs/r/model.skops")
        == tmp_path / "artifacts/models/ns/m/runs/r/model.skops"
    )
    assert store.key_for(uri) == "models/ns/m/runs/r/model.skops"
    file_uri = (tmp_path / "artifacts/models/ns/m/runs/r/model.skops").as_uri()
    assert store.key_for(file_uri) == "models/ns/m/runs/r/model.skops"
    assert store.key_for("s3://b/models/x") is None
    # read_uri: pvc:// through the store, file:// and absolute paths anywhere
    (tmp_path / "elsewhere.bin").write_bytes(b"xyz")
    assert store_mod.read_uri(uri, store) == b"abc"
    assert store_mod.read_uri((tmp_path / "elsewhere.bin").as_uri(), store) == b"xyz"
    assert store_mod.read_uri(str(tmp_path / "elsewhere.bin")) == b"xyz"
    src = tmp_path / "src.bin"
    src.write_bytes(b"0123456789" * 1000)
    store.put_file("datasets/sha256/ab/data.parquet", src)
    assert store.list_keys("datasets/") == ["datasets/sha256/ab/data.parquet"]
    store.delete("datasets/sha256/ab/data.parquet")
    assert not store.exists("datasets/sha256/ab/data.parquet")
    with pytest.raises(store_mod.ArtifactNotFound):
        store.get_bytes("datasets/none")
    with pytest.raises(store_mod.ArtifactNotFound):
        store_mod.read_uri("pvc://datasets/none", store)


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    store = store_mod.LocalStore(tmp_path)
    store.put_bytes("a/b.json", b"old")
    # a writer that fails half way: the old content stays, no temporary file remains
    with pytest.raises(FileNotFoundError):
        store.put_file("a/b.json", tmp_path / "does-not-exist")
    assert store.get_bytes("a/b.json") == b"old"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]

    class Boom(Exception):
        pass

    def failing(fh: Any) -> None:
        fh.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        store._write_atomically("a/b.json", failing)
    assert store.get_bytes("a/b.json") == b"old"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", ".tmp-x", "a/.hidden", "a/b/"])
def test_keys_cannot_escape_the_store(tmp_path: Path, key: str) -> None:
    with pytest.raises(WorkloadError):
        store_mod.LocalStore(tmp_path).put_bytes(key, b"x")


def test_store_selection_flag_env_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(store_mod.ENV_STORE, raising=False)
    default = store_mod.open_store(None)
    assert isinstance(default, store_mod.LocalStore) and default.root == Path("/artifacts")
    monkeypatch.setenv(store_mod.ENV_STORE, str(tmp_path / "env"))
    env_store = store_mod.open_store(None)
    assert isinstance(env_store, store_mod.LocalStore) and env_store.root == tmp_path / "env"
    flag = store_mod.open_store((tmp_path / "flag").as_uri())
    assert isinstance(flag, store_mod.LocalStore) and flag.root == tmp_path / "flag"
    s3 = store_mod.open_store("s3://bucket/some/prefix")
    assert isinstance(s3, store_mod.S3Store) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert s3.uri_for("models/x") == "s3://bucket/some/prefix/models/x"
    assert s3.key_for("s3://bucket/some/prefix/models/x") == "models/x"
    assert s3.key_for("s3://other/some/prefix/models/x") is None
    with pytest.raises(WorkloadError):
        store_mod.open_store("gs://bucket")


def test_unwritable_store_is_a_clear_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(store_mod.StoreUnavailable, match="pass --store DIR"):
        store_mod.LocalStore(tmp_path / "file" / "store").put_bytes("a/b", b"x")


# --- S3 (moto server) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**S3_ENV, store_mod.ENV_S3_ENDPOINT: s3_endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def make_bucket(endpoint: str, name: str) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    return client


def test_s3_store_round_trip(s3_env: dict[str, str]) -> None:
    client = make_bucket(s3_env[store_mod.ENV_S3_ENDPOINT], "roundtrip")
    store = store_mod.open_store("s3://roundtrip/team/a")
    assert isinstance(store, store_mod.S3Store)
    uri = store.put_bytes("models/ns/m/runs/r/model.skops", b"abc")
    assert uri == "s3://roundtrip/team/a/models/ns/m/runs/r/model.skops"
    assert (
        client.get_object(Bucket="roundtrip", Key="team/a/models/ns/m/runs/r/model.skops")["Body"].read()
        == b"abc"
    )
    assert store.exists("models/ns/m/runs/r/model.skops")
    assert not store.exists("models/ns/m/runs/r/other")
    assert store.get_bytes("models/ns/m/runs/r/model.skops") == b"abc"
    assert store.open("models/ns/m/runs/r/model.skops").read() == b"abc"
    assert store.local_path("models/ns/m/runs/r/model.skops") is None
    assert store_mod.read_uri(uri, store) == b"abc"
    assert store_mod.read_uri(uri, None) == b"abc"  # s3:// readable without the store
    assert store.list_keys("models/") == ["models/ns/m/runs/r/model.skops"]
    store.delete("models/ns/m/runs/r/model.skops")
    assert store.list_keys("models/") == []
    with pytest.raises(store_mod.ArtifactNotFound):
        store.get_bytes("models/ns/m/runs/r/model.skops")
    with pytest.raises(store_mod.StoreUnavailable):
        store_mod.open_store("s3://no-such-bucket/x").put_bytes("a", b"x")


def test_s3_store_end_to_end_through_the_cli(tmp_path: Path, s3_env: dict[str, str]) -> None:
    """data (from an S3 source) -> train -> validate --publish, all against the S3 store."""
    client = make_bucket(s3_env[store_mod.ENV_S3_ENDPOINT], "ml-artifacts")
    csv = load_iris(as_frame=True).frame.to_csv(index=False).encode()
    client.put_object(Bucket="ml-artifacts", Key="raw/iris.csv", Body=csv)
    store = "s3://ml-artifacts/store"
    obj = dataset({"s3": {"uri": "s3://ml-artifacts/raw/iris.csv"}})
    data = run_cli(["data", "--spec-json", json.dumps(obj)], store=store, tmp=tmp_path, env=s3_env)
    assert data.code == 0, data
    sha = data.result["sha256"]
    assert data.result["uri"] == f"s3://ml-artifacts/store/datasets/sha256/{sha}/data.parquet"
    # same content as the builtin: same digest
    from workload_helpers import snapshot_inproc

    assert snapshot_inproc(builtin("iris"), tmp_path / "local")["sha256"] == sha

    run = training_run("sklearn.tree.DecisionTreeClassifier", {"max_depth": 3})
    trained = run_cli(train_args(run, data.result), store=store, tmp=tmp_path, env=s3_env)
    assert trained.code == 0, trained
    assert trained.result["artifact"]["uri"] == "s3://ml-artifacts/store/models/ml/m/runs/run-1/model.skops"
    assert trained.result["profileUri"] == data.result["profileUri"]

    version = model_version(trained.result, data.result, version=4, gates={"min": {"accuracy": 0.8}})
    checked = run_cli(
        ["validate", "--spec-json", json.dumps(version), "--publish"], store=store, tmp=tmp_path, env=s3_env
    )
    assert checked.code == 0, checked
    assert checked.result["validated"] is True
    assert checked.result["publishedUri"] == "s3://ml-artifacts/store/models/ml/m/v4/model.skops"
    keys = sorted(
        o["Key"] for o in client.list_objects_v2(Bucket="ml-artifacts", Prefix="store/")["Contents"]
    )
    assert keys == [
        f"store/datasets/sha256/{sha}/data.parquet",
        f"store/datasets/sha256/{sha}/profile.json",
        "store/models/ml/m/runs/run-1/metadata.json",
        "store/models/ml/m/runs/run-1/model.skops",
        "store/models/ml/m/v4/metadata.json",
        "store/models/ml/m/v4/model.skops",
    ]
    published = client.get_object(Bucket="ml-artifacts", Key="store/models/ml/m/v4/model.skops")[
        "Body"
    ].read()
    assert store_mod.sha256_bytes(published) == trained.result["artifact"]["sha256"]
    assert_store_clean(tmp_path / "local")
    assert (
        "AWS" not in json.dumps(checked.result) and os.environ["AWS_SECRET_ACCESS_KEY"] not in checked.stderr
    )
