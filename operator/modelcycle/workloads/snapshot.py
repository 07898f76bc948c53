"""Dataset snapshots: the canonical table, its content digest, and its Parquet file.

A snapshot holds the feature columns in spec order followed by the target, with one of four
column types: `float64` (nulls are NaN), `int64` (no nulls), `bool` (no nulls) or `string` (UTF-8,
nulls allowed). Its `sha256` is the digest of a canonical byte encoding of the *content*, not of
the Parquet bytes (which embed the writer's version), so the same data gives the same digest on
every machine and with every library version:

    sha256( b"modelcycle-snapshot/v1\\n"
            + header + b"\\n"                  # JSON, keys sorted, separators "," ":", UTF-8
            + column_0 + column_1 + ... )      # in header order

    header   = {"columns": [{"kind", "name", "type"}, ...], "rows": N, "target": str,
                "task": "classification"|"regression", "version": 1}
    float64  = N little-endian IEEE-754 doubles, every NaN as 0x7ff8000000000000
    int64    = N little-endian int64
    bool     = N bytes, 0 or 1
    string   = per value: 4-byte little-endian length + UTF-8 bytes; null as ff ff ff ff

`kind` is `numeric` or `categorical` for features and `target` for the target. The header is
also stored in the Parquet schema metadata (key `modelcycle.snapshot`), so a snapshot file is
self-describing; readers recompute the digest and refuse a mismatch.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.workloads.profile import category_label
from modelcycle.workloads.results import WorkloadError

SNAPSHOT_VERSION = 1
META_KEY = b"modelcycle.snapshot"
MAGIC = b"modelcycle-snapshot/v1\n"
CLASSIFICATION_MAX_CLASSES = 50
_NULL_STRING = b"\xff\xff\xff\xff"
TYPES = ("float64", "int64", "bool", "string")


class DatasetCorrupted(WorkloadError):
    reason = "DatasetCorrupted"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # float64 | int64 | bool | string
    kind: str  # numeric | categorical | target

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "type": self.type}


@dataclass
class Snapshot:
    frame: pd.DataFrame
    columns: list[Column]
    target: str
    task: str
    sha256: str

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.kind != "target"]

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.features]

    @property
    def classes(self) -> list[Any]:
        if self.task != "classification":
            return []
        values = self.frame[self.target].dropna().unique().tolist()
        return sorted(values, key=lambda v: (str(type(v)), v))

    @property
    def header(self) -> dict[str, Any]:
        return header(self.columns, len(self.frame), self.target, self.task)

    def X(self) -> pd.DataFrame:
        return self.frame[self.feature_names]

    def y(self) -> pd.Series:
        return self.frame[self.target]


def header(columns: list[Column], rows: int, target: str, task: str) -> dict[str, Any]:
    return {
        "columns": [c.to_json() for c in columns],
        "rows": rows,
        "target": target,
        "task": task,
        "version": SNAPSHOT_VERSION,
    }


def _text(series: pd.Series) -> pd.Series:
    """Values as strings (category_label), nulls as None, object dtype."""
    values = [None if _is_null(v) else category_label(v) for v in series.astype(object).tolist()]
    return pd.Series(values, index=series.index, dtype=object, name=series.name)


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


_BOOL_WORDS = {
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "1": True,
    "0": False,
    "1.0": True,
    "0.0": False,
}


def parse_bool(value: Any) -> bool | None:
    """A boolean from bool, 0/1 or the words true/false/yes/no; None if it is not one."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return _BOOL_WORDS.get(str(value).strip().lower())


def canonical_column(series: pd.Series, declared: str | None) -> tuple[pd.Series, str]:
    """Convert a validated column to its snapshot type. `declared`: the schema type, if any."""
    has_nulls = bool(series.isna().any())
    if declared == "string":
        return _text(series), "string"
    if declared == "boolean" and not pd.api.types.is_bool_dtype(series.dtype):
        parsed = series.map(lambda v: None if pd.isna(v) else parse_bool(v))
        if has_nulls:
            return _text(parsed), "string"
        return parsed.astype(bool), "bool"
    if declared in ("number", "integer") and not pd.api.types.is_numeric_dtype(series.dtype):
        series = pd.to_numeric(series, errors="coerce")
    if declared == "integer" and pd.api.types.is_float_dtype(series.dtype) and not has_nulls:
        series = series.astype(np.int64)
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        if has_nulls:
            return _text(series), "string"
        return series.astype(bool), "bool"
    if pd.api.types.is_integer_dtype(dtype):
        if has_nulls:
            return series.astype(np.float64), "float64"
        return series.astype(np.int64), "int64"
    if pd.api.types.is_float_dtype(dtype):
        return series.astype(np.float64), "float64"
    return _text(series), "string"


