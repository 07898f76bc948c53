"""`kubectl apply -k manifests/...` on a real control plane: the base (all namespaces) and the
single-namespace overlay install, the operator pod passes Pod Security `restricted`, and the
overlay's permissions stop at its namespace (same golden files as the Helm install).

Both install into `modelcycle-system`, so they run in order and clean up after themselves; the
CRDs are left in place (every other test of the session uses them).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.cluster import wait_for

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "modelcycle-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:modelcycle-operator"
GOLDEN = Path(__file__).resolve().parent / "golden"


def kubectl_run(
    kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> str:
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    if check and result.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def remove_all_but_crds(kubectl: Path, kubeconfig: Path, directory: Path, api: client.ApiClient) -> None:
    rendered = kubectl_run(kubectl, kubeconfig, "kustomize", str(directory))
    docs = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] not in ("CustomResourceDefinition", "Namespace")
    ]
    kubectl_run(
        kubectl, kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
        stdin="---\n".join(yaml.safe_dump(d) for d in docs),
    )  # fmt: skip


@pytest.fixture(scope="module")
def system_namespace(
    kubectl: Path, kubeconfig: Path, api_client: client.ApiClient, installed_crds: list[str]
) -> Iterator[str]:
    yield NAMESPACE
    for directory in ("manifests/base", "manifests/overlays/single-namespace"):
        remove_all_but_crds(kubectl, kubeconfig, REPO / directory, api_client)
    try:
        client.CoreV1Api(api_client).delete_namespace(NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise


def operator_pod_admitted(api: client.ApiClient) -> bool:
    events = client.CoreV1Api(api).list_namespaced_event(NAMESPACE).items
    rejected = [e.message for e in events if e.reason == "FailedCreate"]
    assert not rejected, f"the operator pod was rejected: {rejected}"
    pods = client.CoreV1Api(api).list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/component=operator"
    )
    return len(pods.items) == 1


def can_i(kubectl: Path, kubeconfig: Path, namespace: str) -> str:
    out = kubectl_run(
        kubectl, kubeconfig, "auth", "can-i", "--list", "--as", OPERATOR, "--namespace", namespace
    )
    text = "\n".join(line.rstrip() for line in out.strip().splitlines()) + "\n"
    return "# kubectl auth can-i --list --as <operator> --namespace <namespace>\n" + text


def test_apply_base(
    system_namespace: str, kubectl: Path, kubeconfig: Path, api_client: client.ApiClient
) -> None:
    out = kubectl_run(kubectl, kubeconfig, "apply", "-k", str(REPO / "manifests" / "base"))
    assert "deployment.apps/modelcycle-operator" in out
    namespace = client.CoreV1Api(api_client).read_namespace(NAMESPACE).to_dict()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    wait_for(lambda: operator_pod_admitted(api_client), timeout=90, what="the operator pod")
    # All namespaces: the operator may read datasets anywhere, with the reviewed permissions.
    assert can_i(kubectl, kubeconfig, "default") == (GOLDEN / "operator-can-i.txt").read_text()
    # Re-applying is a no-op.
    again = kubectl_run(kubectl, kubeconfig, "apply", "-k", str(REPO / "manifests" / "base"))
    assert "configured" not in again.replace("unchanged", ""), again


def test_apply_single_namespace_overlay(
    system_namespace: str, kubectl: Path, kubeconfig: Path, api_client: client.ApiClient
) -> None:
    # Drop the base's ClusterRole first: `apply` never deletes what an earlier apply created.
    remove_all_but_crds(kubectl, kubeconfig, REPO / "manifests" / "base", api_client)
    wait_for(
        lambda: not client.AppsV1Api(api_client).list_namespaced_deployment(NAMESPACE).items,
        timeout=60,
        what="the base's Deployment to go",
    )
    out = kubectl_run(
        kubectl, kubeconfig, "apply", "-k", str(REPO / "manifests" / "overlays" / "single-namespace")
    )
    assert "role.rbac.authorization.k8s.io/modelcycle-operator" in out
    deployment = (
        client.AppsV1Api(api_client).read_namespaced_deployment("modelcycle-operator", NAMESPACE).to_dict()
    )
    assert f"--namespace={NAMESPACE}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    wait_for(lambda: operator_pod_admitted(api_client), timeout=90, what="the operator pod")
    assert can_i(kubectl, kubeconfig, NAMESPACE) == (GOLDEN / "operator-can-i.txt").read_text()
    assert can_i(kubectl, kubeconfig, "default") == (GOLDEN / "operator-can-i-unwatched.txt").read_text()
