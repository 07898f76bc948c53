"""`modelcycle local demo --scenario concept-drift`: the data flywheel, narrated.

1. Apply examples/concept-drift (the monitor sized for a demo) and its base data as a ConfigMap
   (concept_drift.config_map(): scikit-learn's generator, no download).
2. v1 trains, validates and serves with inference logging on.
3. Before the change: labelled requests (feedback by request id, to whichever replica) - v1's live
   accuracy. After the change (same inputs, one coefficient of the relation flipped): v1's
   accuracy falls; the monitor's feedback accuracy goes below its minimum.
4. The monitor builds a Dataset of the last labelled requests (joined offline from the logs) plus a
   little base data, then a retraining run on it; v2 is gated against v1 on that traffic's holdout
   and rolled out while labelled traffic keeps flowing (no request may fail).
5. After the rollout: v2's live accuracy on the changed relation. The summary prints v1 before and
   after the change and v2 after, against the targets (v1 falls >= 15 points; v2 within 5 points of
   v1 before). Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcycle.kubeclient import Kube, quote
from modelcycle.local import concept_drift as scenario
from modelcycle.local import demo, platform, traffic

EXAMPLE = "concept-drift"
BATCH = 10
BEFORE_ROWS = 400
AFTER_ROWS = 600
CHECK_ROWS = 600


def default_examples() -> Path:
    return Path(__file__).resolve().parents[3] / "examples" / EXAMPLE


@dataclass
class Labelled:
    """What a phase of labelled traffic saw: predictions and labels, per served version."""

    predictions: dict[str, list[int]] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    during_rollout: int = 0

    def add(self, version: str, predictions: list[Any], labels: list[int]) -> None:
        self.predictions.setdefault(version, []).extend(int(p) for p in predictions)
        self.labels.setdefault(version, []).extend(labels)

    def accuracy(self, version: str | None = None) -> float:
        versions = [version] if version is not None else list(self.labels)
        preds = [p for v in versions for p in self.predictions.get(v, [])]
        labels = [y for v in versions for y in self.labels.get(v, [])]
        return scenario.accuracy(preds, labels)

    def rows(self) -> int:
        return sum(len(v) for v in self.labels.values())


RUN = secrets.token_hex(3)
"""In every request id: ids stay unique across demo runs (the join keeps the latest record per id)."""


def send_labelled(
    client: Any, rows: Any, labels: Any, *, prefix: str, into: Labelled, batch: int = BATCH
) -> None:
    """Requests with ids, each followed by its labels (feedback) to the replica that answered."""
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch].tolist()
        truth = [int(v) for v in labels[start : start + batch]]
        request_id = f"{RUN}-{prefix}-{start // batch}"
        result = client.infer(chunk, request_id=request_id)
        into.requests += 1
        into.add(result.model_version, result.predictions, truth)
        client.feedback([{"id": request_id, "labels": truth}], endpoint=result.endpoint)


class LabelledTraffic:
    """Labelled requests under the changed relation, in a thread, until stopped: what keeps the
    flywheel turning while the monitor retrains and the new version rolls out."""

    def __init__(self, client: traffic.OipClient, *, interval: float = 0.05) -> None:
        self.client = client
        self.interval = interval
        self.seen = Labelled()
        self.rollout_began: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="labelled-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> Labelled:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.seen

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            x, y = scenario.sample(BATCH, 10_000 + n, changed=True)
            request_id = f"{RUN}-steady-{n}"
            began = time.time()
            try:
                result = self.client.infer(x.tolist(), request_id=request_id)
                self.client.feedback([{"id": request_id, "labels": y.tolist()}], endpoint=result.endpoint)
                with self._lock:
                    self.seen.requests += 1
                    self.seen.add(result.model_version, result.predictions, [int(v) for v in y])
            except Exception as exc:  # every failure is counted and reported, none is fatal here
                with self._lock:
                    self.seen.failures.append(f"{type(exc).__name__}: {exc}")
            if self.rollout_began is not None and began >= self.rollout_began:
                with self._lock:
                    self.seen.during_rollout += 1
            self._stop.wait(self.interval)


def apply_config_map(kube: Kube, namespace: str) -> None:
    body = scenario.config_map()
    body["metadata"]["namespace"] = namespace
    name = body["metadata"]["name"]
    platform.server_side_apply(
        kube,
        f"/api/v1/namespaces/{quote(namespace)}/configmaps/{quote(name)}",
        body,
        field_manager=demo.FIELD_MANAGER,
    )


def loop(
    args: argparse.Namespace,
    narrator: demo.Narrator,
    kube: Kube,
    follow: demo.Follower,
    layout: platform.PlatformLayout,
    state: platform.PlatformState,
    examples: Path,
) -> int:
    namespace = state.namespace
    timeout = follow.timeout
    if not args.keep:
        deleted = demo.reset_namespace(kube, namespace, layout.artifacts, timeout=timeout)
        if deleted:
            narrator.say(f"removed {deleted} object(s) of a previous demo run from {namespace}")
        # A previous run's logged traffic would join into this run's traffic Dataset.
        for stream in ("inference-logs", "feedback"):
            shutil.rmtree(layout.artifacts / stream / namespace, ignore_errors=True)

    documents = demo.demo_manifests(examples)
    apply_config_map(kube, namespace)
    for doc in documents:
        demo.apply(kube, namespace, doc)
    names = {d["kind"]: d["metadata"]["name"] for d in documents}
    narrator.done(
        "examples applied",
        f"{len(documents)} objects from {examples} and ConfigMap {scenario.CONFIG_MAP} "
        f"({scenario.BASE_ROWS} rows from scikit-learn's make_regression teacher)",
    )

    ds = follow.until(
        "Dataset", names["Dataset"], lambda o: demo.is_true(o, "Ready"), what="Ready", fail=demo.stalled
    )
    narrator.done("base data validated", f"{ds['status']['snapshot'].get('rows')} rows")
    trun = follow.until(
        "TrainingRun",
        names["TrainingRun"],
        lambda o: demo.is_true(o, "Succeeded"),
        what="Succeeded",
        fail=demo.stalled,
    )
    mv = follow.until(
        "ModelVersion",
        str(trun["status"]["modelVersion"]),
        lambda o: demo.is_true(o, "Validated"),
        what="Validated",
        fail=demo.rejected,
    )
    v1 = int(mv["spec"]["version"])
    mdep_name = names["ModelDeployment"]
    mdep = follow.until(
        "ModelDeployment",
        mdep_name,
        lambda o: demo.is_true(o, "Ready") and (o.get("status") or {}).get("servedVersion") == v1,
        what=f"Ready serving version {v1}",
        fail=demo.stalled,
        grace=60,
    )
    narrator.done("v1 serving", f"{mv['metadata']['name']} v{v1}, inference logging on")
    endpoints = traffic.ServiceEndpoints(kube, namespace, str(mdep["metadata"]["name"]))
    endpoints.start()
    try:
        endpoints.wait_for(lambda e: len(e) >= 1, timeout=timeout, what="ready endpoints")
        client = traffic.OipClient(endpoints, str(mdep["spec"]["model"]))
        return _flywheel(narrator, follow, client, names, v1, state, layout.artifacts)
    finally:
        endpoints.stop()


def _flywheel(
    narrator: demo.Narrator,
    follow: demo.Follower,
    client: traffic.OipClient,
    names: dict[str, str],
    v1: int,
    state: platform.PlatformState,
    artifacts: Path,
) -> int:
    before = Labelled()
    x, y = scenario.sample(BEFORE_ROWS, 1, changed=False)
    send_labelled(client, x, y, prefix="before", into=before)
    v1_before = before.accuracy()
    narrator.done("v1 before the change", f"live accuracy {v1_before:.3f} on {before.rows()} labelled rows")

    after = Labelled()
    x, y = scenario.sample(AFTER_ROWS, 2, changed=True)
    send_labelled(client, x, y, prefix="after", into=after)
    v1_after = after.accuracy()
    narrator.done(
        "the relation changed",
        f"same inputs, one coefficient flipped: v1 live accuracy {v1_after:.3f} on {after.rows()} rows",
    )
    cycle_began = narrator.elapsed()
    steady = LabelledTraffic(client)
    steady.start()
    try:
        mon_name = names["ModelMonitor"]
        mon = follow.until(
            "ModelMonitor",
            mon_name,
            lambda o: demo.is_true(o, "PerformanceDegraded"),
            what="PerformanceDegraded",
            fail=demo.stalled,
            grace=60,
        )
        performance = (mon.get("status") or {}).get("performance") or {}
        narrator.done(
            "performance drop detected",
            f"{mon_name}: feedback accuracy {performance.get('accuracy', float('nan')):.3f} "
            f"on {int(performance.get('count', 0))} labelled rows (input drift: "
            f"{(demo.conditions_of(mon).get('DriftDetected') or {}).get('status', 'Unknown')})",
        )
        mon = follow.until(
            "ModelMonitor",
            mon_name,
            lambda o: bool((o.get("status") or {}).get("retrainRuns")),
            what="retraining on traffic",
            fail=demo.stalled,
            grace=60,
        )
        run_name = str(mon["status"]["retrainRuns"][-1])
        trun = follow.until(
            "TrainingRun",
            run_name,
            lambda o: demo.is_true(o, "Succeeded"),
            what="Succeeded",
            fail=demo.stalled,
        )
        dataset_name = str(trun["spec"]["datasetRef"]["name"])
        dataset = follow.get("Dataset", dataset_name) or {}
        stats = (dataset.get("status") or {}).get("traffic") or {}
        narrator.done(
            "retrained on recent traffic",
            f"{run_name} on Dataset {dataset_name}: {stats.get('joined')} joined traffic rows "
            f"({stats.get('logged')} logged, {stats.get('unmatchedLabels')} unmatched labels) + "
            f"{stats.get('mergedRows')} base rows",
        )
        new_mv = follow.until(
            "ModelVersion",
            str(trun["status"]["modelVersion"]),
            lambda o: demo.is_true(o, "Validated"),
            what="Validated",
            fail=demo.rejected,
        )
        v2 = int(new_mv["spec"]["version"])
        holdout = (new_mv.get("status") or {}).get("holdout") or {}
        production = (new_mv.get("status") or {}).get("production") or {}
        narrator.done(
            "v2 validated",
            f"v{v2} accuracy {production.get('candidate', float('nan')):.3f} vs v{v1} "
            f"{production.get('production', float('nan')):.3f} on the same {holdout.get('rows')} "
            f"holdout rows of Dataset {holdout.get('dataset')} "
            f"(snapshot {str(holdout.get('datasetSha256'))[:12]})",
        )
        steady.rollout_began = time.time()
        follow.until(
            "ModelDeployment",
            names["ModelDeployment"],
            lambda o: demo.is_true(o, "Ready") and (o.get("status") or {}).get("servedVersion") == v2,
            what=f"Ready serving version {v2}",
            fail=demo.degraded,
        )
        time.sleep(1.0)
    finally:
        seen = steady.stop()
    if seen.failures:
        raise demo.DemoError(
            f"{len(seen.failures)} of {seen.requests + len(seen.failures)} labelled requests failed while "
            f"retraining and rolling out: {'; '.join(sorted(set(seen.failures))[:3])}"
        )
    narrator.done(
        "v2 rolled out",
        f"{seen.requests} labelled requests during retraining and rollout ({seen.during_rollout} during the "
        "rollout), 0 failed",
    )
    narrator.cycle = narrator.elapsed() - cycle_began

    check = Labelled()
    x, y = scenario.sample(CHECK_ROWS, 3, changed=True)
    send_labelled(client, x, y, prefix="check", into=check)
    if set(check.labels) != {str(v2)}:
        raise demo.DemoError(
            f"after the rollout, versions {sorted(check.labels)} answered, expected only v{v2}"
        )
    v2_after = check.accuracy()
    narrator.done("v2 after the change", f"live accuracy {v2_after:.3f} on {check.rows()} labelled rows")

    print(f"\nThe flywheel turned in {narrator.elapsed():.1f}s:\n", flush=True)
    print(narrator.table())
    print(
        f"\n  live accuracy (feedback):  v{v1} before the change {v1_before:.3f}   "
        f"v{v1} after {v1_after:.3f}   v{v2} after {v2_after:.3f}"
    )
    lines = scenario.verdict(v1_before, v1_after, v2_after)
    for line in lines:
        print(f"  {line}")
    if narrator.cycle is not None:
        print(f"  performance drop → traffic Dataset → retraining → rollout: {narrator.cycle:.1f}s")
    print(
        f"\n  export KUBECONFIG={state.kubeconfig}\n"
        f"  kubectl get dset -n {state.namespace} -o yaml    # status.traffic: the join statistics\n"
        f"  kubectl get mver -n {state.namespace} -o yaml    # status.holdout: which holdout gated v{v2}\n"
        f"  ls {artifacts / 'inference-logs' / state.namespace}   # the logged segments",
        flush=True,
    )
    return 0 if all(line.endswith(": met") for line in lines) else 1
