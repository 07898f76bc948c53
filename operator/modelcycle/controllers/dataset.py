"""Dataset: run the data Job for the current spec and record the validated snapshot in status.

One level-triggered reconcile:

1. The desired data Job is `<dataset>-data-<hash of spec>` (plus `-<epoch>` with `refreshSeconds`,
   epoch = unix time // refreshSeconds, so each refresh period has its own Job and a restarted
   operator computes the same name). Create it if it is missing (a deleted data Job is simply run
   again: snapshots are content-addressed, so that is harmless and is how to force a re-snapshot).
2. While it runs: `Reconciling=True`. `Ready` stays True when a snapshot of the same spec exists
   (a refresh), and is False (reason Snapshotting) for a new spec, whose old snapshot no longer
   describes what the user asked for.
3. When it succeeds: `status.snapshot` (sha256, uri, rows, columns, profile, task, takenAt),
   `Ready=True`, `Validated=True`, and the data Jobs of earlier specs or periods are deleted.
4. When it fails: a validation failure (reason ValidationFailed) or another permanent failure is a
   verdict that stands until the spec (or, with refreshSeconds, the period) changes:
   `Stalled=True`, `Ready=False`, `Validated=False`, `status.violations`, one Warning Event. The
   last good snapshot stays in `status.snapshot`. A transient failure (the workload's exit code 3,
   such as an unreachable URL, after the Job's own retries) deletes the Job and retries with the
   operator's backoff.

TrainingRuns and ModelVersions waiting for a Dataset are its dependents: they are reconciled at
once when the Dataset's conditions change.
"""

from __future__ import annotations

import time
from typing import Any

from modelcycle.api import conditions, kinds
from modelcycle.builders import jobs, meta
from modelcycle.controllers import kube, runtime, workload

RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "create", "delete"]},
    *workload.RBAC_RULES,
]

SNAPSHOT_FIELDS = ("sha256", "uri", "rows", "columns", "profileUri", "profileSha256", "task")
MAX_VIOLATIONS = 20


