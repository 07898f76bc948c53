"""The Helm chart on a real control plane: install under Pod Security `restricted`, bad values,
the operator's effective permissions (golden file), and kubectl's view of the API (get, explain).

The control plane has no node, so pods stay Pending; what matters is that the ReplicaSet controller
could create them, i.e. PodSecurity admitted the operator's pod.
Golden files: tests/integration/golden/. Regenerate after a reviewed RBAC change with
MODELCYCLE_UPDATE_GOLDEN=1 pytest tests/integration/test_helm_install.py.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelcycle.api import kinds
from modelcycle.local.controlplane import K8S_VERSION
from support.cluster import NamespaceFactory, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelcycle"
GOLDEN = Path(__file__).resolve().parent / "golden"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
FORBIDDEN_RESOURCES = {"secrets", "pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token"}


def run(
    *command: str | Path, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command], input=stdin, capture_output=True, text=True, check=False, timeout=180
    )
    if check and result.returncode != 0:
        shown = " ".join(str(c) for c in command)
        pytest.fail(f"{shown} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Release:
    name: str
    namespace: str
    values: dict[str, Any]

    @property
    def operator_account(self) -> str:
        return f"{self.name}-modelcycle-operator"


@pytest.fixture
def install(helm: Path, kubeconfig: Path) -> Iterator[Any]:
    """install(namespace, values) -> Release; every release is uninstalled after the test."""
    releases: list[Release] = []

    def factory(namespace: str, values: dict[str, Any] | None = None) -> Release:
        release = Release(name=f"mc-{secrets.token_hex(3)}", namespace=namespace, values=values or {})
        run(
            helm, "install", release.name, CHART, "--namespace", namespace, "--kubeconfig", kubeconfig,
            "--values", "-", "--timeout", "2m",
            stdin=yaml.safe_dump(release.values),
        )  # fmt: skip
        releases.append(release)
        return release

    yield factory
    for release in releases:
        run(
            helm,
            "uninstall",
            release.name,
            "--namespace",
            release.namespace,
            "--kubeconfig",
            kubeconfig,
            check=False,
        )


def replica_sets(api: client.ApiClient, namespace: str) -> list[client.V1ReplicaSet]:
    return list(client.AppsV1Api(api).list_namespaced_replica_set(namespace).items)


def failed_creates(api: client.ApiClient, namespace: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [
        f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}"
        for e in events
        if e.reason == "FailedCreate"
    ]


def operator_pods(api: client.ApiClient, release: Release) -> list[client.V1Pod]:
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
    return list(client.CoreV1Api(api).list_namespaced_pod(release.namespace, label_selector=selector).items)


# --------------------------------------------------------------------------- install


def test_install_into_a_restricted_namespace_admits_the_operator_pod(
    install: Any, new_namespace: NamespaceFactory, api_client: client.ApiClient
) -> None:
    namespace = new_namespace(labels=RESTRICTED)
    release = install(namespace)

    def pod_or_rejection() -> list[Any]:
        rejected = failed_creates(api_client, namespace)
        assert not rejected, f"the ReplicaSet controller could not create the operator pod: {rejected}"
        return operator_pods(api_client, release)

    pods = wait_for(pod_or_rejection, timeout=90, what="the operator pod to be created by its ReplicaSet")
    (pod,) = pods
    assert pod.spec.automount_service_account_token is True
    assert pod.spec.service_account_name == release.operator_account
    assert pod.spec.security_context.run_as_non_root is True
    (container,) = pod.spec.containers
    assert container.security_context.read_only_root_filesystem is True
    assert container.args[0] == "operator"
    assert not failed_creates(api_client, namespace)
    (replica_set,) = [rs.to_dict() for rs in replica_sets(api_client, namespace)]
    assert replica_set["metadata"]["owner_references"][0]["name"] == f"{release.name}-modelcycle-operator"

    core = client.CoreV1Api(api_client)
    accounts = {
        sa["metadata"]["name"]: sa
        for sa in core.list_namespaced_service_account(namespace).to_dict()["items"]
    }
    assert accounts["modelcycle-workload"]["automount_service_account_token"] is False
    pvc = core.read_namespaced_persistent_volume_claim("modelcycle-artifacts", namespace).to_dict()
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_peering_install_runs_two_instances_with_distinct_priorities(
    install: Any, new_namespace: NamespaceFactory, api_client: client.ApiClient
) -> None:
    """replicas: 2 with peering on the real API server: kopf's CRDs come with the subchart."""
    namespace = new_namespace(labels=RESTRICTED)
    release = install(
        namespace, {"watchNamespaces": [namespace], "operator": {"replicas": 2}, "peering": {"enabled": True}}
    )
    pods = wait_for(
        lambda: len(operator_pods(api_client, release)) == 2 and operator_pods(api_client, release),
        timeout=90,
        what="two operator pods",
    )
    priorities = sorted(
        next(a for a in p.spec.containers[0].args if a.startswith("--priority=")) for p in pods
    )
    assert priorities == ["--priority=100", "--priority=99"]
    peering: dict[str, Any] = client.CustomObjectsApi(api_client).get_namespaced_custom_object(  # type: ignore[assignment]
        "kopf.dev", "v1", namespace, "kopfpeerings", "modelcycle"
    )
    assert peering["metadata"]["name"] == "modelcycle"
    assert not failed_creates(api_client, namespace)


