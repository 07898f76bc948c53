"""Helpers of the end-to-end tier: apply the examples, follow conditions, check children, send traffic.

Everything goes through the real API server and the real node: objects are read with a plain JSON
client (`modelcycle.kubeclient.Kube`), Jobs complete because their pods really ran in containers.
A `ConditionLog` records every condition every object of a namespace ever reported (by watching
them), so a test can assert on transitions, not only on the final state.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from modelcycle import API_VERSION
from modelcycle.api import kinds
from modelcycle.kubeclient import Kube, WatchExpired
from modelcycle.local import platform, traffic
from modelcycle.workloads.safeload import load_model
from modelcycle.workloads.store import LocalStore
from support.cluster import condition

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
PLURALS = {k.kind: k.plural for k in kinds.ALL}
KINDS = tuple(k.kind for k in kinds.ALL)
REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")
FIELD_MANAGER = "modelcycle-e2e"
TRAINING_RUN_UID = "modelcycle.io/training-run-uid"
VERSION_LABEL = "modelcycle.io/version"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def path_of(kind: str, namespace: str, name: str | None = None) -> str:
    if kind in PLURALS:
        base = f"/apis/{API_VERSION}/namespaces/{_q(namespace)}/{PLURALS[kind]}"
    else:
        group_paths = {
            "Job": "/apis/batch/v1",
            "Deployment": "/apis/apps/v1",
            "ReplicaSet": "/apis/apps/v1",
            "Pod": "/api/v1",
            "Service": "/api/v1",
            "Event": "/api/v1",
            "HorizontalPodAutoscaler": "/apis/autoscaling/v2",
        }
        plural = {"HorizontalPodAutoscaler": "horizontalpodautoscalers"}.get(kind, kind.lower() + "s")
        base = f"{group_paths[kind]}/namespaces/{_q(namespace)}/{plural}"
    return f"{base}/{_q(name)}" if name else base


# --------------------------------------------------------------------------- examples


def example(name: str) -> dict[str, dict[str, Any]]:
    """The manifests of examples/<name>/, by kind."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((EXAMPLES / name).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def patched(doc: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `doc` with `changes` merged into its spec (nested dicts merge, the rest replace)."""
    result = copy.deepcopy(dict(doc))

    def merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    merge(result.setdefault("spec", {}), changes)
    return result