def refresh_epoch(spec: dict[str, Any], now_epoch: float) -> int | None:
    refresh = spec.get("refreshSeconds")
    return int(now_epoch // int(refresh)) if refresh else None


def seconds_to_next_epoch(spec: dict[str, Any], now_epoch: float) -> float | None:
    refresh = spec.get("refreshSeconds")
    if not refresh:
        return None
    refresh = int(refresh)
    return (int(now_epoch // refresh) + 1) * refresh - now_epoch + 1.0


def data_jobs(client: kube.Client, dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """This Dataset's data Jobs (by owner label, confirmed by the ownerReference's uid)."""
    owner = meta.label_value(dataset["metadata"]["name"])
    selector = f"{meta.OWNER}={owner},{meta.COMPONENT}={jobs.COMPONENT[jobs.DATA]}"
    uid = dataset["metadata"]["uid"]
    found = client.list(kind="Job", namespace=dataset["metadata"]["namespace"], label_selector=selector)
    return [j for j in found if uid in {r.get("uid") for r in j["metadata"].get("ownerReferences") or []}]


def snapshot_of(result: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    snapshot = {key: result[key] for key in SNAPSHOT_FIELDS if result.get(key) is not None}
    taken_at = workload.job_time(job, "completionTime")
    if taken_at:
        snapshot["takenAt"] = taken_at
    return snapshot


TRAFFIC_FIELDS = (
    "logged",
    "labelled",
    "joined",
    "labelledWithFeatures",
    "unmatchedLabels",
    "corruptSegments",
    "segments",
    "mergedRows",
    "mergedSnapshot",
    "since",
    "until",
)


def traffic_of(result: dict[str, Any]) -> dict[str, Any]:
    """The join statistics of a traffic source's data Job, as status.traffic."""
    return {key: result[key] for key in TRAFFIC_FIELDS if result.get(key) is not None}


def describe(snapshot: dict[str, Any]) -> str:
    return (
        f"snapshot {str(snapshot.get('sha256', ''))[:12]}: {snapshot.get('rows')} rows, "
        f"{snapshot.get('columns')} columns, {snapshot.get('task')}"
    )


def merged_snapshot(client: kube.Client, namespace: str, name: str) -> dict[str, Any] | None:
    """The current snapshot of the Dataset a traffic source merges with, when it is Ready."""
    other = client.get_or_none(kind="Dataset", namespace=namespace, name=name)
    if other is None:
        return None
    snapshot = (other.get("status") or {}).get("snapshot") or {}
    ready = conditions.find((other.get("status") or {}).get("conditions"), conditions.READY)
    if not snapshot.get("uri") or not snapshot.get("sha256") or (ready or {}).get("status") != "True":
        return None
    return {"uri": snapshot["uri"], "sha256": snapshot["sha256"]}


def waiting_for_merge(dataset: dict[str, Any], merge_name: str, ctx: runtime.Context) -> runtime.Outcome:
    message = f"waiting for Dataset {merge_name} (spec.source.traffic.mergeWith) to have a Ready snapshot"
    return runtime.Outcome(
        status={
            "conditions": runtime.updated_conditions(
                dataset,
                [
                    runtime.ConditionUpdate(conditions.RECONCILING, True, "WaitingForDataset", message),
                ],
            )
        },
        requeue_after=ctx.settings.poll_seconds,
    )


def reconcile(dataset: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
    client = ctx.client
    spec = dataset.get("spec") or {}
    status = dataset.get("status") or {}
    now_epoch = time.time()
    epoch = refresh_epoch(spec, now_epoch)
    requeue = seconds_to_next_epoch(spec, now_epoch)
    namespace = dataset["metadata"]["namespace"]
    merge_name = (((spec.get("source") or {}).get("traffic") or {}).get("mergeWith") or {}).get("dataset")
    merge: dict[str, Any] | None = None
    if merge_name:
        merge = merged_snapshot(client, namespace, merge_name)
        if merge is None:
            return waiting_for_merge(dataset, merge_name, ctx)
    name = jobs.data_job_name(dataset, epoch=epoch, merge=merge)
    current_hash = jobs.data_inputs_hash(dataset, merge)

    existing = data_jobs(client, dataset)
    job = next((j for j in existing if j["metadata"]["name"] == name), None)
    events: list[runtime.Event] = []
    if job is not None and job["metadata"].get("deletionTimestamp"):
        return runtime.Outcome(
            status={
                "conditions": runtime.updated_conditions(
                    dataset,
                    [
                        runtime.ConditionUpdate(
                            conditions.RECONCILING,
                            True,
                            "Snapshotting",
                            f"waiting for the old Job {name} to go away",
                        ),
                    ],
                )
            },
            requeue_after=ctx.settings.poll_seconds,
        )
    if job is None:
        job = ctx.ensure_child(
            jobs.data_job(dataset, settings=ctx.settings.workload, epoch=epoch, merge=merge), owner=dataset
        )
        events.append(runtime.Event("SnapshotStarted", f"started data Job {name}"))

    done = workload.read_result(client, job)
    if workload.recorded(dataset, name, done, conditions.VALIDATED):
        return runtime.Outcome(events=events, requeue_after=requeue)
    base = {"jobName": name}

    if done.state == "Running":
        snapshot = status.get("snapshot") or {}
        refreshing = bool(snapshot.get("sha256")) and any(
            jobs.data_job_spec_hash(j["metadata"]["name"]) == current_hash
            and workload.job_state(j)[0] == "Succeeded"
            for j in existing
            if j["metadata"]["name"] != name
        )
        if not refreshing:
            return runtime.in_progress_outcome(
                dataset,
                reason="Snapshotting",
                message=f"data Job {name} is taking, validating and profiling the snapshot",
                verdict=(conditions.VALIDATED, "Validating"),
                status=base,
                events=events,
                requeue_after=requeue,
            )
        updated = runtime.updated_conditions(
            dataset,
            [
                runtime.ConditionUpdate(
                    conditions.READY,
                    True,
                    "SnapshotReady",
                    f"{describe(snapshot)}; refreshing with Job {name}",
                ),
                runtime.ConditionUpdate(
                    conditions.RECONCILING, True, "Refreshing", f"data Job {name} is taking a new snapshot"
                ),
            ],
            remove=(conditions.STALLED,),
        )
        return runtime.Outcome(
            status={**base, "conditions": updated, "phase": "Refreshing"},
            events=events,
            requeue_after=requeue,
        )

    # The Job is finished: earlier Jobs are history now.
    for old in existing:
        if old["metadata"]["name"] != name and not old["metadata"].get("deletionTimestamp"):
            client.delete(kind="Job", namespace=namespace, name=old["metadata"]["name"])

    if done.state == "Failed":
        if workload.is_transient(done):
            workload.delete_job_to_retry(client, job, done)
        violations = [str(v) for v in (done.result.get("violations") or [])][:MAX_VIOLATIONS]
        count = done.result.get("violationCount") or len(violations)
        if done.reason == "ValidationFailed":
            message = (
                f"{count} validation violation(s): " + "; ".join(violations[:5])
                if violations
                else done.message
            )
            if count > 5:
                message += f" (and {count - 5} more in status.violations)"
        else:
            message = f"data Job {name} failed: {done.message}"
        failed_status: dict[str, Any] = {**base, "violations": violations}
        if isinstance(done.result.get("traffic"), dict):
            failed_status["traffic"] = traffic_of(done.result["traffic"])
        outcome = runtime.stalled_outcome(
            dataset,
            reason=done.reason,
            message=message,
            status=failed_status,
            extra=(runtime.ConditionUpdate(conditions.VALIDATED, False, done.reason, message),),
            phase="Invalid" if done.reason == "ValidationFailed" else "Failed",
        )
        outcome.requeue_after = requeue
        outcome.events[:0] = events
        return outcome

    if not done.result.get("ok") or not done.result.get("sha256"):
        outcome = runtime.stalled_outcome(
            dataset,
            reason="ResultMissing",
            message=f"data Job {name} succeeded but reported no snapshot; delete the Job to run it again",
            status=base,
        )
        outcome.requeue_after = requeue
        return outcome

    snapshot = snapshot_of(done.result, job)
    message = describe(snapshot)
    previous = status.get("snapshot") or {}
    if previous.get("sha256") != snapshot.get("sha256") or status.get("jobName") != name:
        events.append(runtime.Event("SnapshotReady", f"{message} (Job {name})"))
    updated = runtime.updated_conditions(
        dataset,
        [
            runtime.ConditionUpdate(conditions.READY, True, "SnapshotReady", message),
            runtime.ConditionUpdate(
                conditions.VALIDATED,
                True,
                "ValidationPassed",
                f"{snapshot.get('rows')} rows passed the schema and rules",
            ),
        ],
        remove=(conditions.STALLED, conditions.RECONCILING),
    )
    ready_status: dict[str, Any] = {
        **base,
        "snapshot": snapshot,
        "violations": [],
        "conditions": updated,
        "phase": "Ready",
    }
    if isinstance(done.result.get("traffic"), dict):
        ready_status["traffic"] = traffic_of(done.result["traffic"])
    return runtime.Outcome(
        status=ready_status,
        events=events,
        requeue_after=requeue,
    )


CONTROLLER = runtime.Registration(
    kinds.DATASET, reconcile, tuple(RBAC_RULES), dependents=("TrainingRun", "ModelVersion")
)
