"""ModelDeployment: serve a pinned or the latest Validated ModelVersion, roll out new versions.

One level-triggered reconcile: observe (the versions and the children), plan (the pure
`planners.rollout.plan_rollout` decides every step below), apply the writes, report the status.

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
   - Canary: the stable Deployment keeps the served version; `<mdep>-canary` runs the target behind
     the same Service, the replicas split between them as close to the weight as their number
     allows (`serving.canary_split`; status.canaryShare is the share in effect). Once the canary has been
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

import datetime
from typing import Any

from modelcycle import GROUP
from modelcycle.api import kinds
from modelcycle.builders import serving
from modelcycle.controllers import runtime
from modelcycle.planners import rollout

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


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


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
    found = ctx.reads.get_or_none(kind=kind, namespace=owner["metadata"]["namespace"], name=name)
    return _owned_or_stall(found, owner)


def observe(obj: dict[str, Any], ctx: runtime.Context, model: str) -> rollout.Observed:
    """The model's ModelVersions and this ModelDeployment's children (each must be owned by it)."""
    namespace = obj["metadata"]["namespace"]
    versions = rollout.model_versions(ctx.reads.list(kind="ModelVersion", namespace=namespace), model)
    return rollout.Observed(
        versions=versions,
        stable=_get(ctx, obj, "Deployment", serving.deployment_name(obj, serving.STABLE)),
        canary=_get(ctx, obj, "Deployment", serving.deployment_name(obj, serving.CANARY)),
        service=_get(ctx, obj, "Service", serving.service_name(obj)),
        hpa=_get(ctx, obj, "HorizontalPodAutoscaler", serving.hpa_name(obj)),
    )


def reconcile(obj: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
    spec = serving.parse_spec(obj)
    observed = observe(obj, ctx, spec.model)
    plan = rollout.plan_rollout(
        obj,
        spec=spec,
        observed=observed,
        now=utcnow(),
        settings=ctx.settings.workload,
        poll_seconds=ctx.settings.poll_seconds,
    )
    for change in plan.changes:
        ctx.apply(change, owner=obj)
    return plan.outcome


CONTROLLER = runtime.Registration(
    kinds.MODEL_DEPLOYMENT, reconcile, tuple(RBAC_RULES), dependents=("ModelMonitor",)
)
