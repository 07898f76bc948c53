"""A Dataset's `traffic` source: logged requests joined offline with their feedback labels.

The model servers write request and feedback segments (serve_logging.py); any replica may have
served a request and any replica may have taken its label, so the join happens here, in the data
Job, by `(request id, row)`:

1. Read every segment under `inference-logs/<ns>/<deployment>/` (or, for a `model`, every
   deployment's, keeping that model's rows) and `feedback/<ns>/...`. A segment that cannot be read
   (corrupt, truncated, foreign) is skipped and counted, never fatal.
2. Keep the requests of the window (`lastSeconds` before now), the latest record of each
   `(request id, row)` of each stream (a retried request or a corrected label wins).
3. Inner-join requests and labels; feedback sent with its features adds labelled rows directly.
   Labels with no logged request are counted as `unmatchedLabels` and reported.
4. `lastRows`: the most recent labelled rows. Then the rows are ordered (time, request id, row) so
   the same logs give the same snapshot, byte for byte.
5. With `mergeWith`, a seeded sample of the other Dataset's snapshot is added in the stated share.

The result is a table of the feature columns and the target (named `spec.target`): the data Job
validates, snapshots and profiles it like any other source.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.api import dataset as api
from modelcycle.workloads import serve_logging as logs
from modelcycle.workloads import store as store_mod
from modelcycle.workloads.results import WorkloadError

log = logging.getLogger("modelcycle.workloads.traffic")

KEY = [logs.REQUEST_ID, logs.ROW]
DIRECT = "__direct"
MERGE_SEED = 0


class TooFewLabelledRows(WorkloadError):
    reason = "TooFewLabelledRows"


@dataclass
class Segments:
    frame: pd.DataFrame
    features: list[str]
    read: int = 0
    corrupt: int = 0
    corrupt_keys: list[str] = field(default_factory=list)


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def read_segments(store: store_mod.ArtifactStore, prefix: str, stream: logs.Stream) -> Segments:
    """Every readable segment under `prefix` as one frame; unreadable ones are counted."""
    import pyarrow.parquet as pq

    frames: list[pd.DataFrame] = []
    features: list[str] = []
    out = Segments(pd.DataFrame(), [])
    for key in store.list_keys(prefix):
        if not key.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(io.BytesIO(store.get_bytes(key)))
            meta = json.loads((table.schema.metadata or {}).get(logs.META_KEY, b"{}"))
            if meta.get("stream") != stream:
                raise ValueError(f"not a {stream} segment")
            missing = [c for c in (*KEY, logs.TIME) if c not in table.column_names]
            if missing:
                raise ValueError(f"no column {missing[0]}")
            frame = table.to_pandas()
        except WorkloadError:
            raise  # the store itself is unavailable: transient, retried
        except Exception as exc:  # pyarrow raises many types for a torn or foreign file
            out.corrupt += 1
            if len(out.corrupt_keys) < 5:
                out.corrupt_keys.append(key)
            log.warning(
                "skipping unreadable segment %s: %s", key, str(exc).splitlines()[0] if str(exc) else exc
            )
            continue
        out.read += 1
        for name in meta.get("features") or []:
            if name not in features:
                features.append(name)
        for column in (logs.MODEL, logs.VERSION, logs.REPLICA):
            if column in frame.columns:
                frame[column] = frame[column].astype(object)
        frames.append(frame)
    if frames:
        out.frame = pd.concat(frames, ignore_index=True, sort=False)
    out.features = features
    return out


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    """The last record of each (request id, row)."""
    if frame.empty:
        return frame
    ordered = frame.sort_values(logs.TIME, kind="stable")
    return ordered.drop_duplicates(KEY, keep="last")


def _labels(values: pd.Series) -> pd.Series:
    """Labels as numbers when they all are (integers when integral), else as text."""
    values = values.reset_index(drop=True)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and len(numbers):
        if np.all(np.floor(numbers) == numbers):
            return numbers.astype(np.int64)
        return numbers.astype(np.float64)
    return values.map(lambda v: None if v is None else str(v)).astype(object)


def join(
    requests: Segments,
    feedback: Segments,
    *,
    target: str,
    model: str | None = None,
    last_seconds: int | None = None,
    last_rows: int | None = None,
    now: float | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The labelled rows (features in logged order, then `target`) and the join statistics."""
    now = time.time() if now is None else now
    req = requests.frame
    fb = feedback.frame
    if model is not None:
        if not req.empty and logs.MODEL in req.columns:
            req = req[req[logs.MODEL] == model]
        if not fb.empty and logs.MODEL in fb.columns:
            fb = fb[fb[logs.MODEL] == model]
    all_requests = _latest(req)
    windowed = all_requests
    since = None
    if last_seconds is not None and not windowed.empty:
        since = now - last_seconds
        windowed = windowed[windowed[logs.TIME] >= since]
    features = list(requests.features)
    for name in feedback.features:
        if name not in features:
            features.append(name)
    stats: dict[str, Any] = {
        "logged": len(windowed),
        "labelled": len(fb),
        "segments": requests.read + feedback.read,
        "corruptSegments": requests.corrupt + feedback.corrupt,
        "until": _rfc3339(now),
    }
    if since is not None:
        stats["since"] = _rfc3339(since)
    by_id = fb[fb[logs.REQUEST_ID].notna()] if not fb.empty else fb
    with_features = fb[fb[logs.REQUEST_ID].isna()] if not fb.empty else fb
    labels = _latest(by_id)
    parts: list[pd.DataFrame] = []
    if not labels.empty and not windowed.empty:
        right = labels[[*KEY, logs.LABEL]].rename(columns={logs.LABEL: "__label"})
        joined = windowed.merge(right, on=KEY, how="inner", validate="one_to_one")
        parts.append(joined.assign(**{logs.LABEL: joined["__label"], DIRECT: False}))
    known = (
        pd.MultiIndex.from_frame(all_requests[KEY])
        if not all_requests.empty
        else pd.MultiIndex.from_tuples([], names=KEY)
    )
    unmatched = 0
    if not labels.empty:
        unmatched = int((~pd.MultiIndex.from_frame(labels[KEY]).isin(known)).sum())
    direct = with_features
    if not direct.empty:
        present = [f for f in features if f in direct.columns]
        direct = direct.dropna(subset=present, how="all") if present else direct.iloc[0:0]
        if since is not None:
            direct = direct[direct[logs.TIME] >= since]
    if not direct.empty:
        parts.append(direct.assign(**{DIRECT: True}))
    stats["unmatchedLabels"] = unmatched
    if not parts:
        stats["joined"] = stats["labelledWithFeatures"] = 0
        return pd.DataFrame({**{f: [] for f in features}, target: []}), stats
    rows = pd.concat(parts, ignore_index=True, sort=False)
    rows = rows.sort_values([logs.TIME, logs.REQUEST_ID, logs.ROW], kind="stable", na_position="last")
    if last_rows is not None:
        rows = rows.tail(last_rows)
    # What the window kept: joined rows, and labelled rows that came with their features.
    stats["labelledWithFeatures"] = int(rows[DIRECT].astype(bool).sum())
    stats["joined"] = len(rows) - stats["labelledWithFeatures"]
    result = pd.DataFrame({f: rows[f].reset_index(drop=True) if f in rows else None for f in features})
    result[target] = _labels(rows[logs.LABEL])
    return result.reset_index(drop=True), stats


