"""`modelcycle local demo`: the whole loop on the local platform, narrated as it happens.

1. Make sure the platform runs (`local up`, idempotent) and start from a clean namespace.
2. Apply the iris example set (examples/iris), with a demo-sized monitor: the copy that is applied
   (written next to the platform's state) checks every 10 s instead of every minute and
   retrains at most once per 15 minutes instead of once an hour. Nothing else changes.
3. Follow each object's conditions and report: the Dataset validated (rows, sha256), the model
   trained (metrics), its version validated, deployed (URL, pods); predictions served (real OIP
   v2 requests to the serving pods, compared with the model loaded directly from the artifact
   with the safe loader); drift injected (shifted traffic), detected (per-feature scores);
   retraining started; the new version validated and rolled out while traffic keeps flowing
   (every request during the rollout must succeed).
4. A summary table, then the commands to explore further.

A step that does not finish in time ends the demo with exit code 1 and names the object and its
conditions.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelcycle import API_VERSION
from modelcycle.api import kinds
from modelcycle.errors import UserError
from modelcycle.kubeclient import Kube, NotFound, quote
from modelcycle.local import controlplane as cp
from modelcycle.local import platform, traffic

EXAMPLE = "iris"
MONITOR_INTERVAL_SECONDS = 10
MONITOR_COOLDOWN_SECONDS = 900
FIELD_MANAGER = "modelcycle-demo"
# Deleted in this order on a fresh start: the monitor first, so that it creates nothing meanwhile.
RESET_ORDER = ("ModelMonitor", "ModelDeployment", "TrainingRun", "ModelVersion", "Dataset")
SHIFT_STDS = 1.5
DRIFT_ROWS = 400
BATCH = 10


class DemoError(UserError):
    exit_code = 1


def default_examples() -> Path:
    return Path(__file__).resolve().parents[3] / "examples" / EXAMPLE


PLURALS: dict[str, str] = {k.kind: k.plural for k in kinds.ALL}


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    base = f"/apis/{API_VERSION}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
    return f"{base}/{quote(name)}" if name else base


def conditions_of(obj: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def is_true(obj: Mapping[str, Any] | None, type_: str) -> bool:
    return conditions_of(obj).get(type_, {}).get("status") == "True"


def describe_conditions(obj: Mapping[str, Any] | None) -> str:
    conds = conditions_of(obj)
    if not conds:
        return "no conditions yet"
    return "; ".join(
        f"{t}={c.get('status')} ({c.get('reason')}: {c.get('message')})" for t, c in conds.items()
    )


# --------------------------------------------------------------------------- the manifests


def demo_manifests(examples: Path) -> list[dict[str, Any]]:
    """The example set, with the monitor's interval and cooldown sized for a demo."""
    documents: list[dict[str, Any]] = []
    for path in sorted(examples.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    if not documents:
        raise DemoError(f"no manifests in {examples}")
    patched = copy.deepcopy(documents)
    for doc in patched:
        if doc.get("kind") == "ModelMonitor":
            spec = doc.setdefault("spec", {})
            spec["intervalSeconds"] = MONITOR_INTERVAL_SECONDS
            spec.setdefault("retrain", {})["cooldownSeconds"] = MONITOR_COOLDOWN_SECONDS
    return patched


def write_copy(documents: Sequence[Mapping[str, Any]], directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for doc in documents:
        name = f"{doc['kind'].lower()}.yaml"
        (directory / name).write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    return directory


def apply(kube: Kube, namespace: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(dict(doc))
    body["metadata"]["namespace"] = namespace
    return platform.server_side_apply(
        kube,
        object_path(body["kind"], namespace, body["metadata"]["name"]),
        body,
        field_manager=FIELD_MANAGER,
    )


def reset_namespace(kube: Kube, namespace: str, artifacts: Path, *, timeout: float) -> int:
    """Delete every ModelCycle object of a previous run, wait until their pods are gone."""
    deleted = 0
    for kind in RESET_ORDER:
        for item in kube.get(object_path(kind, namespace)).get("items") or []:
            with contextlib.suppress(NotFound):
                kube.delete(
                    object_path(kind, namespace, item["metadata"]["name"]),
                    {"propagationPolicy": "Background"},
                )
                deleted += 1

    def gone() -> bool:
        left = sum(len(kube.get(object_path(k, namespace)).get("items") or []) for k in RESET_ORDER)
        pods = kube.get(f"/api/v1/namespaces/{quote(namespace)}/pods").get("items") or []
        jobs = kube.get(f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs").get("items") or []
        return left == 0 and not pods and not jobs

    platform.wait_until(
        gone, timeout=timeout, what=f"the previous demo's objects in {namespace} to be deleted"
    )
    # Registered models of the previous run: the new run numbers its versions from 1 again.
    shutil.rmtree(artifacts / "models" / namespace, ignore_errors=True)
    return deleted


# --------------------------------------------------------------------------- narration


@dataclass
class StepResult:
    step: str
    result: str
    seconds: float


@dataclass
class Narrator:
    began: float = field(default_factory=time.monotonic)
    steps: list[StepResult] = field(default_factory=list)
    cycle: float | None = None
    _step_began: float = field(default_factory=time.monotonic)
    out: Any = sys.stdout

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def say(self, message: str) -> None:
        print(f"  [{self.elapsed():6.1f}s]   {message}", file=self.out, flush=True)

    def start(self) -> None:
        self._step_began = time.monotonic()

    def done(self, step: str, result: str) -> None:
        seconds = time.monotonic() - self._step_began
        self.steps.append(StepResult(step, result, seconds))
        print(f"  [{self.elapsed():6.1f}s] ✔ {step}: {result}", file=self.out, flush=True)
        self._step_began = time.monotonic()

    def table(self) -> str:
        width = max(len(s.step) for s in self.steps)
        lines = [f"  {'step':<{width}}  {'seconds':>7}  result", f"  {'-' * width}  {'-' * 7}  {'-' * 40}"]
        lines += [f"  {s.step:<{width}}  {s.seconds:7.1f}  {s.result}" for s in self.steps]
        lines.append(f"  {'total':<{width}}  {sum(s.seconds for s in self.steps):7.1f}")
        return "\n".join(lines)


class Follower:
    """Polls one object until `done(obj)`; narrates condition changes; fails clearly on timeout."""

    def __init__(self, kube: Kube, namespace: str, narrator: Narrator, *, timeout: float) -> None:
        self.kube = kube
        self.namespace = namespace
        self.narrator = narrator
        self.timeout = timeout

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.get_or_none(object_path(kind, self.namespace, name))

    def until(
        self,
        kind: str,
        name: str,
        done: Callable[[dict[str, Any]], bool],
        *,
        what: str,
        fail: Callable[[dict[str, Any]], str | None] | None = None,
        grace: float = 0.0,
        timeout: float | None = None,
        tick: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until done(obj). `fail(obj)` names a failure; it ends the wait once it has held
        for `grace` seconds (some Stalled reasons clear by themselves, such as a deployment
        waiting for its first validated version)."""
        limit = timeout or self.timeout
        deadline = time.monotonic() + limit
        seen: str | None = None
        obj: dict[str, Any] | None = None
        failing_since: float | None = None
        while True:
            obj = self.get(kind, name)
            if obj is not None:
                if done(obj):
                    return obj
                problem = fail(obj) if fail else None
                if not problem:
                    failing_since = None
                elif failing_since is None:
                    failing_since = time.monotonic()
                if problem and failing_since is not None and time.monotonic() - failing_since >= grace:
                    raise DemoError(
                        f"{kind} {self.namespace}/{name}: {problem}. Conditions: {describe_conditions(obj)}"
                    )
                ready = conditions_of(obj).get("Ready") or {}
                summary = (
                    f"{ready.get('reason')}: {ready.get('message')}" if ready else "waiting for the operator"
                )
                if summary != seen:
                    self.narrator.say(f"{kind} {name}: {summary}")
                    seen = summary
            if tick is not None:
                tick()
            if time.monotonic() > deadline:
                state = describe_conditions(obj) if obj is not None else "the object does not exist"
                raise DemoError(
                    f"timed out after {limit:.0f}s waiting for {kind} {self.namespace}/{name} to be {what}. "
                    f"Conditions: {state}. See `kubectl describe {kind.lower()} {name} -n {self.namespace}` "
                    f"and the logs under {platform.default_root() / 'logs'}"
                )
            time.sleep(0.5)


def stalled(obj: Mapping[str, Any]) -> str | None:
    cond = conditions_of(obj).get("Stalled") or {}
    if cond.get("status") == "True":
        return f"Stalled ({cond.get('reason')}: {cond.get('message')})"
    return None


def rejected(obj: Mapping[str, Any]) -> str | None:
    """A ModelVersion that failed its checks or gates: Validated=False and Stalled=True."""
    cond = conditions_of(obj).get("Validated") or {}
    if cond.get("status") == "False" and is_true(obj, "Stalled"):
        return f"rejected ({cond.get('reason')}: {cond.get('message')})"
    return stalled(obj)


def degraded(obj: Mapping[str, Any]) -> str | None:
    """A ModelDeployment whose rollout was rolled back."""
    cond = conditions_of(obj).get("Degraded") or {}
    if cond.get("status") == "True":
        return f"rollout rolled back ({cond.get('reason')}: {cond.get('message')})"
    return None


def fmt_metrics(metrics: Mapping[str, Any] | None, limit: int = 4) -> str:
    items = [(k, v) for k, v in (metrics or {}).items() if isinstance(v, int | float)]
    return ", ".join(f"{k} {v:.3f}" for k, v in items[:limit]) or "no metrics"


# --------------------------------------------------------------------------- data and models


@dataclass
class LocalArtifacts:
    """The artifact PersistentVolume's directory, read directly from this machine."""

    root: Path

    def path(self, uri: str) -> Path:
        from modelcycle.workloads.store import LocalStore

        key = LocalStore(self.root).key_for(uri)
        if key is None:
            raise DemoError(f"{uri} is not in the local artifact store {self.root}")
        return self.root / key

    def load_model(self, mv: Mapping[str, Any]) -> Any:
        """The served model, loaded the safe way: sha256 first, then skops with a trusted-type list."""
        from modelcycle.workloads.safeload import load_model

        artifact = mv["spec"]["artifact"]
        return load_model(self.path(artifact["uri"]), expected_sha256=artifact["sha256"])

    def dataset(self, ds: Mapping[str, Any]) -> Any:
        import pandas as pd

        return pd.read_parquet(self.path(ds["status"]["snapshot"]["uri"]))


def feature_names(metadata: Mapping[str, Any]) -> list[str]:
    return [f["name"] for f in (metadata.get("parameters") or {}).get("features") or []]


def predict_locally(model: Any, rows: Sequence[Sequence[float]], features: Sequence[str]) -> list[Any]:
    import numpy as np
    import pandas as pd

    x = np.asarray(rows, dtype=np.float64)
    if getattr(model, "feature_names_in_", None) is not None:
        return list(model.predict(pd.DataFrame(x, columns=list(features))))
    return list(model.predict(x))


def same_predictions(served: Sequence[Any], local: Sequence[Any], *, task: str) -> bool:
    if len(served) != len(local):
        return False
    if task == "regression":
        return all(
            abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
            for a, b in zip(served, local, strict=True)
        )
    return all(str(a) == str(b) or _num_equal(a, b) for a, b in zip(served, local, strict=True))


def _num_equal(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- the demo


def ensure_platform(root: Path | None, narrator: Narrator, *, timeout: float) -> platform.PlatformState:
    state, reports = platform.status(root)
    if state is not None and all(r.healthy for r in reports):
        narrator.say(f"platform already up (control plane {state.server}, node {state.node_name})")
        return state
    print("bringing the platform up first (`modelcycle local up`):", flush=True)

    def step(name: str, message: str, seconds: float) -> None:
        print(f"    {name + ' ':.<18} {message} ({seconds:.1f}s)", flush=True)

    started = platform.up(root, platform.PlatformOptions(timeout=timeout), report=step)
    return started.state()


def run(args: argparse.Namespace) -> int:
    narrator = Narrator()
    try:
        return _run(args, narrator)
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        if narrator.steps:
            print("\nsteps done before the failure:\n" + narrator.table(), file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, narrator: Narrator) -> int:
    root = args.root
    timeout = float(args.timeout)
    examples = Path(args.examples) if getattr(args, "examples", None) else default_examples()
    if not examples.is_dir():
        raise DemoError(
            f"examples not found at {examples}; pass --examples DIR (run from a ModelCycle checkout)"
        )
    print(
        "ModelCycle demo: data → train → validate → deploy → monitor → retrain, on this machine", flush=True
    )
    narrator.start()
    state = ensure_platform(root, narrator, timeout=timeout)
    narrator.done("platform up", f"control plane, node {state.node_name}, operator")
    layout = platform.PlatformLayout(Path(state.root))
    namespace = state.namespace
    kube = Kube.from_kubeconfig(Path(state.kubeconfig), user_agent="modelcycle-demo")
    artifacts = LocalArtifacts(layout.artifacts)
    follow = Follower(kube, namespace, narrator, timeout=timeout)
    try:
        return _loop(args, narrator, kube, follow, artifacts, layout, state, examples)
    finally:
        kube.close()


def _loop(
    args: argparse.Namespace,
    narrator: Narrator,
    kube: Kube,
    follow: Follower,
    artifacts: LocalArtifacts,
    layout: platform.PlatformLayout,
    state: platform.PlatformState,
    examples: Path,
) -> int:
    namespace = state.namespace
    timeout = follow.timeout
    if not args.keep:
        deleted = reset_namespace(kube, namespace, layout.artifacts, timeout=timeout)
        if deleted:
            narrator.say(f"removed {deleted} object(s) of a previous demo run from {namespace}")

    # --- apply -----------------------------------------------------------------------------------
    documents = demo_manifests(examples)
    copy_dir = write_copy(documents, layout.root / "demo" / EXAMPLE)
    for doc in documents:
        apply(kube, namespace, doc)
    names = {d["kind"]: d["metadata"]["name"] for d in documents}
    narrator.done(
        "examples applied",
        f"{len(documents)} objects from {examples} (monitor every {MONITOR_INTERVAL_SECONDS}s, "
        f"cooldown {MONITOR_COOLDOWN_SECONDS}s; applied copy in {copy_dir})",
    )

    # --- dataset -----------------------------------------------------------------------------------
    ds = follow.until("Dataset", names["Dataset"], lambda o: is_true(o, "Ready"), what="Ready", fail=stalled)
    snap = ds["status"]["snapshot"]
    task = str(snap.get("task") or "classification")
    narrator.done(
        "dataset validated",
        f"{snap.get('rows')} rows, {snap.get('columns')} columns, "
        f"sha256 {str(snap.get('sha256'))[:12]}..., {task}",
    )

    # --- training --------------------------------------------------------------------------------
    run_name = names["TrainingRun"]
    trun = follow.until(
        "TrainingRun", run_name, lambda o: is_true(o, "Succeeded"), what="Succeeded", fail=stalled
    )
    mv_name = trun["status"]["modelVersion"]
    narrator.done("model trained", f"{run_name} → {mv_name}: {fmt_metrics(trun['status'].get('metrics'))}")

    mv = follow.until(
        "ModelVersion", mv_name, lambda o: is_true(o, "Validated"), what="Validated", fail=rejected
    )
    narrator.done(
        "version validated", f"{mv_name} v{mv['spec']['version']}: {fmt_metrics(mv['status'].get('metrics'))}"
    )

    # --- deployment ------------------------------------------------------------------------------------
    mdep_name = names["ModelDeployment"]
    version = int(mv["spec"]["version"])
    mdep = follow.until(
        "ModelDeployment",
        mdep_name,
        lambda o: is_true(o, "Ready") and (o.get("status") or {}).get("servedVersion") == version,
        what=f"Ready serving version {version}",
        fail=stalled,
        grace=60,
    )
    model = str(mdep["spec"]["model"])
    endpoints = traffic.ServiceEndpoints(kube, namespace, str(mdep["metadata"]["name"]))
    endpoints.start()
    try:
        ready = endpoints.wait_for(lambda e: len(e) >= 1, timeout=timeout, what="ready endpoints")
        narrator.done(
            "deployed",
            f"Service {mdep['status'].get('url')}; {len(ready)} ready pod(s) at "
            + ", ".join(f"{e.ip}:{e.port}" for e in ready)
            + "; the demo sends requests to the ready pods, round-robin, to know which one answered",
        )
        return _serve_and_drift(
            args, narrator, kube, follow, artifacts, state, names, endpoints, model, mv, ds, task
        )
    finally:
        endpoints.stop()


def _serve_and_drift(
    args: argparse.Namespace,
    narrator: Narrator,
    kube: Kube,
    follow: Follower,
    artifacts: LocalArtifacts,
    state: platform.PlatformState,
    names: Mapping[str, str],
    endpoints: traffic.ServiceEndpoints,
    model: str,
    mv: dict[str, Any],
    ds: dict[str, Any],
    task: str,
) -> int:
    import numpy as np

    client = traffic.OipClient(endpoints, model)
    metadata = client.get("")
    features = feature_names(metadata)
    frame = artifacts.dataset(ds)
    target = str(ds["spec"].get("target") or "target")
    rows = frame[features].to_numpy(dtype=np.float64).tolist()
    labels = frame[target].tolist()

    # --- predictions ------------------------------------------------------------------------------
    local_model = artifacts.load_model(mv)
    served: list[Any] = []
    pods: set[str] = set()
    first_prediction: float | None = None
    for batch in traffic.chunks(rows, BATCH):
        result = client.infer(batch)
        first_prediction = first_prediction or narrator.elapsed()
        served += result.predictions
        pods.add(result.endpoint.pod)
    local = predict_locally(local_model, rows, features)
    if not same_predictions(served, local, task=task):
        mismatches = sum(1 for a, b in zip(served, local, strict=True) if str(a) != str(b))
        raise DemoError(
            f"the served predictions differ from the model loaded from its artifact ({mismatches} rows)"
        )
    if task == "regression":
        errors = np.asarray(served, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
        quality = f"rmse {float(np.sqrt(np.mean(errors**2))):.2f}"
    else:
        hits = [str(a) == str(b) or _num_equal(a, b) for a, b in zip(served, labels, strict=True)]
        quality = f"accuracy {float(np.mean(hits)):.3f}"
    narrator.done(
        "predictions served",
        f"{len(rows)} rows over {len(pods)} pod(s), identical to {mv['metadata']['name']} "
        f"loaded from its artifact; {quality}; first answer {first_prediction:.1f}s into the demo",
    )

    # --- drift ----------------------------------------------------------------------------------------
    cycle_began = narrator.elapsed()
    array = np.asarray(rows, dtype=np.float64)
    shifted = (array + SHIFT_STDS * array.std(axis=0)).tolist()
    sent = 0
    while sent < DRIFT_ROWS:
        batch = [shifted[(sent + i) % len(shifted)] for i in range(BATCH)]
        client.infer(batch)
        sent += BATCH
    narrator.done(
        "drift injected", f"{sent} rows with every feature shifted by {SHIFT_STDS} standard deviations"
    )

    mon_name = names["ModelMonitor"]
    mon = follow.until(
        "ModelMonitor",
        mon_name,
        lambda o: is_true(o, "DriftDetected"),
        what="DriftDetected",
        fail=stalled,
        grace=60,
    )
    scores = ", ".join(
        f"{f['name']} {f.get('score', 0):.2f}{'*' if f.get('drifted') else ''}"
        for f in mon["status"].get("features") or []
    )
    window = mon["status"].get("windowSize")
    narrator.done("drift detected", f"{mon_name}: window {window} rows; scores {scores} (* drifted)")

    # --- retraining ------------------------------------------------------------------------------
    mon = follow.until(
        "ModelMonitor",
        mon_name,
        lambda o: bool((o.get("status") or {}).get("retrainRuns")),
        what="retraining",
        fail=stalled,
        grace=60,
    )
    retrain = str(mon["status"]["retrainRuns"][-1])
    narrator.done("retraining started", f"TrainingRun {retrain} (created by {mon_name})")

    # Steady traffic from here on: the rollout must not lose a single request.
    def steady_rows(n: int) -> list[list[float]]:
        return [rows[(n * 3 + i) % len(rows)] for i in range(3)]

    load = traffic.Traffic(client, steady_rows, interval=0.02)
    load.start()
    try:
        trun = follow.until(
            "TrainingRun", retrain, lambda o: is_true(o, "Succeeded"), what="Succeeded", fail=stalled
        )
        new_mv_name = str(trun["status"]["modelVersion"])
        new_mv = follow.until(
            "ModelVersion", new_mv_name, lambda o: is_true(o, "Validated"), what="Validated", fail=rejected
        )
        new_version = int(new_mv["spec"]["version"])
        production = (new_mv.get("status") or {}).get("production") or {}
        against = (
            f"; {production.get('metric')} {production.get('candidate', 0):.3f} "
            f"vs production {production.get('production', 0):.3f}"
            if production
            else ""
        )
        narrator.done(
            "new version validated",
            f"{new_mv_name} v{new_version}: {fmt_metrics(new_mv['status'].get('metrics'))}{against}",
        )
        rollout_began = time.time()
        follow.until(
            "ModelDeployment",
            names["ModelDeployment"],
            lambda o: is_true(o, "Ready") and (o.get("status") or {}).get("servedVersion") == new_version,
            what=f"Ready serving version {new_version}",
            fail=degraded,
        )
        time.sleep(1.0)
    finally:
        stats = load.stop()
    during = [o for o in stats.outcomes if o.at >= rollout_began]
    failures = stats.failures
    versions = ", ".join(f"v{v}: {n}" for v, n in sorted(stats.versions().items()))
    if failures:
        examples_ = "; ".join(sorted({str(f.error) for f in failures})[:3])
        raise DemoError(
            f"{len(failures)} of {stats.total} requests failed while retraining and rolling out: {examples_}"
        )
    narrator.done(
        "rolled out",
        f"version {new_version} serves; {stats.total} requests during retraining and rollout "
        f"({len(during)} during the rollout), 0 failed ({versions})",
    )
    narrator.cycle = narrator.elapsed() - cycle_began

    # The new version's pods answer like its artifact too.
    new_local = predict_locally(artifacts.load_model(new_mv), rows[:30], features)
    check = client.infer(rows[:30])
    if check.model_version != str(new_version) or not same_predictions(
        check.predictions, new_local, task=task
    ):
        raise DemoError(
            f"after the rollout, {check.endpoint.pod} answered as version {check.model_version} "
            "with other predictions"
        )

    for doc_kind, doc_name in names.items():
        if doc_kind != "ModelVersion":
            continue
        imported = follow.get("ModelVersion", doc_name)
        validated = conditions_of(imported).get("Validated") or {}
        narrator.say(
            f"also applied: ModelVersion {doc_name} (a model registered from outside): "
            f"Validated={validated.get('status', 'Unknown')} ({validated.get('reason', 'pending')}); "
            "expected without its artifact file, see examples/README.md"
        )
    _finish(narrator, state, state.namespace, names)
    return 0


def _finish(
    narrator: Narrator, state: platform.PlatformState, namespace: str, names: Mapping[str, str]
) -> None:
    print(f"\nThe loop ran end to end in {narrator.elapsed():.1f}s:\n", flush=True)
    print(narrator.table())
    if narrator.cycle is not None:
        print(f"\n  drift → retraining → rollout cycle: {narrator.cycle:.1f}s")
    try:
        kubectl = str(cp.find_binary(cp.KUBECTL).parent)
    except UserError:
        kubectl = str(cp.default_bin_dir())
    root = Path(state.root)
    root_flag = "" if root == platform.default_root().expanduser().resolve() else f" --root {root}"
    node_logs = (
        "kubectl logs -n modelcycle-system deploy/modelcycle-operator   # the operator's log\n"
        f"  ls {root / 'logs'}    # containerd, kubelet and kube-proxy logs"
    )
    print(
        f"""
Explore further:

  export KUBECONFIG={state.kubeconfig}
  export PATH={kubectl}:$PATH
  kubectl get modelcycle -n {namespace}                 # every object, Ready and phase
  kubectl get mver -n {namespace} -o wide               # versions, sha256, the run that made them
  kubectl describe mmon {names.get("ModelMonitor", "iris")} -n {namespace}   # drift scores, retraining runs
  kubectl get mdep {names.get("ModelDeployment", "iris")} -n {namespace} -o jsonpath='{{.status.history}}'
  kubectl get events -n {namespace} --sort-by=.lastTimestamp
  kubectl logs -n {namespace} deploy/{names.get("ModelDeployment", "iris")}   # a serving pod's log
  {node_logs}
  modelcycle local status{root_flag}    # what runs, and its memory
  modelcycle local down{root_flag}      # stop everything (add --purge to delete the state)
""",
        flush=True,
    )
