"""Pure builders of the workload Jobs: data (Dataset), training (TrainingRun), validation (ModelVersion).

Dict in, dict out. Each Job runs `modelcycle data|train|validate` (docs/workloads.md) with the object
it works for passed whole as `--spec-json`, so the workload sees exactly what the operator saw.
Names are deterministic, so a restarted operator finds the Job it created instead of adding one:

- data Job `<dataset>-data-<hash of spec>` (plus `-<epoch>` when `refreshSeconds` is set, where
  epoch = unix time // refreshSeconds): a spec edit or a new refresh period means a new Job;
- training Job `<run>-train`;
- validation Job `<modelversion>-validate`.

Every Job has a controller ownerReference (the garbage collector deletes it with its owner), the
`modelcycle.io/*` owner labels, a pod that passes Pod Security `restricted` with no API token, a
deadline, a retry limit, and a pod failure policy: exit codes 1 (a failure a retry will not fix)
and 2 (an unusable spec) fail the Job at once; exit 3 (transient) and crashes are retried up to
`backoffLimit`; disruptions (eviction, preemption) are not counted. `ttlSecondsAfterFinished` is
left unset: the operator reads the result from the finished pod and then records it in status.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from modelcycle import GROUP
from modelcycle.api import trainingrun
from modelcycle.builders import meta, pods

DATA = "data"
TRAIN = "train"
VALIDATE = "validate"
CONTAINER = {DATA: "data", TRAIN: "train", VALIDATE: "validate"}
COMPONENT = {DATA: "data", TRAIN: "training", VALIDATE: "validation"}

SPEC_HASH = f"{GROUP}/spec-hash"
"""Annotation: hash of the owner's spec the Job was built from."""
DATASET_SHA256 = f"{GROUP}/dataset-sha256"
DATASET_URI = f"{GROUP}/dataset-uri"
PROFILE_URI = f"{GROUP}/profile-uri"
PRODUCTION_VERSION = f"{GROUP}/production-version"

DATA_BACKOFF_LIMIT = 2
DATA_DEADLINE_SECONDS = 1800
VALIDATE_BACKOFF_LIMIT = 1
VALIDATE_DEADLINE_SECONDS = 1800

# Exit codes of `modelcycle data|train|validate` (modelcycle.workloads.results).
EXIT_FAILED = 1
EXIT_INVALID = 2

PVC_SOURCE_ROOT = "/data"
CONFIG_MAP_SOURCE_ROOT = "/config"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(obj: dict[str, Any], *extra: object) -> str:
    """8 hex digits identifying the object's spec (and any extra inputs)."""
    return meta.short_hash(canonical_json(obj.get("spec") or {}), *extra)


def workload_object(obj: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The object as handed to a workload: kind, name, namespace and spec; nothing server-side."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
        "spec": obj.get("spec") if spec is None else spec,
    }


# --------------------------------------------------------------------------- names


def data_inputs_hash(dataset: dict[str, Any], merge: dict[str, Any] | None = None) -> str:
    """The hash in a data Job's name: the spec, and the snapshot a traffic source merges with (a
    new snapshot of that Dataset is a new input, so a new Job)."""
    return spec_hash(dataset) if merge is None else spec_hash(dataset, merge.get("sha256"))


def data_job_name(
    dataset: dict[str, Any], *, epoch: int | None = None, merge: dict[str, Any] | None = None
) -> str:
    suffix = f"{DATA}-{data_inputs_hash(dataset, merge)}" + (f"-{epoch}" if epoch is not None else "")
    return meta.child_name(dataset["metadata"]["name"], suffix)


def data_job_spec_hash(job_name: str) -> str | None:
    """The spec hash in a data Job's name (the part after the last `-data-`), without the epoch."""
    marker = f"-{DATA}-"
    if marker not in job_name:
        return None
    return job_name.rsplit(marker, 1)[1].split("-", 1)[0] or None


def training_job_name(run: dict[str, Any]) -> str:
    return meta.child_name(run["metadata"]["name"], TRAIN)


def validation_job_name(version: dict[str, Any]) -> str:
    return meta.child_name(version["metadata"]["name"], VALIDATE)


# --------------------------------------------------------------------------- the Job


