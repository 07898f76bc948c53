"""The operator runs with exactly the ClusterRole `--print-rbac` prints: least privilege, and enough."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from modelcycle.local.controlplane import ControlPlane
from support.kubelet import FakeKubelet
from support.lifecycle import Objects, eventually, ready_dataset, trained_run
from support.operator import OperatorFactory, OperatorProcess, ServiceAccountFactory

# An RBAC refusal names the user ("... is forbidden: User \"system:serviceaccount:...\" cannot ...");
# kopf says "Not enough permissions". (A 403 for a namespace being deleted is not about RBAC.)
FORBIDDEN_MARKERS = ('forbidden: User "system:serviceaccount', "Not enough permissions")


def printed_cluster_role() -> dict[str, Any]:
    printed = subprocess.run(
        [sys.executable, "-m", "modelcycle", "operator", "--print-rbac"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(yaml.safe_load(printed.stdout))


def run_the_whole_flow(
    operator_factory: OperatorFactory,
    kubeconfig: Path,
    objects: Objects,
    kubelet: FakeKubelet,
) -> OperatorProcess:
    """Dataset -> TrainingRun -> ModelVersion validated -> ModelDeployment with an HPA, then the HPA
    dropped, by an operator running with `kubeconfig` (a ServiceAccount's); asserts nothing was forbidden."""
    operator = operator_factory(kubeconfig_path=kubeconfig)

    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "iris-logreg")
    objects.wait_job("iris-v1-validate")
    kubelet.complete(objects.namespace, "iris-v1-validate")
    objects.wait_condition("ModelVersion", "iris-v1", "Validated")
    wanted = {"SnapshotReady", "ModelRegistered", "Validated"}  # Events were allowed too
    eventually(lambda: wanted <= {e["reason"] for e in objects.events()}, what=f"the Events {wanted}")

    # Serving: the Deployment, Service and HPA are created; dropping autoscaling deletes the HPA.
    objects.create(
        {
            "apiVersion": "modelcycle.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {"model": "iris", "replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
        }
    )
    apps, core = client.AppsV1Api(objects.api), client.CoreV1Api(objects.api)
    autoscaling = client.AutoscalingV2Api(objects.api)
    ns = objects.namespace
    for read in (
        apps.read_namespaced_deployment,
        core.read_namespaced_service,
        autoscaling.read_namespaced_horizontal_pod_autoscaler,
    ):
        eventually(lambda read=read: _exists(read, "iris", ns), what=f"{read.__name__} iris")
    objects.patch("ModelDeployment", "iris", {"spec": {"autoscaling": None}})
    eventually(
        lambda: not _exists(autoscaling.read_namespaced_horizontal_pod_autoscaler, "iris", ns),
        what="the HPA deleted once autoscaling is dropped",
    )

    log = operator.log_text()
    assert not [line for line in log.splitlines() if any(m in line for m in FORBIDDEN_MARKERS)], log[-5000:]
    return operator


