"""ModelDeployment: serve a pinned or the latest Validated ModelVersion, roll out new versions.

One level-triggered reconcile:

1. Resolve the target ModelVersion (a pinned number, or `latest` = the newest Validated version
   of the model). None → Stalled (ModelVersionNotFound / NoValidatedVersion / VersionRejected),
   retried with backoff and when a ModelVersion changes (ModelVersion lists ModelDeployment among
   its dependents). Only Validated versions are served: a pinned version still being validated
   is waited for (Ready=False, WaitingForValidation) and nothing is changed meanwhile.
2. Read the children: the stable Deployment `<mdep>` (its pod template's version label is the
   version it rolls out), the canary Deployment `<mdep>-canary`, the Service, the HPA.
3. Decide from the cluster (status only remembers what the cluster cannot tell: the version last
   fully served, the failed version, the history):
   - Rolling: the stable template runs the target; the Deployment controller replaces pods one by
     one (maxSurge 1, maxUnavailable 0). When its pods are all ready, the target is served.
   - Canary: the stable Deployment keeps the served version; `<mdep>-canary` runs the target with
     ceil(replicas * weight / 100) pods behind the same Service. Once the canary has been
     Available for `promoteAfterSeconds` (its Available condition's lastTransitionTime), the
     stable template is patched to the target; when that rollout completes the canary is deleted.
   - A new version whose Deployment reports `ProgressDeadlineExceeded` (its pods did not become
     ready within `progressDeadlineSeconds`) is rolled back: the stable template goes back to the
     served version (or the canary is deleted), `failedVersion` is recorded, and the object reports
     `Degraded=True` and `Stalled=True`. The failed version is not tried again until the spec
     changes (a new generation) or another version becomes the target.
4. Converge Service and HPA (deleted when autoscaling is unset) and report status.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from modelcycle import GROUP
from modelcycle.api import conditions, kinds, modeldeployment
from modelcycle.builders import meta, serving
from modelcycle.controllers import runtime

RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": ["modelversions"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services"],
        "verbs": ["get", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["get", "create", "update", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]

HISTORY_LIMIT = 20
DEADLINE_REASON = "ProgressDeadlineExceeded"
# Validated=False reasons that mean "not decided yet" rather than "rejected".
_UNDECIDED_REASONS = frozenset({"Validating", "Pending", "InProgress", "Waiting", "WaitingForArtifact"})


# --------------------------------------------------------------------------- small helpers


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def mv_version(mv: dict[str, Any]) -> int:
    return int(mv["spec"]["version"])


def is_validated(mv: dict[str, Any]) -> bool:
    return conditions.is_true((mv.get("status") or {}).get("conditions"), conditions.VALIDATED)


def is_rejected(mv: dict[str, Any]) -> bool:
    status = mv.get("status") or {}
    if status.get("phase") == "Rejected":
        return True
    found = conditions.find(status.get("conditions"), conditions.VALIDATED)
    return (
        found is not None and found.get("status") == "False" and found.get("reason") not in _UNDECIDED_REASONS
    )


def template_version(deployment: dict[str, Any] | None) -> int | None:
    if deployment is None:
        return None
    labels = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    try:
        return int(labels[meta.VERSION])
    except (KeyError, ValueError):
        return None


def observed(deployment: dict[str, Any]) -> bool:
    """The Deployment controller has seen the current spec."""
    status = deployment.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 0)


def rollout_complete(deployment: dict[str, Any]) -> bool:
    """Every pod runs the current template and is available, and no old pod is left."""
    if not observed(deployment):
        return False
    want = int(deployment.get("spec", {}).get("replicas", 1))
    status = deployment.get("status") or {}
    return (
        int(status.get("updatedReplicas") or 0) == want
        and int(status.get("replicas") or 0) == want
        and int(status.get("availableReplicas") or 0) == want
    )


def deadline_exceeded(deployment: dict[str, Any]) -> bool:
    if not observed(deployment):
        return False
    progressing = conditions.find((deployment.get("status") or {}).get("conditions"), "Progressing")
    return progressing is not None and progressing.get("reason") == DEADLINE_REASON


def available_since(deployment: dict[str, Any]) -> datetime.datetime | None:
    """When the Deployment last became Available (None when it is not)."""
    found = conditions.find((deployment.get("status") or {}).get("conditions"), "Available")
    if found is None or found.get("status") != "True":
        return None
    return runtime.parse_time(found.get("lastTransitionTime"))


def record(
    history: list[dict[str, Any]], version: int, outcome: str, at: str, message: str | None = None
) -> None:
    """Record a rollout event in the history (newest last, at most 20).

    The newest entry of `version` is updated when it is still InProgress (or already has this
    outcome); otherwise an entry is appended. A rollout that starts supersedes any other one in
    progress; a version that becomes Serving supersedes the previously served one.
    """
    newest = next((e for e in reversed(history) if e.get("version") == version), None)
    if newest is not None and newest.get("outcome") in ("InProgress", outcome):
        entry = newest
        if entry.get("outcome") != outcome or (message and entry.get("message") != message):
            entry.update(outcome=outcome, at=at)
            if message:
                entry["message"] = message
    else:
        entry = {"version": version, "outcome": outcome, "at": at}
        if message:
            entry["message"] = message
        history.append(entry)
    replaced = {"InProgress": ("InProgress",), "Serving": ("InProgress", "Serving")}.get(outcome, ())
    for other in history:
        if other is not entry and other.get("outcome") in replaced:
            other.update(outcome="Superseded", at=at)
    del history[:-HISTORY_LIMIT]


# --------------------------------------------------------------------------- version resolution


def model_versions(ctx: runtime.Context, namespace: str, model: str) -> list[dict[str, Any]]:
    items = ctx.client.list(kind="ModelVersion", namespace=namespace)
    return sorted(
        (
            mv
            for mv in items
            if (mv.get("spec") or {}).get("model") == model and not mv["metadata"].get("deletionTimestamp")
        ),
        key=mv_version,
    )


def resolve(spec: modeldeployment.ModelDeploymentSpec, versions: list[dict[str, Any]]) -> dict[str, Any]:
    """The ModelVersion the spec asks for, or Stalled with the reason. A pinned version is returned
    while its validation is undecided (the caller waits for it); a rejected one stalls."""
    if isinstance(spec.version, int):
        found = [mv for mv in versions if mv_version(mv) == spec.version]
        if not found:
            raise runtime.Stalled(
                "ModelVersionNotFound",
                f"model {spec.model} has no version {spec.version} in this namespace; "
                "register it or pin another",
            )
        mv = found[-1]
        if is_rejected(mv):
            found_cond = (
                conditions.find((mv.get("status") or {}).get("conditions"), conditions.VALIDATED) or {}
            )
            raise runtime.Stalled(
                "VersionRejected",
                f"ModelVersion {mv['metadata']['name']} was rejected by validation "
                f"({found_cond.get('message') or found_cond.get('reason') or 'see its status'}); "
                "pin another version",
            )
        return mv
    validated = [mv for mv in versions if is_validated(mv)]
    if not validated:
        detail = (
            f"none of its {len(versions)} version(s) is Validated yet"
            if versions
            else "no ModelVersion of this model exists in the namespace"
        )
        raise runtime.Stalled("NoValidatedVersion", f"model {spec.model}: {detail}")
    return validated[-1]


# --------------------------------------------------------------------------- children


def _owned_or_stall(existing: dict[str, Any] | None, owner: dict[str, Any]) -> dict[str, Any] | None:
    if existing is None:
        return None
    uids = {ref.get("uid") for ref in existing["metadata"].get("ownerReferences") or []}
    if owner["metadata"]["uid"] not in uids:
        raise runtime.Stalled(
            "NameConflict",
            f"{existing['kind']} {existing['metadata']['name']} exists and is not owned by this "
            "ModelDeployment; delete or rename it",
        )
    return existing


def _get(ctx: runtime.Context, owner: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    found = ctx.client.get_or_none(kind=kind, namespace=owner["metadata"]["namespace"], name=name)
    return _owned_or_stall(found, owner)


def _spec_hash(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return (obj["metadata"].get("annotations") or {}).get(serving.SPEC_HASH)


def converge_deployment(
    ctx: runtime.Context,
    owner: dict[str, Any],
    existing: dict[str, Any] | None,
    desired: dict[str, Any],
    *,
    manage_replicas: bool,
) -> dict[str, Any]:
    """Create the Deployment, replace its spec when the desired one changed, or fix its size."""
    if existing is None:
        return ctx.ensure_child(desired, owner=owner)
    if _spec_hash(existing) != _spec_hash(desired):
        body = copy.deepcopy(existing)
        body.pop("status", None)
        body["metadata"]["labels"] = desired["metadata"]["labels"]
        body["metadata"]["annotations"] = {
            **(existing["metadata"].get("annotations") or {}),
            **desired["metadata"]["annotations"],
        }
        replicas = desired["spec"]["replicas"] if manage_replicas else existing["spec"].get("replicas")
        body["spec"] = {**desired["spec"], "replicas": replicas}
        return ctx.client.replace(body)
    if manage_replicas and existing["spec"].get("replicas") != desired["spec"]["replicas"]:
        return ctx.client.patch(
            kind="Deployment",
            namespace=existing["metadata"]["namespace"],
            name=existing["metadata"]["name"],
            patch={"spec": {"replicas": desired["spec"]["replicas"]}},
        )
    return existing


def converge_simple(ctx: runtime.Context, owner: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """Service or HPA: create, or merge-patch labels, annotations and spec when the hash changed."""
    existing = _get(ctx, owner, desired["kind"], desired["metadata"]["name"])
    if existing is None:
        return ctx.ensure_child(desired, owner=owner)
    if _spec_hash(existing) == _spec_hash(desired):
        return existing
    return ctx.client.patch(
        kind=desired["kind"],
        api_version=desired["apiVersion"],
        namespace=desired["metadata"]["namespace"],
        name=desired["metadata"]["name"],
        patch={
            "metadata": {
                "labels": desired["metadata"]["labels"],
                "annotations": desired["metadata"]["annotations"],
            },
            "spec": desired["spec"],
        },
    )


def delete_child(ctx: runtime.Context, obj: dict[str, Any]) -> None:
    ctx.client.delete(
        kind=obj["kind"],
        api_version=obj.get("apiVersion"),
        namespace=obj["metadata"]["namespace"],
        name=obj["metadata"]["name"],
    )


# --------------------------------------------------------------------------- reconcile


def _find_version(
    versions: list[dict[str, Any]], name: str | None, number: int | None
) -> dict[str, Any] | None:
    if name:
        for mv in versions:
            if mv["metadata"]["name"] == name:
                return mv
    if number is not None:
        found = [mv for mv in versions if mv_version(mv) == number]
        return found[-1] if found else None
    return None


def _ready_replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def _desired_replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)


def _drop_absent_nones(new: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """None deletes a status field (merge patch); leave it out when the field is absent anyway."""
    return {k: v for k, v in new.items() if v is not None or k in before}


def reconcile(obj: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
    spec = serving.parse_spec(obj)
    namespace = obj["metadata"]["namespace"]
    generation = obj["metadata"].get("generation")
    status = obj.get("status") or {}
    stamp = ctx.now()
    events: list[runtime.Event] = []
    history: list[dict[str, Any]] = [dict(h) for h in status.get("history") or []]
    workload = ctx.settings.workload

    versions = model_versions(ctx, namespace, spec.model)
    target = resolve(spec, versions)
    target_version = mv_version(target)
    if not is_validated(target):
        # Only Validated versions are served: a pinned version still under validation waits.
        message = f"ModelVersion {target['metadata']['name']} is not Validated yet; serving waits for it"
        updated = runtime.progress_conditions(
            obj, ready=False, reason="WaitingForValidation", message=message, reconciling=True
        )
        return runtime.Outcome(
            status={"conditions": updated, "phase": "WaitingForValidation"},
            requeue_after=ctx.settings.poll_seconds,
        )

    stable = _get(ctx, obj, "Deployment", serving.deployment_name(obj, serving.STABLE))
    canary = _get(ctx, obj, "Deployment", serving.deployment_name(obj, serving.CANARY))

    # The version last served by every replica (status remembers it; when status was lost, it is
    # learnt again below as soon as the stable Deployment is complete).
    served: int | None = status.get("servedVersion")
    served_name: str | None = status.get("modelVersion")
    served_mv = _find_version(versions, served_name, served) if served is not None else None

    # A version rolled back in this generation is not tried again: the previous one stays served.
    previous_degraded = conditions.find(status.get("conditions"), conditions.DEGRADED)
    already_failed = (
        status.get("failedVersion") == target_version
        and previous_degraded is not None
        and previous_degraded.get("status") == "True"
        and previous_degraded.get("observedGeneration") == generation
    )
    failure: tuple[str, str] | None = None
    blocked = already_failed and served is not None and served != target_version
    if blocked and previous_degraded is not None:
        failure = (
            str(previous_degraded.get("reason") or DEADLINE_REASON),
            str(previous_degraded.get("message") or f"version {target_version} was rolled back"),
        )

    strategy = spec.strategy or modeldeployment.Strategy()
    canary_settings = strategy.canary or modeldeployment.Canary()
    canary_strategy = strategy.type == "Canary"
    manage_replicas = spec.autoscaling is None
    stable_size = serving.stable_replicas(obj, current=None if stable is None else _desired_replicas(stable))
    requeue: float | None = None

    # What the stable template should run, and what the canary (if any) should run.
    canary_mv: dict[str, Any] | None = None
    stable_mv: dict[str, Any] | None
    if blocked:
        stable_mv = served_mv
    elif not canary_strategy or served is None or stable is None or served == target_version:
        stable_mv = target
    elif template_version(stable) == target_version:
        stable_mv = target  # the canary was promoted; the stable rollout is under way
    else:
        stable_mv = served_mv
        canary_mv = target

    # --- a new version that did not become ready in time: roll back ------------------------
    if not blocked:
        failing: dict[str, Any] | None = None
        if canary_mv is not None and canary is not None and template_version(canary) == target_version:
            failing = canary if deadline_exceeded(canary) else None
        elif stable is not None and template_version(stable) == target_version and served != target_version:
            failing = stable if deadline_exceeded(stable) else None
        if failing is not None:
            message = (
                f"version {target_version} did not become ready within {spec.progress_deadline_seconds}s "
                f"(Deployment {failing['metadata']['name']}: {DEADLINE_REASON})"
            )
            if served_mv is not None:
                message += f"; rolled back to version {served}"
                stable_mv, canary_mv, blocked = served_mv, None, True
                record(history, target_version, "RolledBack", stamp, message)
            else:
                message += "; there is no earlier version to roll back to"
            failure = (DEADLINE_REASON, message)
            if not already_failed:
                events.append(runtime.Event("RolledBack" if blocked else DEADLINE_REASON, message, "Warning"))

    # --- the stable Deployment ---------------------------------------------------------------
    if stable_mv is not None:
        desired = serving.deployment(
            obj, stable_mv, track=serving.STABLE, replicas=stable_size, settings=workload
        )
        before = template_version(stable)
        stable = converge_deployment(ctx, obj, stable, desired, manage_replicas=manage_replicas)
        after = template_version(stable)
        if after is not None and after != before and not blocked:
            if before is None:
                events.append(
                    runtime.Event("Created", f"serving version {after} on {stable_size} replica(s)")
                )
            elif canary is not None and after == template_version(canary):
                events.append(runtime.Event("Promoting", f"promoting the canary of version {after}"))
            else:
                events.append(runtime.Event("RolloutStarted", f"rolling out version {after} (was {before})"))
            if after != served:
                record(history, after, "InProgress", stamp)
    elif stable is not None and manage_replicas and _desired_replicas(stable) != stable_size:
        # The served ModelVersion is gone, so its template cannot be rebuilt: only honour the size.
        stable = ctx.client.patch(
            kind="Deployment",
            namespace=namespace,
            name=stable["metadata"]["name"],
            patch={"spec": {"replicas": stable_size}},
        )

    # --- the canary Deployment -----------------------------------------------------------------
    promoting = False
    if canary_mv is not None and stable is not None:
        size = serving.canary_replicas(_desired_replicas(stable), canary_settings.weight)
        desired = serving.deployment(obj, canary_mv, track=serving.CANARY, replicas=size, settings=workload)
        before = template_version(canary)
        canary = converge_deployment(ctx, obj, canary, desired, manage_replicas=True)
        if template_version(canary) != before:
            events.append(
                runtime.Event(
                    "CanaryStarted",
                    f"canary of version {target_version} on {size} pod(s) beside version {served}",
                )
            )
            record(history, target_version, "InProgress", stamp)
        since = available_since(canary) if rollout_complete(canary) else None
        if since is not None:
            healthy_for = (utcnow() - since).total_seconds()
            if healthy_for >= canary_settings.promote_after_seconds:
                desired = serving.deployment(
                    obj, target, track=serving.STABLE, replicas=stable_size, settings=workload
                )
                stable = converge_deployment(ctx, obj, stable, desired, manage_replicas=manage_replicas)
                events.append(
                    runtime.Event(
                        "Promoting",
                        f"canary of version {target_version} healthy for {int(healthy_for)}s: promoting it",
                    )
                )
                promoting = True
            else:
                requeue = max(1.0, canary_settings.promote_after_seconds - healthy_for)
    elif canary is not None:
        # Keep a promoted canary until the stable rollout is done; remove any other.
        promoted = (
            not blocked
            and canary_strategy
            and stable is not None
            and template_version(stable) == template_version(canary) == target_version
        )
        if promoted and stable is not None and not rollout_complete(stable):
            promoting = True
        else:
            delete_child(ctx, canary)
            if failure is None and not promoted:
                events.append(
                    runtime.Event("CanaryDeleted", f"canary of version {template_version(canary)} removed")
                )
            canary = None

    # --- Service and HPA ---------------------------------------------------------------------
    converge_simple(ctx, obj, serving.service(obj))
    desired_hpa = serving.horizontal_pod_autoscaler(obj)
    if desired_hpa is not None:
        converge_simple(ctx, obj, desired_hpa)
    else:
        existing_hpa = _get(ctx, obj, "HorizontalPodAutoscaler", serving.hpa_name(obj))
        if existing_hpa is not None:
            delete_child(ctx, existing_hpa)

    # --- what is served now ------------------------------------------------------------------
    stable_version = template_version(stable)
    stable_done = stable is not None and rollout_complete(stable)
    if stable_done and stable_version is not None and stable_version != served:
        served = stable_version
        found = _find_version(versions, None, served)
        served_name = found["metadata"]["name"] if found else served_name
        record(history, served, "Serving", stamp)
        events.append(runtime.Event("RolloutComplete", f"version {served} is served by every replica"))
    if served is not None and not history:
        record(history, served, "Serving", stamp)

    failed_version = None if failure is None and not blocked else target_version

    ready_count = _ready_replicas(stable) + _ready_replicas(canary)
    want_count = _desired_replicas(stable) + _desired_replicas(canary)
    goal = served if blocked else target_version
    in_progress = canary is not None or not stable_done or stable_version != goal
    ready = failure is None and not in_progress and ready_count == want_count

    # --- conditions ------------------------------------------------------------------------------
    if want_count == 0:
        available = (False, "ScaledToZero", "no serving replicas are wanted")
    elif ready_count > 0:
        available = (True, "MinimumReplicasAvailable", f"{ready_count}/{want_count} serving replicas ready")
    else:
        available = (False, "NoReadyReplicas", f"0/{want_count} serving replicas ready")
    if failure is not None:
        ready_reason, ready_message = failure
        phase = "Degraded"
    elif canary is not None and promoting:
        ready_reason, ready_message = (
            "Promoting",
            f"promoting the canary of version {template_version(canary)}",
        )
        phase = "Promoting"
    elif canary is not None:
        ready_reason = "CanaryInProgress"
        ready_message = (
            f"canary of version {template_version(canary)}: {_ready_replicas(canary)}/"
            f"{_desired_replicas(canary)} pod(s) ready, beside version {served}"
        )
        phase = "Canary"
    elif in_progress or not ready:
        ready_reason = (
            "RollingOut" if served is not None and stable_version != served else "WaitingForReplicas"
        )
        ready_message = f"version {stable_version}: {ready_count}/{want_count} serving replicas ready"
        phase = "Progressing"
    else:
        ready_reason = "Serving"
        ready_message = f"version {served} served by {ready_count}/{want_count} replica(s)"
        phase = "Serving"
    updated = runtime.progress_conditions(
        obj,
        ready=ready,
        reason=ready_reason,
        message=ready_message,
        reconciling=failure is None and not ready,
        extra=(
            (conditions.AVAILABLE, available[0], available[1], available[2]),
            (
                conditions.DEGRADED,
                failure is not None,
                failure[0] if failure else "RolloutHealthy",
                failure[1] if failure else "the latest rollout did not fail",
            ),
        ),
    )
    if failure is not None:
        updated = conditions.set_condition(
            updated,
            type_=conditions.STALLED,
            status=True,
            reason=failure[0],
            message=failure[1],
            generation=generation,
            now=stamp,
        )
    new_status: dict[str, Any] = {
        "servedVersion": served,
        "modelVersion": served_name if served is not None else None,
        "canaryVersion": template_version(canary),
        "failedVersion": failed_version,
        "replicas": want_count,
        "readyReplicas": ready_count,
        "url": serving.url(obj),
        "history": history or None,
        "conditions": updated,
        "phase": phase,
    }
    if requeue is None and failure is None and not ready:
        requeue = ctx.settings.poll_seconds
    return runtime.Outcome(
        status=_drop_absent_nones(new_status, status), events=events, requeue_after=requeue
    )


runtime.register(kinds.MODEL_DEPLOYMENT, reconcile, dependents=("ModelMonitor",))