def pod_failure_policy(container: str) -> dict[str, Any]:
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": [EXIT_FAILED, EXIT_INVALID],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def job(
    owner: dict[str, Any],
    *,
    name: str,
    step: str,
    args: list[str],
    settings: pods.WorkloadSettings,
    backoff_limit: int,
    active_deadline_seconds: int,
    annotations: dict[str, str] | None = None,
    image: str | None = None,
    resources: dict[str, Any] | None = None,
    extra_volumes: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
    extra_env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Job running `modelcycle <args>` once for `owner`, restricted and without an API token."""
    component = COMPONENT[step]
    container = CONTAINER[step]
    metadata = meta.child_metadata(owner, name=name, component=component)
    metadata["annotations"] = {SPEC_HASH: spec_hash(owner), **(annotations or {})}
    pod_spec = pods.workload_pod_spec(
        settings=settings,
        container_name=container,
        args=args,
        image=image,
        resources=resources,
        extra_volumes=extra_volumes,
        extra_mounts=extra_mounts,
        extra_env=extra_env,
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": active_deadline_seconds,
            "podFailurePolicy": pod_failure_policy(container),
            "template": {
                "metadata": {"labels": meta.owner_labels(owner, component=component)},
                "spec": pod_spec,
            },
        },
    }


# --------------------------------------------------------------------------- data


def _source_mounts(
    spec: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes, mounts and env that give the data workload its source (read-only)."""
    source = spec.get("source") or {}
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    if pvc := source.get("pvc"):
        claim = pvc["claimName"]
        volumes.append({"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "source", "mountPath": f"{PVC_SOURCE_ROOT}/{claim}", "readOnly": True})
    elif config_map := source.get("configMap"):
        name = config_map["name"]
        volumes.append(
            {
                "name": "source",
                "configMap": {"name": name, "items": [{"key": config_map["key"], "path": config_map["key"]}]},
            }
        )
        mounts.append({"name": "source", "mountPath": f"{CONFIG_MAP_SOURCE_ROOT}/{name}", "readOnly": True})
    elif (s3 := source.get("s3")) and s3.get("secretRef"):
        secret = s3["secretRef"]["name"]
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return volumes, mounts, env


def data_job(
    dataset: dict[str, Any],
    *,
    settings: pods.WorkloadSettings,
    epoch: int | None = None,
    merge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Job that snapshots, validates and profiles the Dataset's current spec.

    merge: the status.snapshot of the Dataset a traffic source's `mergeWith` names."""
    volumes, mounts, env = _source_mounts(dataset.get("spec") or {})
    args = [
        DATA,
        "--spec-json",
        canonical_json(workload_object(dataset)),
        "--pvc-root",
        PVC_SOURCE_ROOT,
        "--config-map-dir",
        CONFIG_MAP_SOURCE_ROOT,
    ]
    if merge is not None:
        args += ["--merge-snapshot-uri", merge["uri"], "--merge-snapshot-sha256", merge["sha256"]]
    if env and settings.s3_secret:
        # The source's credentials replace the store's: one AWS_* pair per container.
        settings = dataclasses.replace(settings, s3_secret=None)
    return job(
        dataset,
        name=data_job_name(dataset, epoch=epoch, merge=merge),
        step=DATA,
        args=args,
        settings=settings,
        backoff_limit=DATA_BACKOFF_LIMIT,
        active_deadline_seconds=DATA_DEADLINE_SECONDS,
        extra_volumes=volumes,
        extra_mounts=mounts,
        extra_env=env,
    )


# --------------------------------------------------------------------------- training


def training_job(
    run: dict[str, Any],
    *,
    spec: trainingrun.TrainingRunSpec,
    snapshot: dict[str, Any],
    settings: pods.WorkloadSettings,
) -> dict[str, Any]:
    """The Job that trains the run's estimator on the given Dataset snapshot (status.snapshot).

    spec: the run's spec, parsed (its defaults are the API's); the Job's `--spec-json` is the run as
    the user wrote it.
    """
    args = [
        TRAIN,
        "--spec-json",
        canonical_json(workload_object(run)),
        "--dataset-uri",
        snapshot["uri"],
        "--dataset-sha256",
        snapshot["sha256"],
        # The uid keeps a re-created run of the same name from overwriting the artifact that an
        # earlier run's (surviving) ModelVersion points at.
        "--name",
        meta.child_name(run["metadata"]["name"], run["metadata"]["uid"][:8]),
    ]
    annotations = {DATASET_SHA256: snapshot["sha256"], DATASET_URI: snapshot["uri"]}
    if snapshot.get("profileUri"):
        args += ["--profile-uri", snapshot["profileUri"]]
        annotations[PROFILE_URI] = snapshot["profileUri"]
    return job(
        run,
        name=training_job_name(run),
        step=TRAIN,
        args=args,
        settings=settings,
        backoff_limit=spec.backoff_limit,
        active_deadline_seconds=spec.active_deadline_seconds,
        annotations=annotations,
        image=spec.image,
        resources=spec.resources.to_json_dict() if spec.resources else None,
    )


# --------------------------------------------------------------------------- validation


def validation_job(
    version: dict[str, Any],
    *,
    settings: pods.WorkloadSettings,
    lineage: dict[str, Any] | None = None,
    production: tuple[int, dict[str, float]] | None = None,
    champion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Job that verifies, evaluates and gates a ModelVersion.

    champion: the production version's artifact ({uri, sha256}), evaluated on this version's holdout
    (a version trained on recent traffic is compared on that traffic, not on production's old numbers).

    lineage: the lineage to evaluate with when the operator had to complete it (a version registered
    by hand with only `lineage.dataset`); production: (version, metrics) of the served version.
    """
    spec = dict(version.get("spec") or {})
    if lineage is not None:
        spec["lineage"] = lineage
    args = [VALIDATE, "--spec-json", canonical_json(workload_object(version, spec))]
    annotations: dict[str, str] = {}
    if production is not None:
        served, metrics = production
        args += ["--production-version", str(served), "--production-metrics", canonical_json(metrics)]
        annotations[PRODUCTION_VERSION] = str(served)
        if champion is not None:
            args += [
                "--production-artifact-uri",
                champion["uri"],
                "--production-artifact-sha256",
                champion["sha256"],
            ]
    return job(
        version,
        name=validation_job_name(version),
        step=VALIDATE,
        args=args,
        settings=settings,
        backoff_limit=VALIDATE_BACKOFF_LIMIT,
        active_deadline_seconds=VALIDATE_DEADLINE_SECONDS,
        annotations=annotations,
    )
