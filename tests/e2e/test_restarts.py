"""Restart drills on the real node: delete the operator's pod, SIGKILL the kubelet, restart
containerd, each in the middle of a training Job and again in the middle of a rollout under
traffic. After each, everything converges and nothing is duplicated: exactly one Job per run (that
ran exactly one pod, never restarted), one ModelVersion per run, and not one request lost while the
rollout went on.

A deleted operator pod runs no cleanup of ours: the Job and Deployment controllers carry on, and
the operator's next pod (its Deployment makes one) must pick up from the cluster alone
(level-triggered). The kubelet and containerd are not the containers' parents (each container's
shim is), so the pods keep running while either is down; `modelcycle local up` restarts what died,
and the kubelet re-attaches to its pods and reports what happened while it was away.
"""

from __future__ import annotations

import copy
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from modelcycle.kubeclient import Kube
from modelcycle.local import incluster, kubenode, platform, traffic
from support.loop import (
    DATASET_READY,
    DEPLOYMENT_SERVING,
    JOB_NAME_LABEL,
    RUN_REGISTERED,
    VERSION_VALIDATED,
    Cluster,
    ServedModels,
    assert_conditions,
    assert_one_job_and_one_version,
    assert_pods_ran_on_node,
    assert_rollout_lost_no_request,
    example,
    features_and_rows,
    is_true,
    serves,
)
from support.realnode import RealNodePlatform

pytestmark = pytest.mark.timeout(1200)

MODEL = "iris"
FIRST_RUN = "iris-logreg"
SECOND_RUN = "iris-logreg-again"
OPERATOR_PODS = "app.kubernetes.io/component=operator"
UP_TIMEOUT = 600


def _start_loop(c: Cluster) -> None:
    ex = example("iris")
    for doc in (ex["Dataset"], ex["TrainingRun"], ex["ModelDeployment"]):
        c.apply(doc)


def _second_run(c: Cluster) -> None:
    """A new TrainingRun of the same model: it registers v2, which the deployment rolls out."""
    doc = copy.deepcopy(example("iris")["TrainingRun"])
    doc["metadata"] = {"name": SECOND_RUN}
    c.apply(doc)


def _training_pod_running(c: Cluster, run: str, timeout: float = 300) -> dict[str, Any]:
    """The training Job's pod once its container runs (training has started, not finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in c.list("Pod", selector=f"{JOB_NAME_LABEL}={run}-train"):
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if any("running" in (s.get("state") or {}) for s in statuses):
                return pod
        time.sleep(0.1)
    raise AssertionError(f"the training pod of {run} never ran; Jobs: {c.list('Job')}")


def _rollout_in_progress(c: Cluster, version: int, timeout: float = 300) -> dict[str, Any]:
    """The stable Deployment runs the new version's template, and not every replica is new and
    available yet: the middle of a rolling update."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = c.get("Deployment", MODEL)
        if dep is not None:
            labels = dep["spec"]["template"]["metadata"].get("labels") or {}
            status = dep.get("status") or {}
            want = int(dep["spec"].get("replicas") or 0)
            done = status.get("updatedReplicas") == want and status.get("availableReplicas") == want
            if labels.get("modelcycle.io/version") == str(version) and not done:
                return dep
        time.sleep(0.05)
    raise AssertionError(
        f"never saw the rollout to version {version} in progress: {c.get('Deployment', MODEL)}"
    )


def _traffic(c: Cluster, endpoints: traffic.ServiceEndpoints, ds: dict[str, Any]) -> traffic.Traffic:
    client = traffic.OipClient(endpoints, MODEL)
    features = [f["name"] for f in client.get("")["parameters"]["features"]]
    rows, _ = features_and_rows(c, ds, features)
    models = ServedModels(c, MODEL, features, "classification")

    def batch(n: int) -> list[list[float]]:
        return [rows[(n * 2 + i) % len(rows)] for i in range(2)]

    return traffic.Traffic(
        client, batch, check=lambda r, b: models.mismatch(r.model_version, b, r.predictions)
    )


def _roll_out_v2_under_traffic(c: Cluster, ds: dict[str, Any], interrupt: Callable[[], None]) -> None:
    """Start the second run and, while a client sends requests to both ready endpoints, call
    `interrupt` in the middle of the rollout of v2; v2 is served in the end and no request failed."""
    with traffic.ServiceEndpoints(c.kube, c.namespace, MODEL) as endpoints:
        endpoints.wait_for(lambda e: len(e) == 2, timeout=60, what="two ready endpoints")
        with _traffic(c, endpoints, ds) as load:
            _second_run(c)
            _rollout_in_progress(c, 2)
            interrupt()
            c.wait("ModelDeployment", MODEL, serves(2), what="Ready serving v2", timeout=300)
            time.sleep(1)
            stats = load.stop()
    assert stats.total > 50
    assert_rollout_lost_no_request(stats)


