"""The ModelMonitor's retraining decision: whether drift or a performance drop creates a TrainingRun.

`plan_retrain` is pure: given the monitor, the retraining runs it created before, the run that
produced the served version and the time, it returns a `RetrainDecision` - the reason and message
for the Ready condition, the run to create (if any), the status fields and the Events. At most one
run per `cooldownSeconds` (counted from status.lastRetrainTime and from the creation time of every
run labelled with this monitor, so it holds across operator restarts), never more than
`maxConcurrent` unfinished runs, and only a run that can be cloned from the served version's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelcycle.api import conditions, modelmonitor
from modelcycle.builders import meta, retraining
from modelcycle.planners import clock
from modelcycle.planners.outcomes import Event

RETRAIN_RUNS_LIMIT = 20


@dataclass(frozen=True)
class RetrainDecision:
    """What the monitor does about a wish to retrain."""

    reason: str
    """Ready's reason: RetrainCreated, CoolingDown, MaxConcurrent, RetrainSourceMissing, NameConflict."""
    message: str
    run: dict[str, Any] | None = None
    """The TrainingRun to create; None when none is created."""
    status: dict[str, Any] = field(default_factory=dict)
    """Status fields to set once the run is created (lastRetrainTime, retrainRuns)."""
    events: list[Event] = field(default_factory=list)


def run_finished(run: dict[str, Any]) -> bool:
    found = conditions.find((run.get("status") or {}).get("conditions"), conditions.SUCCEEDED)
    return found is not None and found.get("status") in ("True", "False")


def plan_retrain(
    monitor: dict[str, Any],
    *,
    spec: modelmonitor.ModelMonitorSpec,
    trigger: retraining.Trigger,
    message: str,
    served_version: int,
    served_mv_name: str | None,
    runs: list[dict[str, Any]],
    source_name: str | None,
    source: dict[str, Any] | None,
    now: float,
) -> RetrainDecision:
    """Create a retraining run when cooldown and concurrency allow.

    runs: the retraining runs this monitor created (by label); source_name: the training run named
    in the served ModelVersion's lineage, source: that run (None when it is gone).
    """
    retrain = spec.retrain or modelmonitor.RetrainSettings()
    status = monitor.get("status") or {}
    created = [
        t for t in (clock.epoch_of(r["metadata"].get("creationTimestamp")) for r in runs) if t is not None
    ]
    last = max(
        [t for t in [clock.epoch_of(status.get("lastRetrainTime")), *created] if t is not None], default=None
    )
    if last is not None and now - last < retrain.cooldown_seconds:
        wait = int(retrain.cooldown_seconds - (now - last))
        return RetrainDecision(
            "CoolingDown", f"retraining wanted ({trigger}) but in cooldown for {wait}s more"
        )
    active = [r["metadata"]["name"] for r in runs if not run_finished(r)]
    if len(active) >= retrain.max_concurrent:
        return RetrainDecision(
            "MaxConcurrent",
            f"retraining wanted ({trigger}) but {len(active)} run(s) still in progress: "
            f"{', '.join(sorted(active))}",
        )
    if source is None:
        why = (
            f"ModelVersion {served_mv_name} names no training run"
            if not source_name
            else f"its training run {source_name} no longer exists"
        )
        text = (
            f"retraining wanted ({trigger}) but the served version {served_version} cannot be cloned: {why}"
        )
        return RetrainDecision(
            "RetrainSourceMissing", text, events=[Event("RetrainSourceMissing", text, "Warning")]
        )
    manifest = retraining.retraining_run(
        monitor,
        source,
        retrain=retrain,
        trigger=trigger,
        now_epoch=now,
        message=message,
        served_version=served_version,
    )
    run_name = manifest["metadata"]["name"]
    history = [r for r in status.get("retrainRuns") or [] if r != run_name] + [run_name]
    text = f"created retraining run {run_name} ({trigger}): {message}"
    return RetrainDecision(
        "RetrainCreated",
        text,
        run=manifest,
        status={"lastRetrainTime": clock.rfc3339(now), "retrainRuns": history[-RETRAIN_RUNS_LIMIT:]},
        events=[Event("RetrainTriggered", text)],
    )


def on_name_taken(monitor: dict[str, Any], existing: dict[str, Any]) -> RetrainDecision:
    """The run's name was taken (409): ours from earlier in this cooldown window, or someone else's."""
    run_name = existing["metadata"]["name"]
    labels = existing["metadata"].get("labels") or {}
    if labels.get(meta.MONITOR) != meta.label_value(monitor["metadata"]["name"]):
        text = f"TrainingRun {run_name} exists and was not created by this monitor; delete or rename it"
        return RetrainDecision("NameConflict", text, events=[Event("NameConflict", text, "Warning")])
    return RetrainDecision(
        "RetrainCreated", f"retraining run {run_name} already exists for this cooldown window"
    )
