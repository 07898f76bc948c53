"""Restart drills: SIGKILL the operator, and separately the local node agent, in the middle of a
training Job and in the middle of a rollout. After the restart everything converges and nothing
is duplicated: exactly one Job per run (that ran exactly one pod), one ModelVersion per run, and
not one request lost while the rollout went on.

A SIGKILLed operator runs no cleanup: the Job and the Deployment controllers carry on without it,
and the restarted operator must pick up from the cluster alone (level-triggered). A SIGKILLed node
agent leaves its pods' processes running (they lead their own sessions): the restarted agent
re-attaches to them and reports what happened while it was away.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from modelcycle.local import platform, traffic
from modelcycle.local.node_process import Run
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
from support.operator import OperatorProcess

pytestmark = pytest.mark.timeout(1200)

MODEL = "iris"
FIRST_RUN = "iris-logreg"
SECOND_RUN = "iris-logreg-again"


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


def _job_finished(c: Cluster, name: str, timeout: float = 300) -> dict[str, Any]:
    return c.wait(
        "Job",
        name,
        lambda j: bool((j.get("status") or {}).get("succeeded")),
        what="succeeded",
        timeout=timeout,
    )


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


def _rollout_complete(dep: dict[str, Any]) -> bool:
    status = dep.get("status") or {}
    want = int(dep["spec"].get("replicas") or 0)
    return (
        status.get("observedGeneration") == dep["metadata"].get("generation")
        and status.get("updatedReplicas") == want
        and status.get("availableReplicas") == want
        and status.get("replicas") == want
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


def test_operator_sigkill_mid_training_and_mid_rollout(
    new_cluster: Any, e2e_operator: OperatorProcess
) -> None:
    c: Cluster = new_cluster("operator-drill")
    _start_loop(c)

    # --- in the middle of the training Job ---------------------------------------------------------
    _training_pod_running(c, FIRST_RUN)
    e2e_operator.kill()
    job = _job_finished(c, f"{FIRST_RUN}-train")  # the Job controller finishes it without the operator
    assert not c.list("ModelVersion"), "nobody registered anything while the operator was down"
    assert not is_true(c.must("TrainingRun", FIRST_RUN), "Succeeded")
    e2e_operator.start()
    c.wait_condition("TrainingRun", FIRST_RUN, "Succeeded", timeout=300)
    (only_job, mv1) = assert_one_job_and_one_version(c, FIRST_RUN)
    assert only_job["metadata"]["uid"] == job["metadata"]["uid"], "the Job was adopted, not recreated"
    assert mv1["metadata"]["name"] == "iris-v1"
    ds = c.wait_condition("Dataset", MODEL, "Ready")
    c.wait("ModelDeployment", MODEL, serves(1), what="Ready serving v1", timeout=300)

    # --- in the middle of the rollout, under traffic -----------------------------------------------------
    def kill_the_operator_until_rolled_out() -> None:
        e2e_operator.kill()
        # The Deployment controller completes the rolling update on its own.
        c.wait("Deployment", MODEL, _rollout_complete, what="rolled out", timeout=300)
        mdep = c.must("ModelDeployment", MODEL)
        assert mdep["status"].get("servedVersion") == 1, "the dead operator has not recorded v2 yet"
        time.sleep(2)
        e2e_operator.start()

    _roll_out_v2_under_traffic(c, ds, kill_the_operator_until_rolled_out)
    _assert_converged(c)


def test_node_agent_sigkill_mid_training_and_mid_rollout(
    new_cluster: Any, e2e_operator: OperatorProcess, node_running: platform.Platform
) -> None:
    c: Cluster = new_cluster("node-drill")
    plat = node_running
    _start_loop(c)

    # --- in the middle of the training Job ---------------------------------------------------------
    pod = _training_pod_running(c, FIRST_RUN)
    uid = pod["metadata"]["uid"]
    plat.kill_node()
    runs = [
        r for d in sorted((plat.layout.node / "pods" / uid).glob("containers/*/runs/*")) if (r := Run.load(d))
    ]
    assert runs, "the node recorded the training run"
    assert any(r.wrapper_alive() for r in runs), "the training process outlives its node agent"
    time.sleep(3)  # training goes on (and may end) while no agent watches it
    assert not is_true(c.must("TrainingRun", FIRST_RUN), "Succeeded"), "nobody reported the Job meanwhile"
    plat.start_node()
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
    def kill_the_node_agent_for_a_while() -> None:
        plat.kill_node()
        time.sleep(3)
        plat.start_node()

    _roll_out_v2_under_traffic(c, ds, kill_the_node_agent_for_a_while)
    _assert_converged(c)
    for p in c.list("Pod"):
        for s in (p.get("status") or {}).get("containerStatuses") or []:
            assert s.get("restartCount") == 0, f"pod {p['metadata']['name']} restarted: {s}"
