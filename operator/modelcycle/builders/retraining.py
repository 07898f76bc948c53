"""The retraining TrainingRun a ModelMonitor creates when drift or a performance drop is detected.

A retraining run is a record, not a disposable child (DESIGN: no ownerReference), so deleting the
monitor never deletes a run or the ModelVersion it registered. It is a clone of the run that
produced the served version (same estimator, preprocessing, split, search, gates, image), on the
monitor's `retrain.datasetRef` when set. Its name is deterministic per cooldown window,
`<monitor>-retrain-<floor(epoch / cooldown)>`, so a second create in the same window (after an
operator restart, or from a second replica) is a 409, never a duplicate.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from modelcycle import API_VERSION, GROUP
from modelcycle.api import modelmonitor
from modelcycle.builders import meta

Trigger = Literal["drift", "performance"]
COMPONENT = "retraining"
TRIGGER_MESSAGE = f"{GROUP}/trigger-message"
SERVED_VERSION = f"{GROUP}/served-version"
MAX_NAME = 63
"""A TrainingRun's name is also a label value (its children's owner label), so at most 63."""


def window(now_epoch: float, cooldown_seconds: int) -> int:
    """The cooldown window `now` falls in. Without a cooldown every second is its own window."""
    return int(now_epoch // cooldown_seconds) if cooldown_seconds > 0 else int(now_epoch)


def run_name(monitor_name: str, window_index: int) -> str:
    return meta.child_name(monitor_name, f"retrain-{window_index}", max_length=MAX_NAME)


def selector(monitor: dict[str, Any]) -> str:
    """Label selector of every retraining run this monitor created."""
    return f"{meta.MONITOR}={meta.label_value(monitor['metadata']['name'])}"


def retraining_run(
    monitor: dict[str, Any],
    source_run: dict[str, Any],
    *,
    retrain: modelmonitor.RetrainSettings,
    trigger: Trigger,
    now_epoch: float,
    message: str = "",
    served_version: int | None = None,
) -> dict[str, Any]:
    """A TrainingRun cloned from `source_run`, named for the current cooldown window, without owner.

    retrain: the monitor's parsed `spec.retrain` (its defaults are the API's)."""
    spec = copy.deepcopy(source_run["spec"])
    if retrain.dataset_ref is not None:
        spec["datasetRef"] = {"name": retrain.dataset_ref.name}
    model = (spec.get("model") or {}).get("name")
    labels = {
        meta.MANAGED_BY: "modelcycle",
        meta.PART_OF: "modelcycle",
        meta.COMPONENT: COMPONENT,
        meta.MONITOR: meta.label_value(monitor["metadata"]["name"]),
        meta.TRIGGER: trigger,
        meta.SOURCE_RUN: meta.label_value(source_run["metadata"]["name"]),
    }
    if model:
        labels[meta.MODEL] = model
    annotations = {TRIGGER_MESSAGE: message[:1024]} if message else {}
    if served_version is not None:
        annotations[SERVED_VERSION] = str(served_version)
    metadata: dict[str, Any] = {
        "name": run_name(monitor["metadata"]["name"], window(now_epoch, retrain.cooldown_seconds)),
        "namespace": monitor["metadata"]["namespace"],
        "labels": labels,
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": "TrainingRun", "metadata": metadata, "spec": spec}


TRAFFIC_SUFFIX = "traffic"
BASE_DATASET = f"{GROUP}/base-dataset"
"""Annotation of a retraining run on traffic: the base Dataset mixed in."""
BASE_SNAPSHOT = f"{GROUP}/base-dataset-sha256"
"""Annotation: the base Dataset's snapshot the traffic Dataset merged (its status.traffic says so too)."""
TRAFFIC_SNAPSHOT = f"{GROUP}/traffic-dataset-sha256"
"""Annotation: the traffic Dataset's snapshot the run was created for."""
RETRAINING_RUN = f"{GROUP}/retraining-run"
"""Annotation of a traffic Dataset: the run it was created for."""
_COPIED = ("target", "features", "schema", "validation")


def traffic_dataset_name(run: str) -> str:
    return meta.child_name(run, TRAFFIC_SUFFIX, max_length=MAX_NAME)


def traffic_dataset(
    monitor: dict[str, Any],
    base: dict[str, Any],
    *,
    run_name: str,
    traffic: modelmonitor.RetrainTraffic,
) -> dict[str, Any]:
    """The Dataset a traffic retraining trains on: the monitored deployment's labelled traffic in
    the window, merged with `base` (the base Dataset) at `traffic.baseShare`, with the base's target,
    features, schema and validation. A record like the run (labels, no owner)."""
    base_spec = base.get("spec") or {}
    source: dict[str, Any] = {
        "deployment": monitor["spec"]["deploymentRef"]["name"],
        "minLabelledRows": traffic.min_labelled_rows,
    }
    if traffic.window is not None:
        source["window"] = traffic.window.to_json_dict()
    if traffic.base_share > 0:
        source["mergeWith"] = {"dataset": base["metadata"]["name"], "share": traffic.base_share}
    spec: dict[str, Any] = {"source": {"traffic": source}}
    spec.update({k: copy.deepcopy(base_spec[k]) for k in _COPIED if base_spec.get(k) is not None})
    return {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {
            "name": traffic_dataset_name(run_name),
            "namespace": monitor["metadata"]["namespace"],
            "labels": {
                meta.MANAGED_BY: "modelcycle",
                meta.PART_OF: "modelcycle",
                meta.COMPONENT: COMPONENT,
                meta.MONITOR: meta.label_value(monitor["metadata"]["name"]),
            },
            "annotations": {BASE_DATASET: base["metadata"]["name"], RETRAINING_RUN: run_name},
        },
        "spec": spec,
    }
