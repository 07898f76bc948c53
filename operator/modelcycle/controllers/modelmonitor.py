"""ModelMonitor: gather live statistics from the serving pods, measure drift, trigger retraining.

Every `intervalSeconds` (the reconcile requeues itself; reconciles in between only wait):

1. Find the ModelDeployment (missing → Stalled DeploymentNotFound, recovers when it appears) and
   the version it serves (`status.servedVersion`).
2. List its READY serving pods of that version (canary pods count over another reference and are
   left out) and fetch each one's live window, `GET /v2/models/<model>/stats`, through the API
   server's pod proxy (works whether the operator runs in the cluster or not; `--monitor-stats-access
   direct` uses HTTP to the pod IP instead).
3. Add the replicas together (`drift.aggregate`) and compute drift with `drift.detect` against the
   served version's training profile - the reference the server itself counts against. The
   operator never reads the artifact store: it asks a serving pod for the profile once per
   reference fingerprint (`GET /v2/models/<model>/profile`) and checks the fingerprint.
4. Report `DriftDetected`, per-feature scores, the window size, live performance from feedback
   labels (when `performance` is set), and the Prometheus gauge
   `modelcycle_monitor_drift_score{namespace,monitor,feature}` (series removed with the monitor).
5. On drift (or a performance drop) with `retrain.enabled`, create a retraining TrainingRun cloned
   from the run that produced the served version - at most one per `cooldownSeconds` (checked
   against status.lastRetrainTime AND the creation time of every run labelled with this monitor, so
   it holds across operator restarts; the run's name is also fixed per cooldown window, so a racing
   second create is a 409) and never more than `maxConcurrent` unfinished runs.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import prometheus_client

from modelcycle import GROUP
from modelcycle.api import conditions, kinds, modelmonitor
from modelcycle.builders import meta, retraining, serving
from modelcycle.controllers import kube, runtime
from modelcycle.planners import clock
from modelcycle.planners import retrain as retrain_planner

RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["modelmonitors"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": [GROUP],
        "resources": ["modeldeployments", "modelversions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [GROUP], "resources": ["trainingruns"], "verbs": ["get", "list", "watch", "create"]},
    # Traffic retraining (spec.retrain.traffic): the Dataset of recent labelled traffic, created
    # before its run; a stalled one that no run used is deleted when the next window replaces it.
    {"apiGroups": [GROUP], "resources": ["datasets"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]

PERFORMANCE_DEGRADED = "PerformanceDegraded"
DIRECT_TIMEOUT = 10.0
PROFILE_CACHE_SIZE = 64

DRIFT_SCORE = prometheus_client.Gauge(
    "modelcycle_monitor_drift_score",
    "Drift score of one feature at the monitor's last check (statistic of ks/chi2, or psi/jsd)",
    ["namespace", "monitor", "feature"],
)
_series_lock = threading.Lock()
_series: dict[tuple[str, str], set[str]] = {}
_profiles: OrderedDict[str, dict[str, Any]] = OrderedDict()
_profiles_lock = threading.Lock()


# --------------------------------------------------------------------------- metrics


def export_scores(namespace: str, name: str, scores: Mapping[str, float]) -> None:
    """Set this monitor's gauges and drop the series of features it no longer reports."""
    with _series_lock:
        previous = _series.get((namespace, name), set())
        for feature in previous - set(scores):
            DRIFT_SCORE.remove(namespace, name, feature)
        for feature, score in scores.items():
            DRIFT_SCORE.labels(namespace, name, feature).set(score if math.isfinite(score) else float("nan"))
        _series[(namespace, name)] = set(scores)


def forget_monitor(obj: dict[str, Any]) -> None:
    """Drop every series of a deleted monitor."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    with _series_lock:
        for feature in _series.pop((namespace, name), set()):
            DRIFT_SCORE.remove(namespace, name, feature)


# --------------------------------------------------------------------------- serving pods


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        not pod["metadata"].get("deletionTimestamp")
        and bool(status.get("podIP"))
        and conditions.is_true(status.get("conditions"), "Ready")
    )


def fetch(ctx: runtime.Context, pod: dict[str, Any], url_path: str) -> bytes:
    """GET a path of a serving pod's model server (pod proxy, or direct HTTP when so configured)."""
    if ctx.settings.stats_access == "direct":
        ip = pod["status"]["podIP"]
        host = f"[{ip}]" if ":" in ip else ip
        with urllib.request.urlopen(
            f"http://{host}:{serving.PORT}{url_path}", timeout=DIRECT_TIMEOUT
        ) as response:
            return bytes(response.read())
    return ctx.client.proxy_get(
        namespace=pod["metadata"]["namespace"],
        pod=pod["metadata"]["name"],
        port=serving.PORT,
        url_path=url_path,
    )