def infer_task(series: pd.Series, snapshot_type: str, declared: str | None) -> str:
    """classification for labels, regression for quantities (see docs/workloads.md)."""
    if declared in ("category", "string", "boolean") or snapshot_type in ("string", "bool"):
        return "classification"
    if declared == "number" or snapshot_type == "float64":
        return "regression"
    return "classification" if series.nunique() <= CLASSIFICATION_MAX_CLASSES else "regression"


def column_bytes(series: pd.Series, type_: str) -> bytes:
    if type_ == "float64":
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        arr[np.isnan(arr)] = np.nan  # one canonical NaN
        return arr.astype("<f8").tobytes()
    if type_ == "int64":
        return series.to_numpy(dtype=np.int64).astype("<i8").tobytes()
    if type_ == "bool":
        return series.to_numpy(dtype=bool).astype(np.uint8).tobytes()
    if type_ == "string":
        parts = []
        for value in series.astype(object).tolist():
            if _is_null(value):
                parts.append(_NULL_STRING)
            else:
                raw = str(value).encode("utf-8")
                parts.append(len(raw).to_bytes(4, "little") + raw)
        return b"".join(parts)
    raise ValueError(f"unknown snapshot column type {type_!r}")


def digest(frame: pd.DataFrame, columns: list[Column], target: str, task: str) -> str:
    h = hashlib.sha256(MAGIC)
    head = header(columns, len(frame), target, task)
    h.update(json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    h.update(b"\n")
    for column in columns:
        h.update(column_bytes(frame[column.name], column.type))
    return h.hexdigest()


def build(frame: pd.DataFrame, columns: list[Column], target: str, task: str) -> Snapshot:
    """A snapshot of an already canonical frame (columns in order, snapshot types)."""
    frame = frame[[c.name for c in columns]].reset_index(drop=True)
    return Snapshot(frame, columns, target, task, digest(frame, columns, target, task))


def _arrow_type(type_: str) -> Any:
    import pyarrow as pa

    return {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}[type_]


def to_parquet(snap: Snapshot) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in snap.columns])
    arrays = []
    for c in snap.columns:
        values = snap.frame[c.name]
        if c.type == "string":
            texts = [None if _is_null(v) else str(v) for v in values.astype(object).tolist()]
            arrays.append(pa.array(texts, type=pa.string()))
        else:
            arrays.append(pa.array(values.to_numpy(), type=_arrow_type(c.type)))
    meta = json.dumps(snap.header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    table = pa.Table.from_arrays(arrays, schema=schema.with_metadata({META_KEY: meta}))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def from_parquet(data: bytes, expected_sha256: str | None = None, *, where: str = "snapshot") -> Snapshot:
    """Read a snapshot file and verify its content digest against `expected_sha256`."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise ValueError("no modelcycle.snapshot metadata")
        head = json.loads(raw)
        if head.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {head.get('version')!r}")
        columns = [Column(c["name"], c["type"], c["kind"]) for c in head["columns"]]
        frame = table.to_pandas()
    except Exception as exc:
        raise DatasetCorrupted(f"{where} is not a readable ModelCycle snapshot: {exc}") from exc
    for c in columns:
        if c.type == "string":
            frame[c.name] = _text(frame[c.name])
    snap = build(frame, columns, head["target"], head["task"])
    if expected_sha256 is not None and snap.sha256 != expected_sha256:
        raise DatasetCorrupted(
            f"{where} has content sha256 {snap.sha256}, expected {expected_sha256}: "
            "the snapshot changed or is corrupted"
        )
    return snap
