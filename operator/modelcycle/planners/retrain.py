"""The ModelMonitor's retraining decision: whether drift or a performance drop creates a TrainingRun.

`plan_retrain` is pure: given the monitor, the retraining runs it created before, the run that
produced the served version and the time, it returns a `RetrainDecision` - the reason and message
for the Ready condition, the run to create (if any), the status fields and the Events. At most one
run per `cooldownSeconds` (counted from status.lastRetrainTime and from the creation time of every
run labelled with this monitor, so it holds across operator restarts), never more than
`maxConcurrent` unfinished runs, and only a run that can be cloned from the served version's own.
"""

from __future__ import annotations

import copy
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
    dataset: dict[str, Any] | None = None
    """With `retrain.traffic`: the traffic Dataset the run trains on, created first; the run is
    created only once that Dataset is Ready (see `on_traffic_dataset`)."""
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
    base: dict[str, Any] | None = None,
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
    dataset = None
    if retrain.traffic is not None:
        if base is None:
            wanted = (manifest["spec"].get("datasetRef") or {}).get("name")
            text = f"retraining wanted ({trigger}) on traffic but its base Dataset {wanted} does not exist"
            return RetrainDecision(
                "RetrainSourceMissing", text, events=[Event("RetrainSourceMissing", text, "Warning")]
            )
        dataset = retraining.traffic_dataset(monitor, base, run_name=run_name, traffic=retrain.traffic)
        manifest["spec"]["datasetRef"] = {"name": dataset["metadata"]["name"]}
        manifest["metadata"].setdefault("annotations", {})[retraining.BASE_DATASET] = base["metadata"]["name"]
    return RetrainDecision(
        "RetrainCreated",
        text,
        run=manifest,
        dataset=dataset,
        status={"lastRetrainTime": clock.rfc3339(now), "retrainRuns": history[-RETRAIN_RUNS_LIMIT:]},
        events=[Event("RetrainTriggered", text)],
    )


def on_traffic_dataset(decision: RetrainDecision, dataset: dict[str, Any] | None) -> RetrainDecision:
    """What to do with a traffic retraining given its Dataset as the cluster has it (None: absent).

    Absent: create it (CollectingTraffic). Ready: create the run, its annotations naming both
    snapshots. Stalled: no run; the Dataset's reason (TooFewLabelledRows, ValidationFailed) says why.
    Otherwise its data Job is still running: wait."""
    assert decision.run is not None and decision.dataset is not None
    name = decision.dataset["metadata"]["name"]
    if dataset is None:
        text = f"collecting labelled traffic into Dataset {name}; the retraining run starts once it is Ready"
        return RetrainDecision(
            "CollectingTraffic", text, dataset=decision.dataset, events=[Event("TrafficDatasetCreated", text)]
        )
    found = (dataset.get("status") or {}).get("conditions")
    stalled = conditions.find(found, conditions.STALLED)
    if stalled is not None and stalled.get("status") == "True":
        reason = str(stalled.get("reason") or "TrafficDatasetStalled")
        text = (
            f"no retraining run: traffic Dataset {name} is stalled ({reason}): {stalled.get('message', '')}"
        )
        return RetrainDecision(reason, text[:1024], events=[Event(reason, text[:1024], "Warning")])
    ready = conditions.find(found, conditions.READY)
    snapshot = (dataset.get("status") or {}).get("snapshot") or {}
    if ready is None or ready.get("status") != "True" or not snapshot.get("sha256"):
        return RetrainDecision("CollectingTraffic", f"waiting for traffic Dataset {name} to be Ready")
    run = copy.deepcopy(decision.run)
    annotations = run["metadata"].setdefault("annotations", {})
    annotations[retraining.TRAFFIC_SNAPSHOT] = snapshot["sha256"]
    merged = ((dataset.get("status") or {}).get("traffic") or {}).get("mergedSnapshot")
    if merged:
        annotations[retraining.BASE_SNAPSHOT] = merged
    traffic = (dataset.get("status") or {}).get("traffic") or {}
    text = (
        f"{decision.message}; on Dataset {name} (snapshot {snapshot['sha256'][:12]}: "
        f"{traffic.get('joined', 0) + traffic.get('labelledWithFeatures', 0)} labelled traffic rows, "
        f"{traffic.get('mergedRows', 0)} base rows)"
    )
    return RetrainDecision(
        "RetrainCreated", text, run=run, status=decision.status, events=[Event("RetrainTriggered", text)]
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


def pending_traffic(
    decision: RetrainDecision, datasets: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> tuple[RetrainDecision, list[str]]:
    """Carry on with a traffic Dataset of an earlier cooldown window that has no run yet, instead of
    starting another (a window can end while a Dataset is collecting); and the names of the
    superseded ones to delete (stalled, never used by a run).

    datasets: this monitor's traffic Datasets (by label); runs: its retraining runs."""
    assert decision.run is not None and decision.dataset is not None
    current = decision.dataset["metadata"]["name"]
    used = {((r.get("spec") or {}).get("datasetRef") or {}).get("name") for r in runs}
    waiting = [d for d in datasets if d["metadata"]["name"] != current and d["metadata"]["name"] not in used]
    stale: list[str] = []
    for found in sorted(waiting, key=lambda d: str(d["metadata"].get("creationTimestamp", ""))):
        stalled = conditions.find((found.get("status") or {}).get("conditions"), conditions.STALLED)
        if stalled is not None and stalled.get("status") == "True":
            stale.append(found["metadata"]["name"])
            continue
        run_name = ((found["metadata"].get("annotations") or {}).get(retraining.RETRAINING_RUN)) or ""
        if not run_name:
            continue
        run = copy.deepcopy(decision.run)
        run["metadata"]["name"] = run_name
        run["spec"]["datasetRef"] = {"name": found["metadata"]["name"]}
        adopted = RetrainDecision(
            decision.reason,
            decision.message.replace(decision.run["metadata"]["name"], run_name),
            run=run,
            dataset={
                **decision.dataset,
                "metadata": {**decision.dataset["metadata"], "name": found["metadata"]["name"]},
            },
            status={
                **decision.status,
                "retrainRuns": [
                    r if r != decision.run["metadata"]["name"] else run_name
                    for r in decision.status.get("retrainRuns", [])
                ],
            },
            events=decision.events,
        )
        return adopted, stale
    return decision, stale