def merge(traffic: pd.DataFrame, base: pd.DataFrame, share: float, target: str) -> tuple[pd.DataFrame, int]:
    """`traffic` plus a seeded sample of `base` making up `share` of the result (base's columns)."""
    wanted = round(len(traffic) * share / (1 - share))
    sample = base if wanted >= len(base) else base.sample(n=wanted, random_state=MERGE_SEED).sort_index()
    columns = list(base.columns)
    missing = [c for c in columns if c not in traffic.columns]
    if missing:
        raise WorkloadError(
            f"the traffic has no column {missing[0]!r} of spec.source.traffic.mergeWith's snapshot",
            reason="ValidationFailed",
            details={
                "violations": [f"column {c!r} of the merged Dataset is not in the traffic" for c in missing]
            },
        )
    traffic = traffic[columns].copy()
    if pd.api.types.is_integer_dtype(base[target].dtype) and pd.api.types.is_numeric_dtype(traffic[target]):
        traffic[target] = traffic[target].astype(base[target].dtype)
    return pd.concat([sample, traffic], ignore_index=True), len(sample)


def load_traffic(
    spec: api.DatasetSpec,
    store: store_mod.ArtifactStore,
    *,
    namespace: str,
    merge_frame: pd.DataFrame | None = None,
    merge_sha256: str | None = None,
    now: float | None = None,
) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """The joined labelled traffic (merged when asked), where it came from, and the statistics."""
    source = spec.source.traffic
    assert source is not None
    deployment = source.deployment
    requests = read_segments(store, logs.stream_prefix("requests", namespace, deployment), "requests")
    feedback = read_segments(store, logs.stream_prefix("feedback", namespace, deployment), "feedback")
    window = source.window or api.TrafficWindow()
    frame, stats = join(
        requests,
        feedback,
        target=spec.target,
        model=source.model,
        last_seconds=window.last_seconds,
        last_rows=window.last_rows,
        now=now,
    )
    if requests.corrupt_keys or feedback.corrupt_keys:
        stats["corruptExamples"] = [*requests.corrupt_keys, *feedback.corrupt_keys][:5]
    where = f"traffic:{namespace}/{deployment or 'model=' + str(source.model)}"
    labelled = len(frame)
    if labelled < source.min_labelled_rows:
        raise TooFewLabelledRows(
            f"{where} has {labelled} labelled rows in its window; spec.source.traffic.minLabelledRows is "
            f"{source.min_labelled_rows} ({stats['logged']} rows logged, {stats['labelled']} labels, "
            f"{stats['unmatchedLabels']} unmatched)",
            details={"traffic": stats},
        )
    if source.merge_with is not None:
        if merge_frame is None:
            raise WorkloadError(
                f"spec.source.traffic.mergeWith names Dataset {source.merge_with.dataset!r} but the Job was "
                "given no snapshot of it (--merge-snapshot-uri)",
                reason="InvalidSpec",
                exit_code=2,
            )
        frame, merged = merge(frame, merge_frame, source.merge_with.share, spec.target)
        stats["mergedRows"] = merged
        if merge_sha256:
            stats["mergedSnapshot"] = merge_sha256
    log.info("traffic join %s: %s", where, stats)
    return frame, where, stats