def _assert_converged(c: Cluster) -> None:
    for run in (FIRST_RUN, SECOND_RUN):
        assert_one_job_and_one_version(c, run)
        assert_conditions(c.must("TrainingRun", run), RUN_REGISTERED)
    assert sorted(v["metadata"]["name"] for v in c.list("ModelVersion")) == ["iris-v1", "iris-v2"]
    for name in ("iris-v1", "iris-v2"):
        assert_conditions(c.must("ModelVersion", name), VERSION_VALIDATED)
        (validation,) = [j for j in c.list("Job") if j["metadata"]["name"] == f"{name}-validate"]
        assert (validation.get("status") or {}).get("succeeded") == 1
    mdep = c.must("ModelDeployment", MODEL)
    assert_conditions(mdep, DEPLOYMENT_SERVING)
    assert (mdep["status"]["servedVersion"], mdep["status"]["modelVersion"]) == (2, "iris-v2")
    assert [d["metadata"]["name"] for d in c.list("Deployment")] == [MODEL]
    serving = [
        p for p in c.list("Pod") if (p["metadata"].get("labels") or {}).get("modelcycle.io/version") == "2"
    ]
    assert len([p for p in serving if not p["metadata"].get("deletionTimestamp")]) == 2
    assert_conditions(c.must("Dataset", MODEL), DATASET_READY)
    assert_pods_ran_on_node(c)


def _operator_pod(kube: Kube) -> dict[str, Any] | None:
    pods = kube.get(f"/api/v1/namespaces/{incluster.NAMESPACE}/pods", labelSelector=OPERATOR_PODS)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return live[0] if len(live) == 1 else None


def _pod_ready(pod: dict[str, Any] | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class Drill:
    """One way of breaking the platform for a while: `interrupt` breaks it, `recover` repairs it
    as an operator of the platform would (the Deployment controller, or `modelcycle local up`)."""

    def __init__(self, kind: str, plat: RealNodePlatform, kube: Kube) -> None:
        self.kind = kind
        self.plat = plat
        self.kube = kube
        self.deleted: list[str] = []

    @property
    def stops_the_node(self) -> bool:
        """While the kubelet is down nobody reports a pod's status, so no Job can finish."""
        return self.kind == kubenode.KUBELET

    def interrupt(self) -> None:
        if self.kind == "operator-pod":
            pod = _operator_pod(self.kube)
            assert pod is not None, "one operator pod runs"
            self.deleted.append(pod["metadata"]["uid"])
            self.kube.delete(
                f"/api/v1/namespaces/{incluster.NAMESPACE}/pods/{pod['metadata']['name']}",
                {"gracePeriodSeconds": 0},
            )
        elif self.kind == kubenode.KUBELET:
            self.plat.signal(kubenode.KUBELET, signal.SIGKILL)
        else:  # containerd: a restart, as a package upgrade does it
            self.plat.signal(kubenode.CONTAINERD, signal.SIGTERM)

    def recover(self) -> None:
        if self.kind == "operator-pod":
            platform.wait_until(
                lambda: (
                    (p := _operator_pod(self.kube)) is not None
                    and p["metadata"]["uid"] not in self.deleted
                    and _pod_ready(p)
                ),
                timeout=300,
                what="the operator's next pod to be Ready",
            )
            return
        process = self.plat.process(self.kind)
        platform.wait_until(lambda: not process.is_running(), timeout=60, what=f"{self.kind} to exit")
        up = self.plat.local("up", "--timeout", "300", timeout=UP_TIMEOUT)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"{self.kind} " in up.stdout and "restarted; the containers kept running" in up.stdout, (
            up.stdout
        )
        assert self.plat.components_running()


@pytest.mark.parametrize(
    "kind",
    ["operator-pod", kubenode.KUBELET, kubenode.CONTAINERD],
    ids=["operator-pod", "kubelet", "containerd"],
)
def test_drill_mid_training_and_mid_rollout_duplicates_nothing_and_loses_no_request(
    new_cluster: Any, healthy_platform: RealNodePlatform, kind: str
) -> None:
    c: Cluster = new_cluster(f"drill-{kind.replace('-pod', '')}")
    drill = Drill(kind, healthy_platform, c.kube)
    _start_loop(c)

    # --- in the middle of the training Job ---------------------------------------------------------
    pod = _training_pod_running(c, FIRST_RUN)
    uid = pod["metadata"]["uid"]
    drill.interrupt()
    if drill.stops_the_node:
        time.sleep(3)  # training goes on (and may end) while no kubelet watches it
        assert not is_true(c.must("TrainingRun", FIRST_RUN), "Succeeded"), "nobody reported the Job meanwhile"
    drill.recover()
    run = c.wait_condition("TrainingRun", FIRST_RUN, "Succeeded", timeout=300)
    assert run["status"]["modelVersion"] == "iris-v1"
    assert_one_job_and_one_version(c, FIRST_RUN)
    (job_pod,) = c.list("Pod", selector=f"{JOB_NAME_LABEL}={FIRST_RUN}-train")
    assert job_pod["metadata"]["uid"] == uid, "the same pod finished the training: no second attempt"
    (container,) = job_pod["status"]["containerStatuses"]
    assert container["restartCount"] == 0 and container["state"]["terminated"]["exitCode"] == 0, container
    ds = c.wait_condition("Dataset", MODEL, "Ready")
    c.wait("ModelDeployment", MODEL, serves(1), what="Ready serving v1", timeout=300)

    # --- in the middle of the rollout, under traffic -------------------------------------------------
    def break_and_repair() -> None:
        drill.interrupt()
        time.sleep(2)
        drill.recover()

    _roll_out_v2_under_traffic(c, ds, break_and_repair)
    _assert_converged(c)
    for p in c.list("Pod"):
        for s in (p.get("status") or {}).get("containerStatuses") or []:
            assert s.get("restartCount") == 0, f"pod {p['metadata']['name']} restarted: {s}"
