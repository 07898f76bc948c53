"""The ModelVersion a successful TrainingRun registers: a record with lineage, not a disposable child.

DESIGN: a ModelVersion carries no ownerReference, so deleting the run never deletes a registered
model. Instead it carries its origin in labels (`modelcycle.io/model`, `modelcycle.io/version`,
`modelcycle.io/training-run` and `modelcycle.io/training-run-uid`) and in `spec.lineage`. The
uid label is what makes registration restart-safe: before registering, the operator looks for a
ModelVersion with its run's uid and adopts it instead of registering a second one.

Names are `<model>-v<N>`, N the next free version number of the model in the namespace. The name
is what makes numbering race-safe: two runs that pick the same N cannot both create it; the loser
gets 409 AlreadyExists, sees the winner is not its own, and takes N+1.
"""

from __future__ import annotations

import math
from typing import Any

from modelcycle import API_VERSION, GROUP
from modelcycle.builders import meta, retraining

TRAINING_RUN = f"{GROUP}/training-run"
TRAINING_RUN_UID = f"{GROUP}/training-run-uid"
COMPONENT = "model-version"


def version_name(model: str, version: int) -> str:
    """`<model>-v<N>`: a model name is at most 40 characters, so this always fits in 63."""
    return meta.child_name(model, f"v{int(version)}")


def run_selector(run: dict[str, Any]) -> str:
    """Label selector of the ModelVersion(s) registered by this very run (by uid, not by name)."""
    return f"{TRAINING_RUN_UID}={run['metadata']['uid']}"


def model_selector(model: str) -> str:
    return f"{meta.MODEL}={meta.label_value(model)}"


def is_from_run(version: dict[str, Any], run: dict[str, Any]) -> bool:
    labels = version.get("metadata", {}).get("labels") or {}
    return labels.get(TRAINING_RUN_UID) == run["metadata"]["uid"]


def next_version(versions: list[dict[str, Any]], model: str) -> int:
    """One more than the highest version of `model` among `versions` (any naming), at least 1."""
    numbers = [
        int((v.get("spec") or {}).get("version") or 0)
        for v in versions
        if (v.get("spec") or {}).get("model") == model
    ]
    return max(numbers, default=0) + 1


def finite_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """Only finite numbers (the workload reports a NaN metric as null)."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


def model_version(
    run: dict[str, Any],
    *,
    version: int,
    result: dict[str, Any],
    inputs: dict[str, str],
    image: str,
) -> dict[str, Any]:
    """The ModelVersion record of a successful run.

    result: the training Job's result JSON; inputs: what the Job was given (dataset sha256/uri and
    profile uri, from its annotations); image: the image that trained it.
    """
    spec = run.get("spec") or {}
    model = spec["model"]["name"]
    lineage: dict[str, Any] = {
        "trainingRun": run["metadata"]["name"],
        "dataset": (spec.get("datasetRef") or {}).get("name"),
        "datasetSha256": result.get("datasetSha256") or inputs.get("datasetSha256"),
        "datasetUri": inputs.get("datasetUri"),
        "profileUri": result.get("profileUri") or inputs.get("profileUri"),
        "split": result.get("split") or spec.get("split"),
        "params": result.get("params") or (spec.get("estimator") or {}).get("params"),
        "image": image,
    }
    annotations = run["metadata"].get("annotations") or {}
    if annotations.get(retraining.BASE_SNAPSHOT):
        lineage["baseDataset"] = annotations.get(retraining.BASE_DATASET)
        lineage["baseDatasetSha256"] = annotations[retraining.BASE_SNAPSHOT]
    artifact = result["artifact"]
    body: dict[str, Any] = {
        "model": model,
        "version": int(version),
        "artifact": {
            "uri": artifact["uri"],
            "sha256": artifact["sha256"],
            "format": artifact.get("format", "skops"),
        },
        "lineage": {k: v for k, v in lineage.items() if v is not None},
    }
    metrics = finite_metrics(result.get("metrics"))
    if metrics:
        body["metrics"] = metrics
    if spec.get("gates"):
        body["gates"] = spec["gates"]
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": version_name(model, version),
            "namespace": run["metadata"]["namespace"],
            "labels": {
                meta.MANAGED_BY: "modelcycle",
                meta.PART_OF: "modelcycle",
                meta.COMPONENT: COMPONENT,
                meta.MODEL: meta.label_value(model),
                meta.VERSION: str(int(version)),
                TRAINING_RUN: meta.label_value(run["metadata"]["name"]),
                TRAINING_RUN_UID: run["metadata"]["uid"],
            },
        },
        "spec": body,
    }