def _exists(read: Any, name: str, namespace: str) -> bool:
    try:
        read(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def checked_printed_cluster_role() -> dict[str, Any]:
    role = printed_cluster_role()
    assert role["kind"] == "ClusterRole"
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    return role


def test_the_printed_cluster_role_is_enough_for_the_whole_flow(
    operator_factory: OperatorFactory,
    service_account_kubeconfig_factory: ServiceAccountFactory,
    objects: Objects,
    kubelet: FakeKubelet,
) -> None:
    rules = checked_printed_cluster_role()["rules"]
    run_the_whole_flow(operator_factory, service_account_kubeconfig_factory(rules), objects, kubelet)


# (apiGroup, resource[/subresource], verb)
Permission = tuple[str, str, str]

# Granted by the printed role but not exercised by run_the_whole_flow, each with why. The test
# asserts the difference is exactly this set, so adding or removing a rule needs a look here.
_NAMESPACED = "only with --namespace (kopf then lists/watches namespaces); the flow runs cluster-wide"
_MONITOR = (
    "the ModelMonitor controller (reads serving pods' stats through pods/proxy, creates retraining"
    " TrainingRuns) needs served pods on a node; this tier has none (test_modelmonitor_controller)"
)
_EDITS = (
    "ModelDeployment spec edits, rollouts, canary promotion and rollback (test_modeldeployment_controller)"
)
_RETRY = "deleting a failed Job to retry it (workload.delete_job_to_retry); the flow has no failed Job"
_CACHED = (
    "read from the operator's watch-fed store (controllers/cache.py); fetched from the API server only"
    " when the store does not hold the kind (--namespace patterns, a failed start-up LIST) or to adopt"
    " an existing child on 409"
)
NOT_EXERCISED_HERE: dict[Permission, str] = {
    ("", "namespaces", "list"): _NAMESPACED,
    ("", "namespaces", "watch"): _NAMESPACED,
    ("", "pods", "get"): _MONITOR,
    ("", "pods/proxy", "get"): _MONITOR,
    ("modelcycle.io", "modelmonitors", "get"): _MONITOR,
    ("modelcycle.io", "modelmonitors/status", "patch"): _MONITOR,
    ("modelcycle.io", "trainingruns", "create"): _MONITOR,
    # Retraining on traffic (spec.retrain.traffic): test_modelmonitor_controller.py's traffic tests.
    ("modelcycle.io", "datasets", "create"): _MONITOR,
    ("modelcycle.io", "datasets", "delete"): _MONITOR,
    ("", "services", "update"): _EDITS,
    ("", "services", "patch"): _EDITS,
    ("", "services", "delete"): _EDITS,
    ("apps", "deployments", "update"): _EDITS,
    ("apps", "deployments", "patch"): _EDITS,
    ("apps", "deployments", "delete"): _EDITS,
    ("autoscaling", "horizontalpodautoscalers", "update"): _EDITS,
    ("autoscaling", "horizontalpodautoscalers", "patch"): _EDITS,
    ("batch", "jobs", "delete"): _RETRY,
    ("apps", "deployments", "get"): _CACHED,
    ("modelcycle.io", "datasets", "get"): _CACHED,
    ("modelcycle.io", "modeldeployments", "get"): _CACHED,
    ("modelcycle.io", "modelversions", "get"): _CACHED,
    ("modelcycle.io", "trainingruns", "get"): _CACHED,
}


def granted_permissions(rules: list[dict[str, Any]]) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def service_account_username(kubeconfig: Path) -> str:
    """`system:serviceaccount:<ns>:<name>`, the `sub` of the kubeconfig's ServiceAccount token."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def audited_requests(control_plane: ControlPlane, username: str) -> list[dict[str, Any]]:
    """The audit events of `username`'s resource requests (rotated audit logs included)."""
    events = []
    for path in sorted(control_plane.audit_log.parent.glob("audit*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a line being written right now
                continue
            if event.get("user", {}).get("username") == username and event.get("objectRef"):
                events.append(event)
    return events


def permission(event: dict[str, Any]) -> Permission:
    ref = event["objectRef"]
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    return (ref.get("apiGroup", ""), resource, event["verb"])


def test_every_permission_the_role_grants_is_used_by_the_flow_and_none_is_refused(
    operator_factory: OperatorFactory,
    service_account_kubeconfig_factory: ServiceAccountFactory,
    objects: Objects,
    kubelet: FakeKubelet,
    control_plane: ControlPlane,
) -> None:
    # With the test above this proves each rule necessary: a rule the flow uses, once removed,
    # turns into a 403 and fails the flow; a rule it does not use fails here (unless listed above).
    rules = checked_printed_cluster_role()["rules"]
    kubeconfig = service_account_kubeconfig_factory(rules)
    username = service_account_username(kubeconfig)
    assert username.startswith("system:serviceaccount:")
    granted = granted_permissions(rules)
    assert set(NOT_EXERCISED_HERE) <= granted, "NOT_EXERCISED_HERE names permissions the role lacks"

    run_the_whole_flow(operator_factory, kubeconfig, objects, kubelet)

    # The audit log is written as requests complete; give the last ones a moment to land.
    deadline = time.monotonic() + 15
    while True:
        events = audited_requests(control_plane, username)
        used = {permission(e) for e in events}
        if granted - used <= set(NOT_EXERCISED_HERE) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert events, f"no audit events for {username} in {control_plane.audit_log}"
    # Only the authorizer's refusals count: a 403 from admission (say, creating in a namespace that
    # an earlier test is deleting) is allowed by RBAC and says nothing about the role.
    refused = sorted(
        {
            permission(e)
            for e in events
            if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
        }
    )
    assert not refused, f"requests refused by RBAC: {refused}"
    never_used = granted - used - set(NOT_EXERCISED_HERE)
    assert not never_used, f"granted but never used (drop the rule or extend the flow): {sorted(never_used)}"
    used_after_all = set(NOT_EXERCISED_HERE) & used
    assert not used_after_all, f"used after all, take out of NOT_EXERCISED_HERE: {sorted(used_after_all)}"
