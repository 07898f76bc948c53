"""The artifact store: where snapshots, profiles and models live.

One small interface, two backends:

- `LocalStore`: a directory (the artifact PVC mounted at `/artifacts` in a pod, any directory on a
  laptop). It hands out `pvc://<key>` URIs, relative to the store root so they stay valid wherever
  the volume is mounted. It also reads `file:///absolute/path` URIs.
- `S3Store`: `s3://bucket/prefix` in any S3-compatible service (boto3, extra `modelcycle[s3]`).
  Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the endpoint from
  MODELCYCLE_S3_ENDPOINT (unset: AWS).

Which store: `--store` on the command line, else env MODELCYCLE_STORE, else `/artifacts`.

Writes are atomic: the local backend writes a hidden temporary file in the target directory and
renames it over the final name; S3 writes each object with one PUT. A reader never sees a
half-written file under its final name.

Layout (keys relative to the store root):

    datasets/sha256/<hex>/data.parquet        content-addressed snapshot (+ profile.json beside it)
    models/<namespace>/<model>/runs/<run>/    model.skops + metadata.json written by training
    models/<namespace>/<model>/v<N>/          model.skops + metadata.json published by validation
    inference-logs/<namespace>/<deployment>/  served requests, Parquet segments (serve_logging.py)
    feedback/<namespace>/<deployment>/        feedback labels, Parquet segments (serve_logging.py)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from modelcycle.workloads.results import EXIT_TRANSIENT, WorkloadError

DEFAULT_ROOT = "/artifacts"
ENV_STORE = "MODELCYCLE_STORE"
ENV_S3_ENDPOINT = "MODELCYCLE_S3_ENDPOINT"
TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class StoreUnavailable(WorkloadError):
    reason = "StoreUnavailable"
    exit_code = EXIT_TRANSIENT


class ArtifactNotFound(WorkloadError):
    reason = "ArtifactUnavailable"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*$")


def check_key(key: str) -> str:
    """A store key: relative, `/`-separated, no empty, `.`/`..` or hidden segments."""
    parts = key.split("/")
    if not key or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise WorkloadError(f"invalid artifact key {key!r}", reason="InvalidArtifactKey")
    return key


def join_key(*parts: str) -> str:
    return check_key("/".join(p.strip("/") for p in parts if p))


@runtime_checkable
class ArtifactStore(Protocol):
    """What workloads need from a store. Keys are relative paths such as `datasets/sha256/<hex>/x`."""

    @property
    def root_uri(self) -> str:
        """`pvc://`, `file:///dir` or `s3://bucket/prefix`, for messages."""
        ...

    def uri_for(self, key: str) -> str:
        """The URI other components use to read `key` back."""
        ...

    def key_for(self, uri: str) -> str | None:
        """The key of `uri` when it lives in this store, else None."""
        ...

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store `data` under `key` atomically; returns its URI."""
        ...

    def put_file(self, key: str, path: str | Path) -> str:
        """Store a local file under `key` atomically; returns its URI."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object. Raises ArtifactNotFound."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary file object. Raises ArtifactNotFound."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove `key` if present."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under a `/`-terminated prefix, sorted, temporary files excluded."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file of `key` on the local filesystem, or None (S3)."""
        ...