# --------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    """One test namespace on the e2e platform."""

    kube: Kube
    namespace: str
    artifacts: Path | None
    """The artifact store's directory on this host; None: find it from the claim's volume."""
    node_name: str | None
    """The node every pod must have run on; None: any node (a cluster with several)."""
    history: ConditionLog | None = None
    """Every condition state the namespace's objects reported (set by the e2e fixtures)."""
    container_prefix: str | None = None
    """The scheme of every pod's containerID (containerd:// on the local real node); None: not checked."""
    claim: str = "modelcycle-artifacts"

    def apply(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(dict(doc))
        body["metadata"]["namespace"] = self.namespace
        return self.kube.request(
            "PATCH",
            path_of(body["kind"], self.namespace, body["metadata"]["name"]),
            params={"fieldManager": FIELD_MANAGER, "force": True},
            body=body,
            content_type=platform.APPLY_PATCH,
        )

    def create(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(dict(doc))
        body["metadata"]["namespace"] = self.namespace
        return self.kube.create(path_of(body["kind"], self.namespace), body)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.get_or_none(path_of(kind, self.namespace, name))

    def must(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, name)
        assert obj is not None, f"{kind} {self.namespace}/{name} does not exist"
        return obj

    def list(self, kind: str, *, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else {}
        return list(self.kube.get(path_of(kind, self.namespace), **params).get("items") or [])

    def events(self) -> list[dict[str, Any]]:
        return self.list("Event")

    def wait(
        self,
        kind: str,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        *,
        what: str,
        timeout: float = 300,
        while_waiting: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] | None = None
        while True:
            obj = self.get(kind, name)
            if obj is not None and check(obj):
                return obj
            if while_waiting is not None:
                while_waiting()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {kind} {self.namespace}/{name} "
                    f"to be {what}; "
                    f"conditions: {describe(obj)}"
                )
            time.sleep(0.25)

    def wait_condition(
        self, kind: str, name: str, type_: str, status: str = "True", *, timeout: float = 300
    ) -> dict[str, Any]:
        return self.wait(
            kind,
            name,
            lambda o: condition(o, type_).get("status") == status,
            what=f"{type_}={status}",
            timeout=timeout,
        )

    # -- artifacts --------------------------------------------------------------------------------

    def artifact_root(self) -> Path:
        """Where the artifact store is on this host: the fixture's directory, or the local or
        hostPath volume bound to the claim when that path exists here."""
        if self.artifacts is not None:
            return self.artifacts
        pvc = self.kube.get(f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{self.claim}")
        volume = (pvc.get("spec") or {}).get("volumeName")
        pv = self.kube.get(f"/api/v1/persistentvolumes/{volume}") if volume else {}
        spec = pv.get("spec") or {}
        path = (spec.get("local") or {}).get("path") or (spec.get("hostPath") or {}).get("path")
        if not path or not Path(path).is_dir():
            raise AssertionError(
                f"the artifact checks read claim {self.namespace}/{self.claim} from this host, but its "
                f"volume {volume or '(unbound)'} is at {path or '(no local or hostPath path)'} on the "
                "node, not on this host; set MODELCYCLE_E2E_ARTIFACT_ROOT (a directory the node shares)"
            )
        self.artifacts = Path(path)
        return self.artifacts

    def artifact_path(self, uri: str) -> Path:
        root = self.artifact_root()
        key = LocalStore(root).key_for(uri)
        assert key is not None, f"{uri} is not in the local artifact store {root}"
        return root / key

    def load_model(self, mv: Mapping[str, Any]) -> Any:
        """The model straight from its artifact, through the safe loader (sha256 + trusted types)."""
        artifact = mv["spec"]["artifact"]
        return load_model(self.artifact_path(artifact["uri"]), expected_sha256=artifact["sha256"])

    def snapshot(self, ds: Mapping[str, Any]) -> pd.DataFrame:
        return pd.read_parquet(self.artifact_path(ds["status"]["snapshot"]["uri"]))


def is_true(obj: Mapping[str, Any] | None, type_: str) -> bool:
    return condition(obj, type_).get("status") == "True"


def describe(obj: Mapping[str, Any] | None) -> str:
    if obj is None:
        return "(object does not exist)"
    conds = (obj.get("status") or {}).get("conditions") or []
    return (
        "; ".join(f"{c['type']}={c['status']} {c.get('reason')}: {c.get('message')}" for c in conds)
        or "(none)"
    )


Reason = str | frozenset[str] | None


def assert_conditions(obj: Mapping[str, Any], expected: Mapping[str, tuple[str, Reason]]) -> None:
    """The object reports exactly these conditions, each with this status and reason (a set: one
    of them; None: any reason), all well-formed (CamelCase reason, a message, a transition time)
    and all about the current generation; status.observedGeneration is the current generation."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    generation = obj["metadata"].get("generation")
    status = obj.get("status") or {}
    assert status.get("observedGeneration") == generation, f"{kind} {name}: observedGeneration {status}"
    conds = {c["type"]: c for c in status.get("conditions") or []}
    assert set(conds) == set(expected), (
        f"{kind} {name}: conditions {describe(obj)}; expected {dict(expected)}"
    )
    for type_, (want_status, want_reason) in expected.items():
        c = conds[type_]
        assert c["status"] == want_status, (
            f"{kind} {name}: {type_} is {c['status']}, not {want_status}: {describe(obj)}"
        )
        if isinstance(want_reason, frozenset):
            assert c["reason"] in want_reason, (
                f"{kind} {name}: {type_} reason {c['reason']}, not in {want_reason}"
            )
        elif want_reason is not None:
            assert c["reason"] == want_reason, (
                f"{kind} {name}: {type_} reason {c['reason']}, not {want_reason}"
            )
        assert REASON.match(c["reason"]), f"{kind} {name}: {type_} reason {c['reason']!r} is not CamelCase"
        assert c.get("message"), f"{kind} {name}: {type_} has no message"
        assert c.get("lastTransitionTime"), f"{kind} {name}: {type_} has no lastTransitionTime"
        assert c.get("observedGeneration") == generation, f"{kind} {name}: {type_} observedGeneration {c}"


# What each kind reports when its work is done and went well.
DATASET_READY: Mapping[str, tuple[str, Reason]] = {
    "Ready": ("True", "SnapshotReady"),
    "Validated": ("True", "ValidationPassed"),
}
RUN_REGISTERED: Mapping[str, tuple[str, Reason]] = {
    "Ready": ("True", "ModelRegistered"),
    "Succeeded": ("True", "ModelRegistered"),
}
VERSION_VALIDATED: Mapping[str, tuple[str, Reason]] = {
    "Ready": ("True", "Validated"),
    "Validated": ("True", "GatesPassed"),
}
DEPLOYMENT_SERVING: Mapping[str, tuple[str, Reason]] = {
    "Ready": ("True", "Serving"),
    "Available": ("True", "MinimumReplicasAvailable"),
    "Degraded": ("False", "RolloutHealthy"),
}


def serves(version: int) -> Callable[[dict[str, Any]], bool]:
    """For `Cluster.wait` on a ModelDeployment: Ready, and serving `version`."""

    def check(obj: dict[str, Any]) -> bool:
        return is_true(obj, "Ready") and (obj.get("status") or {}).get("servedVersion") == version

    return check


def assert_rollout_lost_no_request(stats: traffic.TrafficStats) -> None:
    """Every request sent while version 1 was replaced by version 2 succeeded, and both answered."""
    assert not stats.failures, f"{len(stats.failures)} of {stats.total} requests failed: {stats.failures[:5]}"
    assert set(stats.versions()) == {"1", "2"}, stats.versions()


# --------------------------------------------------------------------------- condition history


@dataclass(frozen=True)
class Seen:
    at: float
    kind: str
    name: str
    type: str
    status: str
    reason: str


class ConditionLog:
    """Watches every ModelCycle kind in a namespace and records each distinct condition state."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.seen: list[Seen] = []
        self.phases: list[tuple[float, str, str, str]] = []
        self._last: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._last_phase: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(kind,), daemon=True, name=f"conditions {kind}")
            for kind in KINDS
        ]

    def start(self) -> ConditionLog:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _record(self, obj: Mapping[str, Any]) -> None:
        kind, name = obj.get("kind", ""), obj["metadata"]["name"]
        status = obj.get("status") or {}
        now = time.time()
        with self._lock:
            for c in status.get("conditions") or []:
                key = (kind, name, c["type"])
                state = (c.get("status", ""), c.get("reason", ""))
                if self._last.get(key) != state:
                    self._last[key] = state
                    self.seen.append(Seen(now, kind, name, c["type"], state[0], state[1]))
            phase = status.get("phase")
            if phase and self._last_phase.get((kind, name)) != phase:
                self._last_phase[(kind, name)] = phase
                self.phases.append((now, kind, name, phase))

    def _watch(self, kind: str) -> None:
        path = path_of(kind, self.namespace)
        while not self._stop.is_set():
            try:
                listed = self.kube.get(path)
                for item in listed.get("items") or []:
                    item.setdefault("kind", kind)
                    self._record(item)
                for event in self.kube.watch(
                    path, timeout_seconds=30, resourceVersion=listed["metadata"]["resourceVersion"]
                ):
                    if self._stop.is_set():
                        return
                    obj = event.get("object") or {}
                    if event.get("type") in ("ADDED", "MODIFIED") and obj.get("metadata", {}).get("name"):
                        self._record(obj)
            except WatchExpired:
                continue
            except Exception:
                if self._stop.wait(0.5):
                    return

    def states(
        self, kind: str, name: str | None = None, type_: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(type, status, reason) in the order they were first seen."""
        with self._lock:
            return [
                (s.type, s.status, s.reason)
                for s in self.seen
                if s.kind == kind and (name is None or s.name == name) and (type_ is None or s.type == type_)
            ]

    def saw(self, kind: str, name: str | None, type_: str, status: str, reason: str | None = None) -> bool:
        return any(
            t == type_ and s == status and (reason is None or r == reason)
            for t, s, r in self.states(kind, name)
        )

    def dump(self) -> str:
        with self._lock:
            return "\n".join(
                f"{time.strftime('%H:%M:%S', time.localtime(s.at))} {s.kind}/{s.name} "
                f"{s.type}={s.status} {s.reason}"
                for s in self.seen
            )


# --------------------------------------------------------------------------- children, duplicates


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def jobs_of(cluster: Cluster, owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [j for j in cluster.list("Job") if owned_by(j, owner)]


def pods_of_job(cluster: Cluster, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    return cluster.list("Pod", selector=f"{JOB_NAME_LABEL}={job['metadata']['name']}")


def versions_of_run(cluster: Cluster, run: Mapping[str, Any]) -> list[dict[str, Any]]:
    return cluster.list("ModelVersion", selector=f"{TRAINING_RUN_UID}={run['metadata']['uid']}")


def assert_one_job_and_one_version(cluster: Cluster, run_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Exactly one training Job for the run, that ran exactly one pod (no retry), and exactly one
    ModelVersion registered for it; returns (job, version)."""
    run = cluster.must("TrainingRun", run_name)
    jobs = jobs_of(cluster, run)
    assert len(jobs) == 1, (
        f"TrainingRun {run_name} has {len(jobs)} Jobs: {[j['metadata']['name'] for j in jobs]}"
    )
    job = jobs[0]
    job_status = job.get("status") or {}
    assert job_status.get("succeeded") == 1 and not job_status.get("failed"), f"Job status {job_status}"
    pods = pods_of_job(cluster, job)
    assert len(pods) <= 1, f"Job {job['metadata']['name']} ran {len(pods)} pods"
    versions = versions_of_run(cluster, run)
    assert len(versions) == 1, (
        f"TrainingRun {run_name} registered {[v['metadata']['name'] for v in versions]}"
    )
    return job, versions[0]


def assert_pods_ran_on_node(cluster: Cluster) -> None:
    """No simulated completion: every pod was bound to the node and ran in a container of its runtime."""
    for pod in cluster.list("Pod"):
        name = pod["metadata"]["name"]
        node = pod["spec"].get("nodeName")
        assert node and (cluster.node_name is None or node == cluster.node_name), f"pod {name} on {node}"
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        assert statuses, f"pod {name} has no container status"
        for s in statuses:
            container_id = str(s.get("containerID", ""))
            assert container_id, f"pod {name}: {s}"
            if cluster.container_prefix is not None:
                assert container_id.startswith(cluster.container_prefix), f"pod {name}: {s}"


# --------------------------------------------------------------------------- data


def features_and_rows(
    cluster: Cluster, ds: Mapping[str, Any], features: Sequence[str]
) -> tuple[list[list[float]], list[Any]]:
    frame = cluster.snapshot(ds)
    target = str(ds["spec"].get("target") or "target")
    return frame[list(features)].to_numpy(dtype=np.float64).tolist(), frame[target].tolist()


def local_predictions(model: Any, rows: Sequence[Sequence[float]], features: Sequence[str]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    if getattr(model, "feature_names_in_", None) is not None:
        return np.asarray(model.predict(pd.DataFrame(x, columns=list(features))))
    return np.asarray(model.predict(x))


def shifted(
    rows: Sequence[Sequence[float]], *, stds: float = 1.5, columns: Iterable[int] | None = None
) -> list[list[float]]:
    x = np.asarray(rows, dtype=np.float64)
    cols = list(columns) if columns is not None else list(range(x.shape[1]))
    out = x.copy()
    out[:, cols] += stds * x[:, cols].std(axis=0)
    return out.tolist()


@dataclass
class Timer:
    marks: dict[str, float] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> float:
        self.marks[name] = time.monotonic() - self.began
        return self.marks[name]


class ServedModels:
    """Each served version's model, loaded straight from its artifact, to check what pods answer."""

    def __init__(self, cluster: Cluster, model: str, features: Sequence[str], task: str) -> None:
        self.cluster = cluster
        self.model = model
        self.features = list(features)
        self.task = task
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> Any:
        with self._lock:
            if version not in self._models:
                mv = self.cluster.must("ModelVersion", f"{self.model}-v{version}")
                self._models[version] = self.cluster.load_model(mv)
            return self._models[version]

    def expected(self, version: str, rows: Sequence[Sequence[float]]) -> np.ndarray:
        return local_predictions(self.get(version), rows, self.features)

    def mismatch(self, version: str, rows: Sequence[Sequence[float]], served: Sequence[Any]) -> str | None:
        """None when `served` is what the version's artifact predicts for `rows`."""
        expected = self.expected(version, rows)
        got = np.asarray(served)
        if got.shape != expected.shape:
            return f"version {version}: {got.shape[0]} predictions for {expected.shape[0]} rows"
        if self.task == "regression":
            same = np.allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-9, atol=1e-9)
        else:
            same = all(str(a) == str(b) or float(a) == float(b) for a, b in zip(got, expected, strict=True))
        return (
            None
            if same
            else f"version {version}: served {got.tolist()} but its artifact predicts {expected.tolist()}"
        )
