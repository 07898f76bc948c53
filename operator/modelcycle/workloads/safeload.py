"""Load a model artifact without trusting it: sha256 first, then format, then an explicit type list.

    estimator = load_model(path_or_bytes, expected_sha256=hex)

1. The SHA-256 of the bytes must equal `expected_sha256` (ArtifactCorrupted otherwise). The bytes
   are read once and everything below works on that same buffer.
2. The bytes must be a skops archive: a zip file with `schema.json` and only `.npy` / `.npz`
   members. Pickle, joblib (raw, zlib, gzip, bz2, xz, lzma) and anything else are refused without
   being unpickled or decompressed (UnsafeFormat).
3. `skops.io.get_untrusted_types` lists the types the file would build beyond skops' own safe
   defaults; it reads only the schema and imports nothing. Each must live in a trusted module:
   `sklearn.`, `numpy.`, `scipy.`, a few inert builtins, or a prefix from env
   MODELCYCLE_TRUSTED_TYPE_PREFIXES (comma-separated). Any other type refuses the file before
   a single object is built (UntrustedType).
4. `skops.io.load(..., trusted=<exactly the accepted types>)`.

The model server uses `load_model` too; the errors are WorkloadErrors with those reasons.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelcycle.workloads.results import WorkloadError
from modelcycle.workloads.store import sha256_bytes

TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.", "scipy.")
TRUSTED_BUILTINS = frozenset(
    {"builtins.slice", "builtins.complex", "builtins.frozenset", "builtins.bytes", "builtins.bytearray"}
)
ENV_TRUSTED_PREFIXES = "MODELCYCLE_TRUSTED_TYPE_PREFIXES"
ZIP_MAGIC = b"PK\x03\x04"
MAX_SCHEMA_BYTES = 64 << 20


class ArtifactCorrupted(WorkloadError):
    reason = "ArtifactCorrupted"


class UnsafeFormat(WorkloadError):
    reason = "UnsafeFormat"


class UntrustedType(WorkloadError):
    reason = "UntrustedType"


def _sniff(data: bytes) -> str:
    """What a non-skops file most likely is, for the refusal message."""
    if data[:1] == b"\x80" and len(data) > 1 and data[1] <= 5:
        return "a pickle (or joblib) file"
    if data[:1] == b"x" and len(data) > 1 and (data[0] * 256 + data[1]) % 31 == 0:
        return "a zlib-compressed (joblib) file"
    for magic, name in (
        (b"\x1f\x8b", "gzip"),
        (b"BZh", "bzip2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x5d\x00\x00", "lzma"),
    ):
        if data.startswith(magic):
            return f"a {name}-compressed (joblib) file"
    if data[:1] in (b"(", b"c", b"]", b"}") and data.rstrip().endswith(b"."):
        return "a protocol-0 pickle file"
    return "not a skops file"


def trusted_prefixes(extra: Iterable[str] = ()) -> tuple[str, ...]:
    env = [p.strip() for p in os.environ.get(ENV_TRUSTED_PREFIXES, "").split(",") if p.strip()]
    return (*TRUSTED_PREFIXES, *(p if p.endswith(".") else p + "." for p in [*env, *extra]))


def is_trusted(type_name: str, prefixes: tuple[str, ...] = TRUSTED_PREFIXES) -> bool:
    return type_name in TRUSTED_BUILTINS or type_name.startswith(prefixes)


def check_format(data: bytes, where: str = "artifact") -> None:
    """Refuse anything but a skops archive, without unpickling or decompressing it."""
    if not data.startswith(ZIP_MAGIC):
        raise UnsafeFormat(f"{where} is {_sniff(data)}: only skops archives are loaded, never pickle/joblib")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        bad = archive.testzip() if len(data) < (256 << 20) else None
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise UnsafeFormat(f"{where} is a damaged zip archive: {exc}") from exc
    if bad is not None:
        raise UnsafeFormat(f"{where} has a damaged member {bad!r}")
    if "schema.json" not in names:
        raise UnsafeFormat(f"{where} is a zip archive but not a skops file (no schema.json)")
    others = [n for n in names if n != "schema.json" and not n.endswith((".npy", ".npz"))]
    if others:
        raise UnsafeFormat(f"{where} holds unexpected members {others[:5]}: a skops file holds only arrays")
    info = archive.getinfo("schema.json")
    if info.file_size > MAX_SCHEMA_BYTES:
        raise UnsafeFormat(f"{where} has an oversized schema ({info.file_size} bytes)")
    try:
        schema = json.loads(archive.read("schema.json"))
    except ValueError as exc:
        raise UnsafeFormat(f"{where} has an unreadable schema.json: {exc}") from exc
    if not isinstance(schema, dict) or "__loader__" not in schema:
        raise UnsafeFormat(f"{where} has a schema.json that skops did not write")


def untrusted_types(data: bytes) -> list[str]:
    """Types skops would need explicit trust for (reads the schema only; imports nothing)."""
    import skops.io as sio

    return sorted(set(sio.get_untrusted_types(data=data)))


def check_types(data: bytes, where: str = "artifact", extra_prefixes: Iterable[str] = ()) -> list[str]:
    """The types to trust when loading, or UntrustedType naming the ones outside the allowlist."""
    prefixes = trusted_prefixes(extra_prefixes)
    try:
        needed = untrusted_types(data)
    except Exception as exc:  # a malformed schema
        raise UnsafeFormat(f"{where} has a schema skops cannot read: {exc}") from exc
    refused = [t for t in needed if not is_trusted(t, prefixes)]
    if refused:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise UntrustedType(
            f"{where} contains types outside the trusted list ({', '.join(prefixes)}): {shown}; "
            "it was not loaded",
            details={"untrustedTypes": refused[:20]},
        )
    return needed


def verify_sha256(data: bytes, expected_sha256: str, where: str = "artifact") -> None:
    actual = sha256_bytes(data)
    if actual != expected_sha256.lower():
        raise ArtifactCorrupted(
            f"{where} has sha256 {actual}, expected {expected_sha256}: the file is corrupted or was replaced"
        )


def load_model(
    source: str | Path | bytes,
    *,
    expected_sha256: str,
    where: str | None = None,
    extra_trusted_prefixes: Iterable[str] = (),
) -> Any:
    """The estimator in a skops file, after the sha256, format and type checks (see module doc)."""
    import skops.io as sio

    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        where = where or "artifact"
    else:
        where = where or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise WorkloadError(
                f"cannot read {where}: {exc.strerror or exc}", reason="ArtifactUnavailable"
            ) from exc
    verify_sha256(data, expected_sha256, where)
    check_format(data, where)
    trusted = check_types(data, where, extra_trusted_prefixes)
    try:
        return sio.loads(data, trusted=trusted)
    except Exception as exc:
        raise UnsafeFormat(f"{where} could not be loaded by skops: {type(exc).__name__}: {exc}") from exc
