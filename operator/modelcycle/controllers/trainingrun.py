"""TrainingRun: train on the Dataset's current snapshot, then register exactly one ModelVersion.

One level-triggered reconcile:

1. A ModelVersion labelled with this run's uid exists → the run is done (adopt it; this is what
   makes a restart between "created the ModelVersion" and "wrote status" safe). Later spec edits
   do not train again (that would register a second version for one run): the Ready message says
   to create a new TrainingRun instead.
2. The training Job `<run>-train` exists → follow it. A Job built from an older spec (its
   `modelcycle.io/spec-hash` annotation differs) is deleted and replaced while nothing is
   registered yet, so fixing a failed run's spec retries it.
3. No Job: the Dataset must exist (else `Stalled`, reason DatasetNotFound, retried with backoff
   and at once when a Dataset changes) and be Ready (else `Ready=False`, reason DatasetNotReady).
   The Job is created with the snapshot's uri and sha256, recorded in its annotations: the run's
   lineage is what the Job was given, even if the Dataset refreshes meanwhile.
4. The Job succeeds → register `<model>-v<N>`, N the next free version of the model in the
   namespace. Race-safe: on 409 AlreadyExists the existing one is adopted when it carries this
   run's uid, else N+1 is tried. The ModelVersion is a record: no ownerReference.
5. The Job fails (after its own `backoffLimit` retries) → `Succeeded=False` with the workload's
   reason and message, `Stalled=True`, `Ready=False`, one Warning Event; not retried until the
   spec changes. A transient failure (exit code 3) is retried with the operator's backoff.

Ready=True means the run finished and registered its ModelVersion (`Succeeded=True`); whether that
version passes its gates is the ModelVersion's `Validated` condition.
"""

from __future__ import annotations

from typing import Any

from modelcycle import GROUP
from modelcycle.api import conditions, kinds, trainingrun
from modelcycle.builders import jobs, modelversions
from modelcycle.controllers import kube, runtime, workload

RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["datasets"], "verbs": ["get"]},
    {"apiGroups": [GROUP], "resources": ["modelversions"], "verbs": ["get", "list", "create"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create", "delete"]},
    *workload.RBAC_RULES,
]

MAX_REGISTER_ATTEMPTS = 50


def _inputs(job: dict[str, Any]) -> dict[str, str]:
    annotations = job["metadata"].get("annotations") or {}
    return {
        "datasetSha256": annotations.get(jobs.DATASET_SHA256, ""),
        "datasetUri": annotations.get(jobs.DATASET_URI, ""),
        "profileUri": annotations.get(jobs.PROFILE_URI, ""),
    }


def _job_image(job: dict[str, Any]) -> str:
    containers = job["spec"]["template"]["spec"]["containers"]
    return str(containers[0].get("image", ""))


def register(
    client: kube.Client, run: dict[str, Any], job: dict[str, Any], result: dict[str, Any]
) -> dict[str, Any]:
    """Create `<model>-v<N>` for this run, or adopt the one it already registered."""
    namespace = run["metadata"]["namespace"]
    model = run["spec"]["model"]["name"]
    mine = client.list(
        kind="ModelVersion", namespace=namespace, label_selector=modelversions.run_selector(run)
    )
    if mine:
        return mine[0]
    number = modelversions.next_version(client.list(kind="ModelVersion", namespace=namespace), model)
    for _ in range(MAX_REGISTER_ATTEMPTS):
        manifest = modelversions.model_version(
            run, version=number, result=result, inputs=_inputs(job), image=_job_image(job)
        )
        try:
            return client.create(manifest)
        except kube.Conflict:
            existing = client.get_or_none(
                kind="ModelVersion", namespace=namespace, name=manifest["metadata"]["name"]
            )
            if existing is None:
                continue  # deleted in between: try the same number again
            if modelversions.is_from_run(existing, run):
                return existing
            number = max(number + 1, int((existing.get("spec") or {}).get("version") or 0) + 1)
    raise runtime.Stalled(
        "VersionNumberConflict",
        f"could not find a free version number for model {model} after {MAX_REGISTER_ATTEMPTS} attempts",
    )


def _registered(
    run: dict[str, Any], version: dict[str, Any], job: dict[str, Any] | None, result: dict[str, Any] | None
) -> runtime.Outcome:
    status = run.get("status") or {}
    vspec = version.get("spec") or {}
    name = version["metadata"]["name"]
    number = int(vspec.get("version") or 0)
    message = f"registered ModelVersion {name} (model {vspec.get('model')} version {number})"
    if job is not None and (job["metadata"].get("annotations") or {}).get(jobs.SPEC_HASH) != jobs.spec_hash(
        run
    ):
        message += "; the spec changed after registration: create a new TrainingRun to train again"
    new_status: dict[str, Any] = {
        "modelVersion": name,
        "version": number,
        "datasetSha256": (vspec.get("lineage") or {}).get("datasetSha256"),
    }
    if result is not None:
        new_status["metrics"] = modelversions.finite_metrics(result.get("metrics"))
        if result.get("bestParams"):
            new_status["bestParams"] = result["bestParams"]
    elif not status.get("metrics") and vspec.get("metrics"):
        new_status["metrics"] = vspec["metrics"]
    if job is not None:
        new_status["jobName"] = job["metadata"]["name"]
        for field_name in ("startTime", "completionTime"):
            if not status.get(field_name) and workload.job_time(job, field_name):
                new_status[field_name] = workload.job_time(job, field_name)
    events = []
    if status.get("modelVersion") != name:
        events.append(runtime.Event("ModelRegistered", message))
    updated = runtime.updated_conditions(
        run,
        [
            runtime.ConditionUpdate(conditions.READY, True, "ModelRegistered", message),
            runtime.ConditionUpdate(conditions.SUCCEEDED, True, "ModelRegistered", message),
        ],
        remove=(conditions.STALLED, conditions.RECONCILING),
    )
    return runtime.Outcome(
        status={
            **{k: v for k, v in new_status.items() if v is not None},
            "conditions": updated,
            "phase": "Succeeded",
        },
        events=events,
    )


def _waiting(
    run: dict[str, Any],
    reason: str,
    message: str,
    *,
    succeeded_reason: str,
    status: dict[str, Any] | None = None,
    requeue_after: float | None = None,
) -> runtime.Outcome:
    return runtime.in_progress_outcome(
        run,
        reason=reason,
        message=message,
        verdict=(conditions.SUCCEEDED, succeeded_reason),
        status=status,
        requeue_after=requeue_after,
    )


def reconcile(run: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
    client = ctx.client
    spec = trainingrun.TrainingRunSpec.model_validate(run.get("spec") or {})
    namespace = run["metadata"]["namespace"]
    job_name = jobs.training_job_name(run)

    # From the watch-fed store: a new run costs the Job's create, its Event and the status patch.
    mine = ctx.reads.list(
        kind="ModelVersion", namespace=namespace, label_selector=modelversions.run_selector(run)
    )
    job = ctx.reads.get_or_none(kind="Job", namespace=namespace, name=job_name)
    if job is not None and run["metadata"]["uid"] not in {
        r.get("uid") for r in job["metadata"].get("ownerReferences") or []
    }:
        raise runtime.Stalled(
            "NameConflict", f"Job {job_name} exists and is not owned by this TrainingRun; delete or rename it"
        )
    if mine:
        return _registered(run, mine[0], job, None)
    status = run.get("status") or {}
    if status.get("modelVersion") and conditions.is_true(status.get("conditions"), conditions.SUCCEEDED):
        # The version this run registered is a record its users own: deleted, it stays deleted.
        return runtime.Outcome()

    events: list[runtime.Event] = []
    if job is not None and job["metadata"].get("deletionTimestamp"):
        return _waiting(
            run,
            "Restarting",
            f"waiting for the old training Job {job_name} to go away",
            succeeded_reason="Restarting",
            requeue_after=ctx.settings.poll_seconds,
        )
    if job is not None and (job["metadata"].get("annotations") or {}).get(jobs.SPEC_HASH) != jobs.spec_hash(
        run
    ):
        client.delete(kind="Job", namespace=namespace, name=job_name)
        return runtime.Outcome(
            status=_waiting(
                run,
                "Restarting",
                f"the spec changed: replacing training Job {job_name}",
                succeeded_reason="Restarting",
            ).status,
            events=[runtime.Event("SpecChanged", f"the spec changed: replacing training Job {job_name}")],
            requeue_after=ctx.settings.poll_seconds,
        )

    if job is None:
        ref = spec.dataset_ref.name
        dataset = ctx.reads.get_or_none(kind="Dataset", namespace=namespace, name=ref)
        if dataset is None:
            raise runtime.Stalled(
                "DatasetNotFound",
                f"Dataset {ref} does not exist in namespace {namespace}; create it or fix spec.datasetRef",
            )
        dstatus = dataset.get("status") or {}
        snapshot = dstatus.get("snapshot") or {}
        if not conditions.is_true(dstatus.get("conditions"), conditions.READY) or not snapshot.get("uri"):
            ready = conditions.find(dstatus.get("conditions"), conditions.READY) or {}
            detail = f": {ready.get('reason')}: {ready.get('message')}" if ready else ""
            return _waiting(
                run,
                "DatasetNotReady",
                f"waiting for Dataset {ref} to be Ready{detail}",
                succeeded_reason="WaitingForDataset",
            )
        job = ctx.ensure_child(
            jobs.training_job(run, spec=spec, snapshot=snapshot, settings=ctx.settings.workload), owner=run
        )
        events.append(
            runtime.Event(
                "TrainingStarted",
                f"started training Job {job_name} on Dataset {ref} snapshot {snapshot['sha256'][:12]}",
            )
        )

    done = workload.read_result(client, job)
    if done.state == "Failed" and workload.recorded(run, job_name, done, conditions.SUCCEEDED):
        return runtime.Outcome(events=events)
    base: dict[str, Any] = {"jobName": job_name, "datasetSha256": _inputs(job)["datasetSha256"] or None}
    if (start := workload.job_time(job, "startTime")) and workload.pods_started(job):
        base["startTime"] = start  # once training runs: a Job waiting for its pod has not started it
    base = {k: v for k, v in base.items() if v is not None}

    if done.state == "Running":
        outcome = _waiting(
            run, "Training", f"training Job {job_name} is running", succeeded_reason="Running", status=base
        )
        outcome.events = events
        return outcome

    if done.state == "Failed":
        if workload.is_transient(done):
            workload.delete_job_to_retry(client, job, done)
        if completed := workload.job_time(job, "completionTime"):
            base["completionTime"] = completed
        return workload.failed_outcome(
            run,
            done,
            step="training",
            job_name=job_name,
            verdict=conditions.SUCCEEDED,
            event_reason="TrainingFailed",
            status=base,
            events=events,
        )

    result = done.result
    artifact = result.get("artifact") or {}
    if not result.get("ok") or not artifact.get("uri") or not artifact.get("sha256"):
        return runtime.stalled_outcome(
            run,
            reason="ResultMissing",
            message=f"training Job {job_name} succeeded but reported no artifact; "
            "delete the Job to train again",
            status=base,
            extra=(runtime.ConditionUpdate(conditions.SUCCEEDED, "Unknown", "ResultMissing", "no result"),),
        )
    version = register(client, run, job, result)
    outcome = _registered(run, version, job, result)
    outcome.events[:0] = events
    return outcome


CONTROLLER = runtime.Registration(kinds.TRAINING_RUN, reconcile, tuple(RBAC_RULES))