def test_bad_values_fail_the_install_with_the_schema_message(
    helm: Path, kubeconfig: Path, new_namespace: NamespaceFactory, api_client: client.ApiClient
) -> None:
    namespace = new_namespace()
    bad = ("--set", "operator.replicas=two", "--set", "artifacts.type=nfs")
    template = (helm, "template", "bad", CHART, "--namespace", namespace, "--kube-version", K8S_VERSION, *bad)
    install = (helm, "install", "bad", CHART, "--namespace", namespace, "--kubeconfig", kubeconfig, *bad)
    for command in (template, install):
        result = run(*command, check=False)
        assert result.returncode != 0
        assert "values don't meet the specifications of the schema" in result.stderr
        assert "at '/operator/replicas': got string, want integer" in result.stderr
        assert "at '/artifacts/type': value must be one of 'pvc', 's3'" in result.stderr
    assert not client.AppsV1Api(api_client).list_namespaced_deployment(namespace).items, (
        "nothing is installed"
    )


# --------------------------------------------------------------------------- permissions


def can_i(kubectl: Path, kubeconfig: Path, user: str, namespace: str) -> str:
    result = run(
        kubectl, "--kubeconfig", kubeconfig, "auth", "can-i", "--list", "--as", user, "--namespace", namespace
    )
    return "\n".join(line.rstrip() for line in result.stdout.strip().splitlines()) + "\n"


def permissions(kubectl: Path, kubeconfig: Path, user: str, namespace: str) -> str:
    """The golden-file text: every rule that applies in `namespace`, cluster-scoped ones included."""
    return "# kubectl auth can-i --list --as <operator> --namespace <namespace>\n" + can_i(
        kubectl, kubeconfig, user, namespace
    )


def parse_can_i(text: str) -> list[tuple[str, str, str, str]]:
    """(resource, nonResourceURLs, resourceNames, verbs) rows of a permissions() text.

    Rows of non-resource URLs (discovery, granted to every authenticated user) are left out."""
    rows = []
    for line in text.splitlines():
        if line.startswith(("#", "Resources ")):
            continue
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 4:
            rows.append((cells[0], cells[1], cells[2], cells[3]))
    return rows


def compare_with_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MODELCYCLE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), (
        f"{path} is missing: review the output below and create it (MODELCYCLE_UPDATE_GOLDEN=1)\n{text}"
    )
    assert text == path.read_text(), (
        f"the operator's effective permissions changed; review, then MODELCYCLE_UPDATE_GOLDEN=1.\n"
        f"--- golden\n{path.read_text()}\n--- now\n{text}"
    )


def assert_least_privilege(text: str, *, s3_secret: str | None = None) -> None:
    for resource, urls, names, verbs in parse_can_i(text):
        if urls not in ("[]", ""):
            continue  # discovery URLs granted to every authenticated user (system:discovery)
        assert "*" not in resource and "*" not in verbs, f"wildcard: {resource} {verbs}"
        base = resource.split(".", 1)[0]
        if base == "secrets":
            assert s3_secret and names == f"[{s3_secret}]", f"secrets beyond the S3 secret: {names} {verbs}"
        assert base not in FORBIDDEN_RESOURCES - {"secrets"}, f"{resource} {verbs}"
        assert not {"escalate", "bind", "impersonate"} & set(verbs.strip("[]").split()), f"{resource} {verbs}"


