"""The operator runs with exactly the ClusterRole `--print-rbac` prints: least privilege, and enough."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from support.kubelet import FakeKubelet
from support.lifecycle import Objects, dataset_manifest, eventually, ready_dataset, trained_run
from support.operator import OperatorFactory, ServiceAccountFactory

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


def test_the_printed_cluster_role_is_enough_for_the_whole_flow(
    operator_factory: OperatorFactory,
    service_account_kubeconfig_factory: ServiceAccountFactory,
    objects: Objects,
    kubelet: FakeKubelet,
) -> None:
    role = printed_cluster_role()
    assert role["kind"] == "ClusterRole"
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]

    operator = operator_factory(kubeconfig_path=service_account_kubeconfig_factory(role["rules"]))

    ready_dataset(objects, kubelet)
    trained_run(objects, kubelet, "iris-logreg")
    objects.wait_job("iris-v1-validate")
    kubelet.complete(objects.namespace, "iris-v1-validate")
    objects.wait_condition("ModelVersion", "iris-v1", "Validated")
    wanted = {"SnapshotReady", "ModelRegistered", "Validated"}  # Events were allowed too
    eventually(lambda: wanted <= {e["reason"] for e in objects.events()}, what=f"the Events {wanted}")

    log = operator.log_text()
    assert not [line for line in log.splitlines() if any(m in line for m in FORBIDDEN_MARKERS)], log[-5000:]


def test_without_its_role_the_operator_reports_forbidden_and_stays_up(
    operator_factory: OperatorFactory,
    service_account_kubeconfig_factory: ServiceAccountFactory,
    objects: Objects,
) -> None:
    # Everything but the right to create Jobs: the reconcile fails with 403,
    # is logged, retried with backoff, and the operator keeps serving its health endpoint.
    rules = []
    for rule in printed_cluster_role()["rules"]:
        if "jobs" in rule["resources"]:
            others = [r for r in rule["resources"] if r != "jobs"]
            if others:
                rules.append({**rule, "resources": others})
            rules.append(
                {**rule, "resources": ["jobs"], "verbs": [v for v in rule["verbs"] if v != "create"]}
            )
        else:
            rules.append(rule)
    operator = operator_factory(kubeconfig_path=service_account_kubeconfig_factory(rules))
    objects.create(dataset_manifest("iris"))
    eventually(
        lambda: 'cannot create resource "jobs"' in operator.log_text(),
        what="the refused Job create in the log",
    )
    assert operator.alive() and operator.healthy()
    assert not objects.jobs()
