"""ModelVersion: run the validation Job once and record the verdict: Validated or Rejected.

One level-triggered reconcile:

1. The validation Job `<modelversion>-validate` exists → follow it. Else create it, passing:
   - the lineage to evaluate with: the spec's, completed from the lineage Dataset's current
     snapshot when a hand-registered version names only `lineage.dataset` (Dataset missing →
     `Stalled` DatasetNotFound, retried with backoff; not Ready → waiting, reason DatasetNotReady);
   - the production version's metrics, when a ModelDeployment in the namespace serves this model
     (`status.servedVersion` of a ModelDeployment with `spec.model` == this model; the metrics are
     that ModelVersion's validated `status.metrics`, else its `spec.metrics`). The gate
     `mustBeatProduction` compares with them; the Job's annotation records which version it was.
   The spec is immutable (CEL), so one Job per ModelVersion is all there ever is. Deleting the
   Job asks for a new validation (against the production version of that moment).
2. The Job succeeds → the workload's verdict:
   - gates passed: `Validated=True` (reason GatesPassed), `Ready=True`, phase Validated;
   - a gate failed: `Validated=False` (reason GatesFailed, the failed gates in the message and in
     `status.reasons`), `Ready=True`, phase Rejected, one Warning Event.
3. The Job fails (the artifact is missing or does not match its sha256, unsafe types, the
   holdout data is gone...) → `Validated=False` with the workload's reason, `Stalled=True`,
   `Ready=False`, one Warning Event. A transient failure (exit code 3) is retried with backoff.

Ready semantics: `Ready=True` means validation reached a verdict, whichever it is, so
`kubectl wait --for=condition=Ready` ends for a rejected version too; `Validated` carries the
verdict, and only Validated versions are ever served. A Rejected version is not a failure of the
operator, and nothing will change it (the spec is immutable): it is as done as it will get.

ModelDeployments are dependents: they are reconciled at once when a version's conditions change.
"""

from __future__ import annotations

from typing import Any

from modelcycle import GROUP
from modelcycle.api import conditions, kinds
from modelcycle.builders import jobs
from modelcycle.controllers import kube, runtime, workload

RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["datasets"], "verbs": ["get"]},
    {"apiGroups": [GROUP], "resources": ["modelversions"], "verbs": ["list"]},
    {"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": ["list"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create", "delete"]},
    *workload.RBAC_RULES,
]


def production(client: kube.Client, version: dict[str, Any]) -> tuple[int, dict[str, float]] | None:
    """(served version, its metrics) for this version's model, when a ModelDeployment serves one."""
    namespace = version["metadata"]["namespace"]
    spec = version.get("spec") or {}
    model, number = spec.get("model"), spec.get("version")
    served = sorted(
        {
            int(d["status"]["servedVersion"])
            for d in client.list(kind="ModelDeployment", namespace=namespace)
            if (d.get("spec") or {}).get("model") == model
            and (d.get("status") or {}).get("servedVersion") is not None
            and int(d["status"]["servedVersion"]) != number
        }
    )
    if not served:
        return None
    wanted = served[-1]  # several deployments of one model: compare with the newest served version
    for candidate in client.list(kind="ModelVersion", namespace=namespace):
        cspec = candidate.get("spec") or {}
        if cspec.get("model") == model and cspec.get("version") == wanted:
            metrics = (candidate.get("status") or {}).get("metrics") or cspec.get("metrics")
            return (wanted, {k: float(v) for k, v in metrics.items()}) if metrics else None
    return None


def champion_artifact(
    client: kube.Client, version: dict[str, Any], served: tuple[int, dict[str, float]] | None
) -> dict[str, Any] | None:
    """The served version's artifact when this version trained on a traffic Dataset: validation then
    evaluates both on this version's holdout of recent traffic. None otherwise."""
    if served is None:
        return None
    namespace = version["metadata"]["namespace"]
    spec = version.get("spec") or {}
    dataset_name = (spec.get("lineage") or {}).get("dataset")
    dataset = (
        client.get_or_none(kind="Dataset", namespace=namespace, name=dataset_name) if dataset_name else None
    )
    if dataset is None or not ((dataset.get("spec") or {}).get("source") or {}).get("traffic"):
        return None
    for candidate in client.list(kind="ModelVersion", namespace=namespace):
        cspec = candidate.get("spec") or {}
        artifact = cspec.get("artifact") or {}
        same = cspec.get("model") == spec.get("model") and cspec.get("version") == served[0]
        if same and artifact.get("uri") and artifact.get("sha256"):
            return {"uri": artifact["uri"], "sha256": artifact["sha256"]}
    return None


def lineage_for(client: kube.Client, version: dict[str, Any]) -> dict[str, Any] | None:
    """The lineage to evaluate with: None when the spec's own is complete, else one completed from
    the lineage Dataset's current snapshot. Raises Stalled or returns {} (wait) when it cannot."""
    namespace = version["metadata"]["namespace"]
    lineage = dict((version.get("spec") or {}).get("lineage") or {})
    if lineage.get("datasetUri") or not lineage.get("dataset"):
        return None  # complete, or nothing to complete it from (the workload says what is missing)
    name = lineage["dataset"]
    dataset = client.get_or_none(kind="Dataset", namespace=namespace, name=name)
    if dataset is None:
        raise runtime.Stalled(
            "DatasetNotFound",
            f"Dataset {name} (spec.lineage.dataset) does not exist in namespace {namespace}; validation "
            "evaluates on its holdout rows",
        )
    dstatus = dataset.get("status") or {}
    snapshot = dstatus.get("snapshot") or {}
    if not conditions.is_true(dstatus.get("conditions"), conditions.READY) or not snapshot.get("uri"):
        return {}
    pinned = lineage.get("datasetSha256")
    if pinned and pinned != snapshot.get("sha256"):
        raise runtime.Stalled(
            "DatasetSnapshotMismatch",
            f"spec.lineage.datasetSha256 {pinned[:12]} is not Dataset {name}'s current snapshot "
            f"{str(snapshot.get('sha256'))[:12]}; set spec.lineage.datasetUri",
        )
    lineage["datasetUri"] = snapshot["uri"]
    lineage["datasetSha256"] = snapshot["sha256"]
    if snapshot.get("profileUri") and not lineage.get("profileUri"):
        lineage["profileUri"] = snapshot["profileUri"]
    return lineage


def _progress(
    version: dict[str, Any],
    reason: str,
    message: str,
    *,
    status: dict[str, Any] | None = None,
    events: list[runtime.Event] | None = None,
) -> runtime.Outcome:
    return runtime.in_progress_outcome(
        version,
        reason=reason,
        message=message,
        verdict=(conditions.VALIDATED, reason),
        status=status,
        events=events,
    )


def reconcile(version: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
    client = ctx.client
    namespace = version["metadata"]["namespace"]
    job_name = jobs.validation_job_name(version)
    events: list[runtime.Event] = []

    job = client.get_or_none(kind="Job", namespace=namespace, name=job_name)
    if job is not None and job["metadata"].get("deletionTimestamp"):
        return _progress(version, "Validating", f"waiting for the old validation Job {job_name} to go away")
    if job is None:
        lineage = lineage_for(client, version)
        if lineage == {}:
            ref = ((version.get("spec") or {}).get("lineage") or {}).get("dataset")
            return _progress(version, "DatasetNotReady", f"waiting for Dataset {ref} to be Ready")
        served = production(client, version)
        job = ctx.ensure_child(
            jobs.validation_job(
                version,
                settings=ctx.settings.workload,
                lineage=lineage,
                production=served,
                champion=champion_artifact(client, version, served),
            ),
            owner=version,
        )
        against = f" against production version {served[0]}" if served else ""
        events.append(runtime.Event("ValidationStarted", f"started validation Job {job_name}{against}"))

    done = workload.read_result(client, job)
    if workload.recorded(version, job_name, done, conditions.VALIDATED):
        return runtime.Outcome(events=events)
    base: dict[str, Any] = {"jobName": job_name}
    if done.state == "Running":
        return _progress(
            version, "Validating", f"validation Job {job_name} is running", status=base, events=events
        )

    if done.state == "Failed":
        if workload.is_transient(done):
            workload.delete_job_to_retry(client, job, done)
        return workload.failed_outcome(
            version,
            done,
            step="validation",
            job_name=job_name,
            verdict=conditions.VALIDATED,
            event_reason="ValidationFailed",
            status=base,
            events=events,
        )

    result = done.result
    if not result.get("ok") or not isinstance(result.get("validated"), bool):
        return runtime.stalled_outcome(
            version,
            reason="ResultMissing",
            message=f"validation Job {job_name} succeeded but reported no verdict; "
            "delete the Job to validate again",
            status=base,
        )
    reasons = [str(r) for r in result.get("reasons") or []]
    status: dict[str, Any] = {**base, "reasons": reasons}
    if result.get("metrics"):
        status["metrics"] = {k: float(v) for k, v in result["metrics"].items() if isinstance(v, int | float)}
    if result.get("latency"):
        status["latency"] = result["latency"]
    if result.get("production"):
        status["production"] = result["production"]
    if isinstance(result.get("holdout"), dict):
        status["holdout"] = result["holdout"]
    if completed := workload.job_time(job, "completionTime"):
        status["validatedAt"] = completed
    summary = "; ".join(reasons) or "no gates configured"
    if result["validated"]:
        reason, phase, event_type = "GatesPassed", "Validated", "Normal"
        ready_message = f"validated: {summary}"
    else:
        reason, phase, event_type = "GatesFailed", "Rejected", "Warning"
        ready_message = f"rejected: {summary}"
    if workload.transitioned(
        version, conditions.VALIDATED, "True" if result["validated"] else "False", reason
    ):
        events.append(runtime.Event(phase, ready_message, event_type))
    updated = runtime.updated_conditions(
        version,
        [
            runtime.ConditionUpdate(conditions.READY, True, phase, ready_message),
            runtime.ConditionUpdate(conditions.VALIDATED, bool(result["validated"]), reason, summary),
        ],
        remove=(conditions.STALLED, conditions.RECONCILING),
    )
    return runtime.Outcome(status={**status, "conditions": updated, "phase": phase}, events=events)


CONTROLLER = runtime.Registration(
    kinds.MODEL_VERSION, reconcile, tuple(RBAC_RULES), dependents=("ModelDeployment",)
)
