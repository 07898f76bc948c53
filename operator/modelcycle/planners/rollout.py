"""The ModelDeployment's rollout decision: from the spec, the versions and the observed children to
the writes to make and the status to report.

`plan_rollout` is pure. It never talks to the API server: it is given the model's ModelVersions and
the observed stable and canary Deployments, Service and HPA, and returns the `Change`s to apply (in
order) with the `Outcome` to report. Where a decision depends on what a write returns (a replaced
Deployment is not rolled out yet), it predicts what the API server answers: a created or changed
Deployment has a new generation its controller has not observed.

The rules (docs/serving.md):

- Only Validated versions are served. `latest` is the newest Validated version; a pinned version
  still being validated is waited for; a rejected or missing one stalls.
- Rolling: the stable template runs the target; the Deployment controller replaces pods one by one.
- Canary: the stable Deployment keeps the served version, `<mdep>-canary` runs the target; the
  replicas are split between them so the canary's share of the pods (and so of the Service's
  requests) is as close to the weight as the replica count allows. Healthy for
  `promoteAfterSeconds`, the stable template takes the target (on every replica) and the canary
  is deleted once that rollout completes.
- A new version whose Deployment reports `ProgressDeadlineExceeded` is rolled back and recorded in
  `failedVersion`; it is not tried again in this generation.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any

from modelcycle.api import conditions, modeldeployment
from modelcycle.builders import meta, pods, serving
from modelcycle.planners import clock
from modelcycle.planners.outcomes import (
    Change,
    ConditionUpdate,
    Event,
    Outcome,
    Stalled,
    drop_absent_nones,
    progress_conditions,
)

HISTORY_LIMIT = 20
DEADLINE_REASON = "ProgressDeadlineExceeded"
# Validated=False reasons that mean "not decided yet" rather than "rejected".
_UNDECIDED_REASONS = frozenset({"Validating", "Pending", "InProgress", "Waiting", "WaitingForArtifact"})


# --------------------------------------------------------------------------- versions


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


def model_versions(items: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The model's ModelVersions among `items`, oldest first, without those being deleted."""
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
            raise Stalled(
                "ModelVersionNotFound",
                f"model {spec.model} has no version {spec.version} in this namespace; "
                "register it or pin another",
            )
        mv = found[-1]
        if is_rejected(mv):
            found_cond = (
                conditions.find((mv.get("status") or {}).get("conditions"), conditions.VALIDATED) or {}
            )
            raise Stalled(
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
        raise Stalled("NoValidatedVersion", f"model {spec.model}: {detail}")
    return validated[-1]


def find_version(
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


# --------------------------------------------------------------------------- Deployments


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
    return clock.parse_time(found.get("lastTransitionTime"))


def ready_replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def desired_replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)


# --------------------------------------------------------------------------- history


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


# --------------------------------------------------------------------------- converging children


def _spec_hash(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return (obj["metadata"].get("annotations") or {}).get(serving.SPEC_HASH)


def _next_generation(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server answers after a spec change: a generation its controller has not seen."""
    metadata = {**obj["metadata"], "generation": int(obj["metadata"].get("generation") or 0) + 1}
    return {**obj, "metadata": metadata}


def converge_deployment(
    existing: dict[str, Any] | None, desired: dict[str, Any], *, manage_replicas: bool
) -> tuple[dict[str, Any], Change | None]:
    """The Deployment after converging (as the API server will answer) and the write that does it:
    create it, replace its spec when the desired one changed, or fix its size."""
    if existing is None:
        return _next_generation(desired), Change(
            "create", desired["kind"], desired["metadata"]["name"], desired
        )
    name = existing["metadata"]["name"]
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
        predicted = {**_next_generation(body), "status": existing.get("status") or {}}
        return predicted, Change("replace", "Deployment", name, body)
    if manage_replicas and existing["spec"].get("replicas") != desired["spec"]["replicas"]:
        return scale(existing, desired["spec"]["replicas"])
    return existing, None


def scale(existing: dict[str, Any], replicas: int) -> tuple[dict[str, Any], Change]:
    """The Deployment at `replicas` pods, and the merge patch that sizes it."""
    predicted = _next_generation({**existing, "spec": {**existing["spec"], "replicas": replicas}})
    patch = {"spec": {"replicas": replicas}}
    return predicted, Change("patch", "Deployment", existing["metadata"]["name"], patch, "apps/v1")


def converge_simple(existing: dict[str, Any] | None, desired: dict[str, Any]) -> Change | None:
    """Service or HPA: create, or merge-patch labels, annotations and spec when the hash changed."""
    name = desired["metadata"]["name"]
    if existing is None:
        return Change("create", desired["kind"], name, desired)
    if _spec_hash(existing) == _spec_hash(desired):
        return None
    patch = {
        "metadata": {
            "labels": desired["metadata"]["labels"],
            "annotations": desired["metadata"]["annotations"],
        },
        "spec": desired["spec"],
    }
    return Change("patch", desired["kind"], name, patch, desired["apiVersion"])


def delete(obj: dict[str, Any]) -> Change:
    return Change("delete", obj["kind"], obj["metadata"]["name"], None, obj.get("apiVersion"))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Observed:
    """What the controller read: the model's ModelVersions (oldest first) and the children."""

    versions: list[dict[str, Any]]
    stable: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    hpa: dict[str, Any] | None = None


@dataclass
class RolloutPlan:
    """The writes to make, in order, and what to report once they are made."""

    changes: list[Change] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)


class _Changes:
    """The plan's writes, one per child: a later decision about a child replaces an earlier one."""

    def __init__(self) -> None:
        self._by_child: dict[tuple[str, str], Change] = {}

    def set(self, change: Change | None) -> None:
        if change is not None:
            self._by_child.pop((change.kind, change.name), None)
            self._by_child[(change.kind, change.name)] = change

    def ordered(self) -> list[Change]:
        return list(self._by_child.values())


def plan_rollout(
    mdep: dict[str, Any],
    *,
    spec: modeldeployment.ModelDeploymentSpec,
    observed: Observed,
    now: datetime.datetime,
    settings: pods.WorkloadSettings,
    poll_seconds: float,
) -> RolloutPlan:
    """What to write and report for this ModelDeployment. Raises Stalled when no version can be served."""
    generation = mdep["metadata"].get("generation")
    status = mdep.get("status") or {}
    stamp = clock.rfc3339(now.timestamp())
    events: list[Event] = []
    history: list[dict[str, Any]] = [dict(h) for h in status.get("history") or []]
    versions = observed.versions
    changes = _Changes()

    target = resolve(spec, versions)
    target_version = mv_version(target)
    if not is_validated(target):
        # Only Validated versions are served: a pinned version still under validation waits.
        message = f"ModelVersion {target['metadata']['name']} is not Validated yet; serving waits for it"
        updated = progress_conditions(
            mdep, ready=False, reason="WaitingForValidation", message=message, reconciling=True, now=stamp
        )
        return RolloutPlan(
            outcome=Outcome(
                status={"conditions": updated, "phase": "WaitingForValidation"}, requeue_after=poll_seconds
            )
        )

    stable, canary = observed.stable, observed.canary
    # The version last served by every replica (status remembers it; when status was lost, it is
    # learnt again below as soon as the stable Deployment is complete).
    served: int | None = status.get("servedVersion")
    served_name: str | None = status.get("modelVersion")
    served_mv = find_version(versions, served_name, served) if served is not None else None

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
    stable_size = serving.stable_replicas(spec, current=None if stable is None else desired_replicas(stable))
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
                events.append(Event("RolledBack" if blocked else DEADLINE_REASON, message, "Warning"))

    # --- during a canary the two tracks share the pods as the weight says ---------------------
    full_size = stable_size
    canary_size = 0
    if canary_mv is not None:
        if manage_replicas:
            stable_size, canary_size = serving.canary_split(spec.replicas, canary_settings.weight)
        else:
            canary_size = serving.canary_beside(stable_size, canary_settings.weight)

    # --- the stable Deployment ---------------------------------------------------------------
    if stable_mv is not None:
        desired = serving.deployment(
            mdep, spec, stable_mv, track=serving.STABLE, replicas=stable_size, settings=settings
        )
        before = template_version(stable)
        stable, change = converge_deployment(observed.stable, desired, manage_replicas=manage_replicas)
        changes.set(change)
        after = template_version(stable)
        if after is not None and after != before and not blocked:
            if before is None:
                events.append(Event("Created", f"serving version {after} on {stable_size} replica(s)"))
            elif canary is not None and after == template_version(canary):
                events.append(Event("Promoting", f"promoting the canary of version {after}"))
            else:
                events.append(Event("RolloutStarted", f"rolling out version {after} (was {before})"))
            if after != served:
                record(history, after, "InProgress", stamp)
    elif stable is not None and manage_replicas and desired_replicas(stable) != stable_size:
        # The served ModelVersion is gone, so its template cannot be rebuilt: only honour the size.
        stable, change = scale(stable, stable_size)
        changes.set(change)

    # --- the canary Deployment -----------------------------------------------------------------
    promoting = False
    if canary_mv is not None and stable is not None:
        desired = serving.deployment(
            mdep, spec, canary_mv, track=serving.CANARY, replicas=canary_size, settings=settings
        )
        before = template_version(canary)
        canary, change = converge_deployment(canary, desired, manage_replicas=True)
        changes.set(change)
        if template_version(canary) != before:
            stable_pods = desired_replicas(stable)
            share = serving.canary_share(stable_pods, canary_size)
            events.append(
                Event(
                    "CanaryStarted",
                    f"canary of version {target_version} on {canary_size} pod(s) beside {stable_pods} of "
                    f"version {served}: {share}% of the serving pods, and so of the requests",
                )
            )
            record(history, target_version, "InProgress", stamp)
        since = available_since(canary) if rollout_complete(canary) else None
        if since is not None:
            healthy_for = (now - since).total_seconds()
            if healthy_for >= canary_settings.promote_after_seconds:
                desired = serving.deployment(
                    mdep, spec, target, track=serving.STABLE, replicas=full_size, settings=settings
                )
                stable, change = converge_deployment(
                    observed.stable, desired, manage_replicas=manage_replicas
                )
                changes.set(change)
                events.append(
                    Event(
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
            changes.set(delete(canary))
            if failure is None and not promoted:
                events.append(Event("CanaryDeleted", f"canary of version {template_version(canary)} removed"))
            canary = None

    # --- Service and HPA ---------------------------------------------------------------------
    changes.set(converge_simple(observed.service, serving.service(mdep, spec)))
    desired_hpa = serving.horizontal_pod_autoscaler(mdep, spec)
    if desired_hpa is not None:
        changes.set(converge_simple(observed.hpa, desired_hpa))
    elif observed.hpa is not None:
        changes.set(delete(observed.hpa))

    # --- what is served now ------------------------------------------------------------------
    stable_version = template_version(stable)
    stable_done = stable is not None and rollout_complete(stable)
    if stable_done and stable_version is not None and stable_version != served:
        served = stable_version
        found = find_version(versions, None, served)
        served_name = found["metadata"]["name"] if found else served_name
        record(history, served, "Serving", stamp)
        events.append(Event("RolloutComplete", f"version {served} is served by every replica"))
    if served is not None and not history:
        record(history, served, "Serving", stamp)

    failed_version = None if failure is None and not blocked else target_version

    ready_count = ready_replicas(stable) + ready_replicas(canary)
    want_count = desired_replicas(stable) + desired_replicas(canary)
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
            f"canary of version {template_version(canary)}: {ready_replicas(canary)}/"
            f"{desired_replicas(canary)} pod(s) ready, beside version {served}"
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
    extra = [
        ConditionUpdate(conditions.AVAILABLE, *available),
        ConditionUpdate(
            conditions.DEGRADED,
            failure is not None,
            failure[0] if failure else "RolloutHealthy",
            failure[1] if failure else "the latest rollout did not fail",
        ),
    ]
    if failure is not None:
        extra.append(ConditionUpdate(conditions.STALLED, True, *failure))
    updated = progress_conditions(
        mdep,
        ready=ready,
        reason=ready_reason,
        message=ready_message,
        reconciling=failure is None and not ready,
        extra=extra,
        now=stamp,
    )
    new_status: dict[str, Any] = {
        "servedVersion": served,
        "modelVersion": served_name if served is not None else None,
        "canaryVersion": template_version(canary),
        "canaryShare": (
            None
            if canary is None
            else serving.canary_share(desired_replicas(stable), desired_replicas(canary))
        ),
        "failedVersion": failed_version,
        "replicas": want_count,
        "readyReplicas": ready_count,
        "url": serving.url(mdep, spec),
        "history": history or None,
        "conditions": updated,
        "phase": phase,
    }
    if requeue is None and failure is None and not ready:
        requeue = poll_seconds
    return RolloutPlan(
        changes=changes.ordered(),
        outcome=Outcome(status=drop_absent_nones(new_status, status), events=events, requeue_after=requeue),
    )
