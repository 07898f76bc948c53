"""Load a Dataset's source into a pandas DataFrame: builtin, url, s3, pvc or configMap."""

from __future__ import annotations

import io
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from modelcycle.api import dataset as api
from modelcycle.workloads import inputs
from modelcycle.workloads import store as store_mod
from modelcycle.workloads.results import EXIT_TRANSIENT, InvalidSpec, WorkloadError

log = logging.getLogger("modelcycle.workloads.sources")

DEFAULT_PVC_ROOT = "/data"
DEFAULT_CONFIG_MAP_DIR = "/config"
ENV_MAX_BYTES = "MODELCYCLE_MAX_SOURCE_BYTES"
ENV_HTTP_TIMEOUT = "MODELCYCLE_HTTP_TIMEOUT"
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB
DEFAULT_HTTP_TIMEOUT = 60.0


class SourceUnavailable(WorkloadError):
    reason = "SourceUnavailable"


class SourceUnreadable(WorkloadError):
    reason = "SourceUnreadable"


def max_source_bytes() -> int:
    try:
        return int(os.environ.get(ENV_MAX_BYTES, DEFAULT_MAX_BYTES))
    except ValueError as exc:
        raise InvalidSpec(f"{ENV_MAX_BYTES} must be an integer") from exc


def http_timeout() -> float:
    try:
        return float(os.environ.get(ENV_HTTP_TIMEOUT, DEFAULT_HTTP_TIMEOUT))
    except ValueError as exc:
        raise InvalidSpec(f"{ENV_HTTP_TIMEOUT} must be a number of seconds") from exc


def _too_large(where: str, size: int | str, limit: int) -> SourceUnavailable:
    return SourceUnavailable(
        f"{where} is larger than the limit of {limit} bytes ({size}); raise {ENV_MAX_BYTES} to allow it",
        reason="SourceTooLarge",
        exit_code=1,
    )


def load_builtin(name: str) -> pd.DataFrame:
    from sklearn import datasets

    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
        "digits": datasets.load_digits,
    }.get(name)
    if loader is None:
        raise InvalidSpec(f"unknown builtin data set {name!r}")
    bunch: Any = loader(as_frame=True)
    return pd.DataFrame(bunch.frame).reset_index(drop=True)


def fetch_url(url: str) -> bytes:
    limit = max_source_bytes()
    request = urllib.request.Request(url, headers={"User-Agent": "modelcycle-data"})
    try:
        with urllib.request.urlopen(request, timeout=http_timeout()) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise _too_large(url, length, limit)
            data = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        transient = exc.code >= 500 or exc.code in (408, 429)
        raise SourceUnavailable(
            f"GET {url} failed: HTTP {exc.code} {exc.reason}",
            exit_code=EXIT_TRANSIENT if transient else 1,
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceUnavailable(f"GET {url} failed: {reason}", exit_code=EXIT_TRANSIENT) from exc
    if len(data) > limit:
        raise _too_large(url, f"more than {limit}", limit)
    return bytes(data)


def fetch_s3(source: api.S3Source) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = store_mod.parse_s3_uri(source.uri)
    client = store_mod.s3_client(source.endpoint)
    limit = max_source_bytes()
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        size = int(response.get("ContentLength") or 0)
        if size > limit:
            response["Body"].close()
            raise _too_large(source.uri, size, limit)
        return bytes(response["Body"].read())
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        permanent = code in ("NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "404")
        raise SourceUnavailable(
            f"cannot read {source.uri}: {code or exc}", exit_code=1 if permanent else EXIT_TRANSIENT
        ) from exc
    except BotoCoreError as exc:
        raise SourceUnavailable(f"cannot read {source.uri}: {exc}", exit_code=EXIT_TRANSIENT) from exc


def read_local(path: Path, what: str) -> bytes:
    """The bytes of a file already resolved inside its volume (see `inputs.under`)."""
    limit = max_source_bytes()
    try:
        size = path.stat().st_size
        if size > limit:
            raise _too_large(str(path), size, limit)
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise SourceUnavailable(f"{what} file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise SourceUnavailable(f"{what} path {path} is a directory, not a file") from exc
    except OSError as exc:
        raise SourceUnavailable(
            f"cannot read {what} file {path}: {exc.strerror or exc}", exit_code=EXIT_TRANSIENT
        ) from exc


def parse_table(data: bytes, fmt: str, where: str) -> pd.DataFrame:
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(io.BytesIO(data)).to_pandas().reset_index(drop=True)
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas/pyarrow raise many types for bad input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceUnreadable(f"{where} is not a readable {fmt.upper()} file: {first}") from exc


def load_source(
    spec: api.DatasetSpec,
    *,
    pvc_root: str | Path = DEFAULT_PVC_ROOT,
    config_map_dir: str | Path = DEFAULT_CONFIG_MAP_DIR,
) -> tuple[pd.DataFrame, str]:
    """The raw table of the source and a short description of where it came from."""
    source = spec.source
    if source.builtin is not None:
        return load_builtin(source.builtin.name), f"builtin:{source.builtin.name}"
    if source.url is not None:
        where = source.url
        data = fetch_url(source.url)
    elif source.s3 is not None:
        where = source.s3.uri
        data = fetch_s3(source.s3)
    elif source.pvc is not None:
        # The names and paths are checked again here (the API server checked them too): the claim
        # is a directory under --pvc-root and the file must stay inside it, symlinks followed.
        claim = inputs.name(source.pvc.claim_name, "spec.source.pvc.claimName")
        relative = inputs.relative_path(source.pvc.path, "spec.source.pvc.path")
        volume = inputs.under(pvc_root, claim, field="spec.source.pvc.claimName")
        where = f"pvc:{claim}/{relative}"
        data = read_local(inputs.under(volume, relative, field="spec.source.pvc.path"), f"PVC {claim}")
    elif source.config_map is not None:
        config_map = inputs.name(source.config_map.name, "spec.source.configMap.name")
        key = inputs.relative_path(source.config_map.key, "spec.source.configMap.key")
        if "/" in key:
            raise InvalidSpec(f"spec.source.configMap.key: {key!r} must not contain '/'")
        volume = inputs.under(config_map_dir, config_map, field="spec.source.configMap.name")
        where = f"configMap:{config_map}/{key}"
        data = read_local(
            inputs.under(volume, key, field="spec.source.configMap.key"), f"ConfigMap {config_map}"
        )
    else:
        raise InvalidSpec("spec.source must set exactly one of builtin, url, s3, pvc, configMap, traffic")
    log.info("read %d bytes from %s", len(data), where)
    return parse_table(data, spec.format, where), where
