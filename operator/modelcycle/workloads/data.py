"""`modelcycle data`: snapshot a Dataset's source, validate it, profile it, store both.

    modelcycle data --spec FILE|- | --spec-json JSON [--store STORE]
                    [--pvc-root DIR] [--config-map-dir DIR] [--termination-log PATH]

On success the store holds `datasets/sha256/<hex>/profile.json` and then (last, so its presence
means the snapshot is complete) `datasets/sha256/<hex>/data.parquet`. On a validation failure
nothing is written and the result lists every violation (the first 20, plus a count).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.api import dataset as api
from modelcycle.workloads import inputs, sources, specfile
from modelcycle.workloads import profile as profile_mod
from modelcycle.workloads import snapshot as snap_mod
from modelcycle.workloads import store as store_mod
from modelcycle.workloads.results import WorkloadError, add_common_arguments, run_workload

log = logging.getLogger("modelcycle.workloads.data")

MAX_REPORTED_VIOLATIONS = 20
_EXAMPLES = 3


def configure(parser: argparse.ArgumentParser) -> None:
    specfile.add_spec_arguments(parser, "Dataset")
    store_mod.add_store_argument(parser)
    parser.add_argument(
        "--pvc-root",
        metavar="DIR",
        default=sources.DEFAULT_PVC_ROOT,
        help="where PVC sources are mounted: DIR/<claimName>/<path> (default /data)",
    )
    parser.add_argument(
        "--config-map-dir",
        metavar="DIR",
        default=sources.DEFAULT_CONFIG_MAP_DIR,
        help="where configMap sources are mounted: DIR/<name>/<key> (default /config)",
    )
    parser.add_argument(
        "--merge-snapshot-uri",
        metavar="URI",
        help="traffic sources with mergeWith: the snapshot of that Dataset (the operator passes it)",
    )
    parser.add_argument("--merge-snapshot-sha256", metavar="HEX", help="its sha256 (checked)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def body() -> dict[str, Any]:
        spec, metadata = specfile.load(args, "Dataset", api.DatasetSpec)
        store = store_mod.open_store(args.store)
        # A path segment of the logs a traffic source reads: a Kubernetes name, nothing else.
        namespace = inputs.name(str(metadata.get("namespace") or "default"), "metadata.namespace", label=True)
        return snapshot_dataset(
            spec,
            store,
            pvc_root=args.pvc_root,
            config_map_dir=args.config_map_dir,
            namespace=namespace,
            merge_uri=args.merge_snapshot_uri,
            merge_sha256=args.merge_snapshot_sha256,
        )

    return run_workload(args, body)


# --- validation ---------------------------------------------------------------------------------


def _examples(values: pd.Series) -> str:
    distinct = sorted({str(v)[:40] for v in values.tolist()})
    shown = ", ".join(repr(v) for v in distinct[:_EXAMPLES])
    return shown + (", ..." if len(distinct) > _EXAMPLES else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def select_features(frame: pd.DataFrame, spec: api.DatasetSpec) -> tuple[list[str], list[str]]:
    """The feature columns in snapshot order and the column-level violations."""
    violations: list[str] = []
    columns = [str(c) for c in frame.columns]
    present = set(columns)
    schema = {c.name: c for c in spec.schema_ or []}
    target = spec.target
    if target not in present:
        violations.append(f"target column {target!r} is missing")
    if spec.features is not None:
        features = list(spec.features)
        seen: set[str] = set()
        for name in features:
            if name in seen:
                violations.append(f"feature column {name!r} is listed twice in spec.features")
            seen.add(name)
            if name == target:
                violations.append(f"column {name!r} is both the target and a feature")
            elif name not in present:
                violations.append(f"feature column {name!r} is missing")
    else:
        features = [c for c in columns if c != target and (not schema or c in schema)]
        if schema:
            for c in columns:
                if c != target and c not in schema:
                    violations.append(f"unexpected column {c!r} (not in spec.schema)")
    for name in schema:
        if name not in present and name != target and name not in (spec.features or []):
            violations.append(f"column {name!r} declared in spec.schema is missing")
    if not [f for f in features if f in present and f != target]:
        violations.append("no feature columns: the data holds only the target")
    return [f for f in dict.fromkeys(features) if f != target], violations


def _check_numeric(name: str, series: pd.Series, column: api.ColumnSchema | None) -> list[str]:
    declared = column.type if column else None
    violations: list[str] = []
    values = series.dropna()
    if pd.api.types.is_bool_dtype(series.dtype):
        if declared in ("number", "integer"):
            violations.append(f"column {name!r}: expected {declared}, found booleans")
        return violations
    if not pd.api.types.is_numeric_dtype(series.dtype):
        if declared not in ("number", "integer"):
            return violations
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna()]
        if len(bad):
            violations.append(
                f"column {name!r}: expected {declared} but found "
                f"{_plural(len(bad), 'non-numeric value')} (e.g. {_examples(bad)})"
            )
        values = numbers.dropna()
    arr = values.to_numpy(dtype=np.float64)
    infinite = int(np.isinf(arr).sum())
    if infinite:
        violations.append(f"column {name!r}: {_plural(infinite, 'infinite value')}")
    finite = arr[np.isfinite(arr)]
    if declared == "integer":
        fractional = finite[finite != np.floor(finite)]
        if fractional.size:
            violations.append(
                f"column {name!r}: expected integer but found "
                f"{_plural(fractional.size, 'fractional value')} (e.g. {_examples(pd.Series(fractional))})"
            )
    if column is not None and column.min is not None:
        below = finite[finite < column.min]
        if below.size:
            violations.append(
                f"column {name!r}: {_plural(below.size, 'value')} below min {column.min:g} "
                f"(smallest {below.min():g})"
            )
    if column is not None and column.max is not None:
        above = finite[finite > column.max]
        if above.size:
            violations.append(
                f"column {name!r}: {_plural(above.size, 'value')} above max {column.max:g} "
                f"(largest {above.max():g})"
            )
    return violations


def _check_column(
    name: str, series: pd.Series, column: api.ColumnSchema | None, rules: api.ValidationRules, is_target: bool
) -> list[str]:
    violations = _check_numeric(name, series, column)
    values = series.dropna()
    if column is not None and column.type == "boolean" and not pd.api.types.is_bool_dtype(series.dtype):
        bad = values[values.map(lambda v: snap_mod.parse_bool(v) is None)]
        if len(bad):
            violations.append(
                f"column {name!r}: expected boolean (true/false/yes/no/1/0) but found "
                f"{_plural(len(bad), 'other value')} (e.g. {_examples(bad)})"
            )
    if column is not None and column.allowed_values is not None:
        allowed = set(column.allowed_values)
        labels = values.map(profile_mod.category_label)
        bad = labels[~labels.isin(allowed)]
        if len(bad):
            violations.append(
                f"column {name!r}: {_plural(len(bad), 'value')} not in allowedValues (e.g. {_examples(bad)})"
            )
    nulls = int(series.isna().sum())
    rows = len(series)
    if nulls and is_target:
        violations.append(f"target column {name!r} has {_plural(nulls, 'null')}: every row needs a label")
    elif nulls and column is not None and not column.nullable:
        violations.append(f"column {name!r} has {_plural(nulls, 'null')} but is not nullable")
    elif nulls:
        explicit = rules.max_null_fraction if "max_null_fraction" in rules.model_fields_set else None
        limit = explicit if explicit is not None else (1.0 if column is not None else rules.max_null_fraction)
        if nulls / rows > limit:
            violations.append(
                f"column {name!r} has {nulls / rows:.1%} nulls ({nulls} of {rows}); "
                f"validation.maxNullFraction is {limit:g}"
            )
    return violations


def validate_frame(frame: pd.DataFrame, spec: api.DatasetSpec) -> tuple[list[str], list[str]]:
    """The feature columns and every violation of spec.schema and spec.validation."""
    rules = spec.validation or api.ValidationRules()
    features, violations = select_features(frame, spec)
    if len(frame) < rules.min_rows:
        violations.insert(
            0, f"the data has {_plural(len(frame), 'row')}; validation.minRows is {rules.min_rows}"
        )
    schema = {c.name: c for c in spec.schema_ or []}
    for name in [*features, spec.target]:
        if name in frame.columns:
            violations.extend(_check_column(name, frame[name], schema.get(name), rules, name == spec.target))
    return features, violations


# --- snapshot -----------------------------------------------------------------------------------


def make_snapshot(frame: pd.DataFrame, spec: api.DatasetSpec, features: list[str]) -> snap_mod.Snapshot:
    """The canonical snapshot of validated data."""
    schema = {c.name: c for c in spec.schema_ or []}
    columns: list[snap_mod.Column] = []
    data: dict[str, pd.Series] = {}
    for name in features:
        declared = schema[name].type if name in schema else None
        series, type_ = snap_mod.canonical_column(frame[name], declared)
        categorical = declared in ("category", "string", "boolean") or type_ in ("string", "bool")
        columns.append(snap_mod.Column(name, type_, "categorical" if categorical else "numeric"))
        data[name] = series.reset_index(drop=True)
    declared_target = schema[spec.target].type if spec.target in schema else None
    target_series, target_type = snap_mod.canonical_column(frame[spec.target], declared_target)
    columns.append(snap_mod.Column(spec.target, target_type, "target"))
    data[spec.target] = target_series.reset_index(drop=True)
    task = snap_mod.infer_task(target_series, target_type, declared_target)
    return snap_mod.build(pd.DataFrame(data), columns, spec.target, task)


def make_profile(snap: snap_mod.Snapshot) -> dict[str, Any]:
    return profile_mod.build_profile(
        snap.frame,
        features=[(c.name, c.kind, c.type) for c in snap.features],
        target=snap.target,
        task=snap.task,
        classes=snap.classes,
    )


def snapshot_key(sha256: str, name: str) -> str:
    return f"datasets/sha256/{sha256}/{name}"


def snapshot_dataset(
    spec: api.DatasetSpec,
    store: store_mod.ArtifactStore,
    *,
    pvc_root: str = sources.DEFAULT_PVC_ROOT,
    config_map_dir: str = sources.DEFAULT_CONFIG_MAP_DIR,
    namespace: str = "default",
    merge_uri: str | None = None,
    merge_sha256: str | None = None,
) -> dict[str, Any]:
    """Load, validate, snapshot and profile; store profile.json then data.parquet; the result JSON."""
    traffic: dict[str, Any] | None = None
    if spec.source.traffic is not None:
        from modelcycle.workloads import traffic_join

        merge_frame = None
        if merge_uri:
            base = snap_mod.from_parquet(
                store_mod.read_uri(merge_uri, store), merge_sha256, where=f"snapshot {merge_uri}"
            )
            merge_frame = base.frame
            merge_sha256 = base.sha256
        frame, where, traffic = traffic_join.load_traffic(
            spec, store, namespace=namespace, merge_frame=merge_frame, merge_sha256=merge_sha256
        )
    else:
        frame, where = sources.load_source(spec, pvc_root=pvc_root, config_map_dir=config_map_dir)
    features, violations = validate_frame(frame, spec)
    if violations:
        details: dict[str, Any] = {
            "rows": len(frame),
            "columns": len(frame.columns),
            "violations": violations[:MAX_REPORTED_VIOLATIONS],
            "violationCount": len(violations),
        }
        if traffic is not None:
            details["traffic"] = traffic
        raise WorkloadError(
            f"{_plural(len(violations), 'violation')} in {where}: {violations[0]}"
            + ("" if len(violations) == 1 else f" (and {len(violations) - 1} more)"),
            reason="ValidationFailed",
            details=details,
        )
    snap = make_snapshot(frame, spec, features)
    profile_bytes = profile_mod.dumps(make_profile(snap))
    data_bytes = snap_mod.to_parquet(snap)
    data_key = snapshot_key(snap.sha256, "data.parquet")
    profile_key = snapshot_key(snap.sha256, "profile.json")
    existed = store.exists(data_key)
    profile_uri = store.put_bytes(profile_key, profile_bytes)
    try:
        uri = store.put_bytes(data_key, data_bytes)  # last: its presence marks a complete snapshot
    except BaseException:
        if not existed:
            store.delete(profile_key)
        raise
    log.info(
        "snapshot %s: %d rows, %d columns, %s", snap.sha256, len(snap.frame), len(snap.columns), snap.task
    )
    return {
        "sha256": snap.sha256,
        "uri": uri,
        "rows": len(snap.frame),
        "columns": len(snap.columns),
        "task": snap.task,
        "profileUri": profile_uri,
        "profileSha256": store_mod.sha256_bytes(profile_bytes),
        "source": where,
        "violations": [],
        "violationCount": 0,
        **({"traffic": traffic} if traffic is not None else {}),
    }