def test_operator_permissions_match_the_reviewed_golden_file(
    install: Any, new_namespace: NamespaceFactory, kubectl: Path, kubeconfig: Path
) -> None:
    namespace = new_namespace(labels=RESTRICTED)
    release = install(namespace)
    elsewhere = new_namespace()
    operator = f"system:serviceaccount:{namespace}:{release.operator_account}"
    text = permissions(kubectl, kubeconfig, operator, elsewhere)
    assert_least_privilege(text)
    compare_with_golden("operator-can-i.txt", text)
    # All namespaces: the same rules wherever you ask.
    assert permissions(kubectl, kubeconfig, operator, namespace) == text
    # The workload identity has nothing beyond what every authenticated user has.
    workload = can_i(kubectl, kubeconfig, f"system:serviceaccount:{namespace}:modelcycle-workload", namespace)
    assert "modelcycle.io" not in workload and "jobs.batch" not in workload


def test_namespaced_install_grants_nothing_outside_the_watched_namespaces(
    install: Any, new_namespace: NamespaceFactory, kubectl: Path, kubeconfig: Path
) -> None:
    namespace = new_namespace(labels=RESTRICTED)
    watched = new_namespace()
    other = new_namespace()
    release = install(namespace, {"watchNamespaces": [watched]})
    operator = f"system:serviceaccount:{namespace}:{release.operator_account}"
    inside = permissions(kubectl, kubeconfig, operator, watched)
    assert_least_privilege(inside)
    compare_with_golden("operator-can-i.txt", inside)
    outside = permissions(kubectl, kubeconfig, operator, other)
    assert_least_privilege(outside)
    compare_with_golden("operator-can-i-unwatched.txt", outside)
    for kind in kinds.ALL:
        assert f"{kind.plural}.modelcycle.io" not in outside
    result = run(
        kubectl,
        "--kubeconfig",
        kubeconfig,
        "auth",
        "can-i",
        "create",
        "jobs.batch",
        "--as",
        operator,
        "-n",
        other,
        check=False,
    )
    assert result.stdout.strip() == "no"


# --------------------------------------------------------------------------- kubectl UX


def test_kubectl_get_modelcycle_shows_all_five_kinds(namespace: str, kubectl: Path, kubeconfig: Path) -> None:
    run(
        kubectl,
        "--kubeconfig",
        kubeconfig,
        "apply",
        "--namespace",
        namespace,
        "-f",
        REPO / "examples" / "iris",
    )
    output = run(kubectl, "--kubeconfig", kubeconfig, "get", "modelcycle", "--namespace", namespace).stdout
    for kind in kinds.ALL:
        assert re.search(rf"^{kind.singular}\.modelcycle\.io/\S+", output, re.M), (
            f"{kind.kind} missing:\n{output}"
        )
    for kind in kinds.ALL:  # short names and printer columns work too
        table = run(
            kubectl, "--kubeconfig", kubeconfig, "get", kind.short_name, "--namespace", namespace
        ).stdout
        header = table.splitlines()[0].split()
        assert header[0] == "NAME"
        assert [c.name.upper() for c in kind.columns if not c.priority] == header[1:]


def object_paths(schema: dict[str, Any], path: list[str]) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """Every object-valued node that `kubectl explain` can address (lists are transparent)."""
    node = (
        schema["items"] if schema.get("type") == "array" and isinstance(schema.get("items"), dict) else schema
    )
    if node.get("properties"):
        yield path, node
        for name, sub in node["properties"].items():
            if name != "metadata":
                yield from object_paths(sub, [*path, name])


def squash(text: str) -> str:
    return " ".join(text.split())


def test_kubectl_explain_documents_every_field(
    installed_crds: list[str], kubectl: Path, kubeconfig: Path
) -> None:
    for kind in kinds.ALL:
        crd = yaml.safe_load((REPO / "crds" / f"modelcycle.io_{kind.plural}.yaml").read_text())
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in object_paths(root, [kind.plural]):
            explained = run(
                kubectl,
                "--kubeconfig",
                kubeconfig,
                "explain",
                ".".join(path),
                "--api-version",
                "modelcycle.io/v1alpha1",
            ).stdout
            flat = squash(explained)
            if len(path) > 1:
                assert squash(node["description"]) in flat, f"{'.'.join(path)}: description not served"
            for name, sub in node["properties"].items():
                if len(path) == 1 and name in ("apiVersion", "kind", "metadata"):
                    continue  # the API server serves the standard texts of these three
                assert re.search(rf"^\s+{re.escape(name)}\s+<", explained, re.M), (
                    f"{'.'.join(path)}.{name} not listed"
                )
                assert squash(sub["description"]) in flat, (
                    f"{'.'.join(path)}.{name}: no description in kubectl explain"
                )