def fetch_json(ctx: runtime.Context, pod: dict[str, Any], url_path: str) -> dict[str, Any]:
    data = json.loads(fetch(ctx, pod, url_path))
    if not isinstance(data, dict):
        raise ValueError(f"{url_path} did not return a JSON object")
    return data


def reference_profile(
    ctx: runtime.Context, pods: list[dict[str, Any]], model: str, fingerprint: str
) -> dict[str, Any] | None:
    """The profile the server counts against, by fingerprint: cached, else asked of a serving pod."""
    from modelcycle.workloads import drift  # numpy, pandas and scipy: see `reconcile`

    with _profiles_lock:
        if fingerprint in _profiles:
            _profiles.move_to_end(fingerprint)
            return _profiles[fingerprint]
    for pod in pods:
        try:
            answer = fetch_json(ctx, pod, f"/v2/models/{model}/profile")
        except (kube.ApiError, OSError, ValueError):
            continue
        profile = answer.get("profile")
        if isinstance(profile, dict) and drift.profile_fingerprint(profile) == fingerprint:
            with _profiles_lock:
                _profiles[fingerprint] = profile
                while len(_profiles) > PROFILE_CACHE_SIZE:
                    _profiles.popitem(last=False)
            return profile
    return None


def gather(
    ctx: runtime.Context, pods: list[dict[str, Any]], model: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Live statistics of each pod, and what went wrong with the others."""
    stats: list[dict[str, Any]] = []
    problems: list[str] = []
    for pod in pods:
        try:
            stats.append(fetch_json(ctx, pod, f"/v2/models/{model}/stats"))
        except (kube.ApiError, OSError, ValueError) as exc:
            problems.append(f"{pod['metadata']['name']}: {exc}"[:200])
    return stats, problems


def largest_group(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replicas counting over one reference (the one with most rows), so they can be added."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for item in stats:
        groups.setdefault(item.get("referenceFingerprint"), []).append(item)
    return max(groups.values(), key=lambda g: sum(int(s.get("rows", 0)) for s in g))


# --------------------------------------------------------------------------- retraining


def maybe_retrain(
    obj: dict[str, Any],
    ctx: runtime.Context,
    *,
    spec: modelmonitor.ModelMonitorSpec,
    trigger: retraining.Trigger,
    message: str,
    served_version: int,
    served_mv_name: str | None,
) -> retrain_planner.RetrainDecision:
    """Observe the monitor's runs and the served version's source run, plan, create the run."""
    namespace = obj["metadata"]["namespace"]
    runs = ctx.client.list(kind="TrainingRun", namespace=namespace, label_selector=retraining.selector(obj))
    mv = (
        ctx.client.get_or_none(kind="ModelVersion", namespace=namespace, name=served_mv_name)
        if served_mv_name
        else None
    )
    source_name = (((mv or {}).get("spec") or {}).get("lineage") or {}).get("trainingRun")
    source = (
        ctx.client.get_or_none(kind="TrainingRun", namespace=namespace, name=source_name)
        if source_name
        else None
    )
    base = None
    retrain = spec.retrain or modelmonitor.RetrainSettings()
    if retrain.traffic is not None and source is not None:
        base_name = (
            retrain.dataset_ref.name
            if retrain.dataset_ref is not None
            else ((source.get("spec") or {}).get("datasetRef") or {}).get("name")
        )
        if base_name:
            base = ctx.client.get_or_none(kind="Dataset", namespace=namespace, name=base_name)
    decision = retrain_planner.plan_retrain(
        obj,
        spec=spec,
        trigger=trigger,
        message=message,
        served_version=served_version,
        served_mv_name=served_mv_name,
        runs=runs,
        source_name=source_name,
        source=source,
        now=time.time(),
        base=base,
    )
    if decision.run is None:
        return decision
    if decision.dataset is not None:
        decision = _traffic_first(obj, ctx, decision, runs)
    run = decision.run
    if run is None:
        return decision
    try:
        ctx.client.create(run)
    except kube.Conflict:
        name = run["metadata"]["name"]
        return retrain_planner.on_name_taken(
            obj, ctx.client.get(kind="TrainingRun", namespace=namespace, name=name)
        )
    return decision


def _traffic_first(
    obj: dict[str, Any],
    ctx: runtime.Context,
    decision: retrain_planner.RetrainDecision,
    runs: list[dict[str, Any]],
) -> retrain_planner.RetrainDecision:
    """A traffic retraining: create its Dataset first; the run only once that Dataset is Ready."""
    namespace = obj["metadata"]["namespace"]
    mine = [
        d
        for d in ctx.client.list(kind="Dataset", namespace=namespace, label_selector=retraining.selector(obj))
        if not d["metadata"].get("deletionTimestamp")
    ]
    decision, stale = retrain_planner.pending_traffic(decision, mine, runs)
    assert decision.dataset is not None
    name = decision.dataset["metadata"]["name"]
    existing = next((d for d in mine if d["metadata"]["name"] == name), None)
    outcome = retrain_planner.on_traffic_dataset(decision, existing)
    if outcome.dataset is not None:
        for old in stale:
            ctx.client.delete(kind="Dataset", namespace=namespace, name=old)
        try:
            ctx.client.create(outcome.dataset)
        except kube.Conflict:
            found = ctx.client.get(kind="Dataset", namespace=namespace, name=name)
            labels = found["metadata"].get("labels") or {}
            if labels.get(meta.MONITOR) != meta.label_value(obj["metadata"]["name"]):
                text = f"Dataset {name} exists and was not created by this monitor; delete or rename it"
                return retrain_planner.RetrainDecision(
                    "NameConflict", text, events=[runtime.Event("NameConflict", text, "Warning")]
                )
            return retrain_planner.on_traffic_dataset(decision, found)
    return outcome


# --------------------------------------------------------------------------- reconcile


def _not_monitoring(
    obj: dict[str, Any], ctx: runtime.Context, reason: str, message: str, *, served: int | None, interval: int
) -> runtime.Outcome:
    updated = runtime.progress_conditions(
        obj,
        ready=False,
        reason=reason,
        message=message,
        reconciling=True,
        extra=(runtime.ConditionUpdate(conditions.DRIFT_DETECTED, "Unknown", reason, message),),
    )
    status: dict[str, Any] = {"conditions": updated, "phase": "Waiting"}
    if served is not None:
        status["servedVersion"] = served
    return runtime.Outcome(status=status, requeue_after=float(interval))


def _performance_check(
    spec: modelmonitor.ModelMonitorSpec, live: dict[str, float], min_count: int
) -> tuple[bool | None, str]:
    """(dropped?, message); None when there is no verdict (not configured, or too few labels)."""
    settings = spec.performance
    if settings is None:
        return None, "no performance check configured"
    count = int(live.get("count", 0))
    if count < min_count:
        return None, f"{count} labelled rows, fewer than the {min_count} needed for a verdict"
    value = live.get(settings.metric)
    if value is None:
        return None, f"metric {settings.metric} is not available for this model's task"
    if settings.min is not None and value < settings.min:
        return (
            True,
            f"{settings.metric} {value:.4g} is below the minimum {settings.min:g} ({count} labelled rows)",
        )
    if settings.max is not None and value > settings.max:
        return (
            True,
            f"{settings.metric} {value:.4g} is above the maximum {settings.max:g} ({count} labelled rows)",
        )
    return False, f"{settings.metric} {value:.4g} is within bounds ({count} labelled rows)"


def reconcile(obj: dict[str, Any], ctx: runtime.Context) -> runtime.Outcome:
    # Imported by the first monitor's reconcile, not with the operator: numpy, pandas and scipy are
    # about 130 MB of the operator's RSS, which an operator without ModelMonitors never needs.
    from modelcycle.workloads import drift

    spec = modelmonitor.ModelMonitorSpec.model_validate(obj.get("spec") or {})
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    generation = obj["metadata"].get("generation")
    status = obj.get("status") or {}
    interval = spec.interval_seconds
    drift_settings = spec.drift or modelmonitor.DriftSettings()

    mdep = ctx.client.get_or_none(kind="ModelDeployment", namespace=namespace, name=spec.deployment_ref.name)
    if mdep is None:
        export_scores(namespace, name, {})  # no stale scores for a deployment that is gone
        raise runtime.Stalled(
            "DeploymentNotFound",
            f"ModelDeployment {spec.deployment_ref.name} does not exist in namespace {namespace}",
        )
    model = serving.parse_spec(mdep).model
    mdep_status = mdep.get("status") or {}
    served = mdep_status.get("servedVersion")
    served_mv_name = mdep_status.get("modelVersion")
    if served is None:
        return _not_monitoring(
            obj,
            ctx,
            "WaitingForDeployment",
            f"ModelDeployment {spec.deployment_ref.name} serves no version yet",
            served=None,
            interval=interval,
        )

    # Reconciles between checks (watch events, resyncs) only wait for the next check.
    now = time.time()
    last_check = clock.epoch_of(status.get("lastCheckTime"))
    unchanged = status.get("observedGeneration") == generation and status.get("servedVersion") == served
    if unchanged and last_check is not None and now - last_check < interval:
        return runtime.Outcome(requeue_after=max(1.0, interval - (now - last_check)))

    pods = [
        p
        for p in ctx.client.list(
            kind="Pod", namespace=namespace, label_selector=serving.pod_selector(mdep, version=int(served))
        )
        if pod_ready(p)
    ]
    if not pods:
        return _not_monitoring(
            obj,
            ctx,
            "NoReadyPods",
            f"no ready serving pod of version {served}",
            served=served,
            interval=interval,
        )
    stats, problems = gather(ctx, pods, model)
    if not stats:
        return _not_monitoring(
            obj,
            ctx,
            "StatsUnavailable",
            f"no serving pod answered /stats: {'; '.join(problems)[:1000]}",
            served=served,
            interval=interval,
        )
    group = largest_group(stats)
    try:
        live = drift.aggregate(group)
    except (ValueError, TypeError) as exc:  # replicas that disagree (a server bug): say so, retry
        return _not_monitoring(
            obj, ctx, "StatsUnusable", f"the live statistics cannot be added up: {exc}", served=served,
            interval=interval,
        )  # fmt: skip
    fingerprint = live.get("referenceFingerprint")
    events: list[runtime.Event] = []
    stamp = runtime.rfc3339(now)
    new_status: dict[str, Any] = {
        "servedVersion": served,
        "lastCheckTime": stamp,
        "windowSize": int(live.get("rows", 0)),
    }

    # --- drift -------------------------------------------------------------------------------
    profile = reference_profile(ctx, pods, model, fingerprint) if fingerprint else None
    drifted = False
    if profile is None:
        drift_condition: tuple[str, str, str] = (
            "Unknown",
            "NoReferenceProfile",
            f"version {served} has no training profile to compare with"
            if not fingerprint
            else f"no serving pod returned the reference profile {fingerprint[:12]}",
        )
        scores: dict[str, float] = {}
        new_status["features"] = None
        new_status["driftedFeatures"] = None
    else:
        try:
            result = drift.detect(
                profile,
                live,
                method=drift_settings.method,
                threshold=drift_settings.threshold,
                min_samples=drift_settings.min_samples,
                features=drift_settings.features,
            )
        except ValueError as exc:  # counts made over another binning than the profile's
            return _not_monitoring(
                obj, ctx, "StatsUnusable", f"the live statistics do not match the reference profile: {exc}",
                served=served, interval=interval,
            )  # fmt: skip
        drifted = bool(result["drifted"])
        features = []
        for row in result["features"]:
            entry: dict[str, Any] = {
                "name": row["name"],
                "score": float(row["score"]),
                "psi": float(row["psi"]),
                "drifted": bool(row["drifted"]),
            }
            if drift_settings.method in ("ks", "chi2"):
                entry["pValue"] = float(row["pValue"])
            features.append(entry)
        scores = {f["name"]: f["score"] for f in features}
        new_status["features"] = features
        new_status["driftedFeatures"] = list(result["driftedFeatures"])
        judged = [r for r in result["features"] if r["enoughSamples"]]
        if drifted:
            drift_condition = (
                "True",
                "DriftDetected",
                f"{len(result['driftedFeatures'])} of {len(result['features'])} feature(s) drifted "
                f"({drift_settings.method}, threshold {drift_settings.threshold:g}, "
                f"{live.get('rows', 0)} live rows): "
                f"{', '.join(result['driftedFeatures'])}",
            )
        elif not judged:
            drift_condition = (
                "Unknown",
                "InsufficientSamples",
                f"{live.get('rows', 0)} live rows; at least {drift_settings.min_samples} "
                "are needed for a verdict",
            )
        else:
            drift_condition = (
                "False",
                "NoDrift",
                f"no drift in {len(judged)} feature(s) ({drift_settings.method}, threshold "
                f"{drift_settings.threshold:g}, {live.get('rows', 0)} live rows)",
            )
    export_scores(namespace, name, scores)
    previous_drift = conditions.find(status.get("conditions"), conditions.DRIFT_DETECTED)
    if drifted and (previous_drift is None or previous_drift.get("status") != "True"):
        events.append(runtime.Event("DriftDetected", drift_condition[2], "Warning"))

    # --- performance ---------------------------------------------------------------------------
    performance = drift.performance(live.get("feedback"))
    dropped, performance_message = _performance_check(spec, performance, drift_settings.min_samples)
    if spec.performance is not None:
        new_status["performance"] = {k: float(v) for k, v in performance.items() if math.isfinite(v)} or None
    extra = [runtime.ConditionUpdate(conditions.DRIFT_DETECTED, *drift_condition)]
    if spec.performance is not None:
        extra.append(
            runtime.ConditionUpdate(
                PERFORMANCE_DEGRADED,
                "Unknown" if dropped is None else dropped,
                "InsufficientFeedback" if dropped is None else ("BelowTarget" if dropped else "WithinTarget"),
                performance_message,
            )
        )
        previous = conditions.find(status.get("conditions"), PERFORMANCE_DEGRADED)
        if dropped and (previous is None or previous.get("status") != "True"):
            events.append(runtime.Event(PERFORMANCE_DEGRADED, performance_message, "Warning"))

    # --- retraining ------------------------------------------------------------------------------
    ready_reason, ready_message = "Monitoring", f"checked {len(group)} replica(s) of version {served}"
    if problems:
        ready_message += f"; {len(problems)} did not answer: {'; '.join(problems)[:500]}"
    retrain = spec.retrain
    trigger: retraining.Trigger | None = "drift" if drifted else ("performance" if dropped else None)
    if trigger is not None and retrain is not None and retrain.enabled:
        why = drift_condition[2] if trigger == "drift" else performance_message
        decision = maybe_retrain(
            obj,
            ctx,
            spec=spec,
            trigger=trigger,
            message=why,
            served_version=int(served),
            served_mv_name=served_mv_name,
        )
        new_status.update(decision.status)
        ready_message += f"; {decision.message}"
        ready_reason = (
            decision.reason
        )  # RetrainCreated, CoolingDown, MaxConcurrent, RetrainSourceMissing, ...
        previous_ready = conditions.find(status.get("conditions"), conditions.READY) or {}
        already_announced = decision.reason in (
            "RetrainSourceMissing",
            "NameConflict",
            "CollectingTraffic",
            "TooFewLabelledRows",
            "ValidationFailed",
        )
        if not (already_announced and previous_ready.get("reason") == decision.reason):
            events += decision.events  # (else the condition keeps saying it)

    updated = runtime.progress_conditions(
        obj, ready=True, reason=ready_reason, message=ready_message, reconciling=False, extra=extra
    )
    if spec.performance is None:
        updated = conditions.remove(updated, PERFORMANCE_DEGRADED)
    new_status["conditions"] = updated
    new_status["phase"] = "Drifted" if drifted else ("Degraded" if dropped else "Monitoring")
    # None deletes a field (merge patch); leave out the ones that are absent anyway.
    new_status = {k: v for k, v in new_status.items() if v is not None or k in status}
    return runtime.Outcome(status=new_status, events=events, requeue_after=float(interval))


CONTROLLER = runtime.Registration(kinds.MODEL_MONITOR, reconcile, tuple(RBAC_RULES), on_delete=forget_monitor)