class LocalStore:
    """A directory. URIs: `pvc://<key>`; `file:///abs` URIs inside the root map to keys too."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def root_uri(self) -> str:
        return self.root.as_uri()

    def uri_for(self, key: str) -> str:
        return "pvc://" + check_key(key)

    def key_for(self, uri: str) -> str | None:
        if uri.startswith("pvc://"):
            return check_key(uri[len("pvc://") :])
        if uri.startswith("file://"):
            path = Path(unquote(urlsplit(uri).path))
            with contextlib.suppress(ValueError):
                return check_key(path.relative_to(self.root).as_posix())
        return None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write_atomically(self, key: str, writer: Any) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create {path.parent} in the artifact store {self.root}: {exc.strerror or exc}; "
                f"pass --store DIR or set {ENV_STORE}"
            ) from exc
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}"
        try:
            with open(tmp, "xb") as fh:
                writer(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise StoreUnavailable(f"cannot write {path}: {exc.strerror or exc}") from exc
            raise
        with contextlib.suppress(OSError):  # make the rename durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self.uri_for(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._write_atomically(key, lambda fh: fh.write(data))

    def put_file(self, key: str, path: str | Path) -> str:
        with open(path, "rb") as src:
            return self._write_atomically(key, lambda fh: shutil.copyfileobj(src, fh, _CHUNK))

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFound(
                f"{self.uri_for(key)} not found in the artifact store {self.root}"
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {path}: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(TMP_PREFIX):
                keys.append(path.relative_to(self.root).as_posix())
        return sorted(keys)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Store:
    """`s3://bucket/prefix`. Each write is one PUT, so an object is complete or absent."""

    def __init__(
        self, bucket: str, prefix: str = "", *, client: Any = None, endpoint: str | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._endpoint = endpoint

    def __repr__(self) -> str:
        return f"S3Store({self.root_uri!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self._endpoint)
        return self._client

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def key_for(self, uri: str) -> str | None:
        bucket, object_key = parse_s3_uri(uri) if uri.startswith("s3://") else ("", "")
        if bucket != self.bucket:
            return None
        if not self.prefix:
            return check_key(object_key)
        if object_key.startswith(self.prefix + "/"):
            return check_key(object_key[len(self.prefix) + 1 :])
        return None

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, Key=self._object_key(key), **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtifactNotFound(f"{self.uri_for(key)} not found") from exc
            if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreUnavailable(f"cannot {what} {self.uri_for(key)}: {code}", exit_code=1) from exc
            raise StoreUnavailable(f"cannot {what} {self.uri_for(key)}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"cannot {what} {self.uri_for(key)}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> str:
        self._call("write", key, self.client.put_object, Body=data)
        return self.uri_for(key)

    def put_file(self, key: str, path: str | Path) -> str:
        with open(path, "rb") as fh:  # a single PUT (up to 5 GiB), never a multipart upload
            self._call("write", key, self.client.put_object, Body=fh)
        return self.uri_for(key)

    def get_bytes(self, key: str) -> bytes:
        response = self._call("read", key, self.client.get_object)
        return bytes(response["Body"].read())

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("inspect", key, self.client.head_object)
        except ArtifactNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object)

    def list_keys(self, prefix: str) -> list[str]:
        full = (
            self._object_key(prefix.rstrip("/")) + "/"
            if prefix
            else (self.prefix + "/" if self.prefix else "")
        )
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                name = str(item["Key"])
                keys.append(name[len(self.prefix) + 1 :] if self.prefix else name)
        return sorted(keys)

    def local_path(self, key: str) -> Path | None:
        return None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise WorkloadError(f"not an S3 URI: {uri!r}", reason="InvalidSpec", exit_code=2)
    return parts.netloc, parts.path.lstrip("/")


def s3_client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client: endpoint from the argument or MODELCYCLE_S3_ENDPOINT, credentials from env."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the image
        raise StoreUnavailable(
            "S3 support needs boto3: install modelcycle[s3]", reason="S3Unsupported", exit_code=1
        ) from exc
    endpoint = endpoint or os.environ.get(ENV_S3_ENDPOINT) or None
    config = Config(
        connect_timeout=10,
        read_timeout=60,
        retries={"max_attempts": 4, "mode": "standard"},
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """The `--store` option of the workload commands, which open_store reads."""
    parser.add_argument(
        "--store",
        metavar="STORE",
        help="artifact store: DIR, file:///DIR or s3://bucket/prefix "
        f"(default: env {ENV_STORE}, else {DEFAULT_ROOT})",
    )


def open_store(spec: str | None = None) -> ArtifactStore:
    """The store named by `spec` (the --store flag), else env MODELCYCLE_STORE, else /artifacts.

    `s3://bucket[/prefix]` is an S3Store; `file:///dir` or a path is a LocalStore.
    """
    value = spec or os.environ.get(ENV_STORE) or DEFAULT_ROOT
    if value.startswith("s3://"):
        bucket, prefix = parse_s3_uri(value if "/" in value[5:] else value + "/")
        return S3Store(bucket, prefix)
    if value.startswith("file://"):
        return LocalStore(unquote(urlsplit(value).path))
    if "://" in value:
        raise WorkloadError(
            f"unsupported store {value!r}: use a directory, file:///dir or s3://bucket/prefix",
            reason="InvalidSpec",
            exit_code=2,
        )
    return LocalStore(value)


def read_uri(uri: str, store: ArtifactStore | None = None) -> bytes:
    """Read any artifact URI: `pvc://` (from the local store), `file://`, `s3://`, or an absolute path."""
    if store is not None:
        key = store.key_for(uri)
        if key is not None:
            return store.get_bytes(key)
    if uri.startswith("pvc://"):
        raise StoreUnavailable(
            f"{uri} lives on the artifact volume but the store is {store.root_uri if store else 'unset'}; "
            "pass --store DIR pointing at the volume",
            exit_code=1,
        )
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        return S3Store(bucket, "").get_bytes(key)
    if uri.startswith("file://") or uri.startswith("/"):
        path = Path(unquote(urlsplit(uri).path)) if uri.startswith("file://") else Path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"{uri} not found") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {uri}: {exc.strerror or exc}") from exc
    raise WorkloadError(f"unsupported artifact URI {uri!r}", reason="InvalidSpec", exit_code=2)


def sibling_uri(uri: str, name: str) -> str:
    """The URI of `name` in the same directory as `uri`."""
    return uri.rsplit("/", 1)[0] + "/" + name
