"""A real control plane for the integration and e2e tiers: fixtures, helpers and failure dumps.

Registered as a pytest plugin by tests/conftest.py, so every tier shares one control plane per
session. Fixtures: `control_plane`, `kubeconfig`, `api_client`, `installed_crds`, `new_namespace`
(a factory), `namespace`, `kubectl`, `helm`. When a test fails, the events and objects of every
namespace it created are added to its report.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from modelcycle.errors import UserError
from modelcycle.local.controlplane import CONTROL_PLANE_BINARIES, ControlPlane, find_binaries

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
FIELD_MANAGER = "modelcycle-tests"
CRD_GROUP = "modelcycle.io"

NamespaceFactory = Callable[..., str]
_created_namespaces = pytest.StashKey[list[str]]()
_namespace_api = pytest.StashKey[client.ApiClient]()


# --------------------------------------------------------------------------- skip or fail


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def missing_prerequisite(reason: str) -> NoReturn:
    """Skip on a laptop; fail in CI, where a silent skip would hide a broken setup."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def require_binaries(names: tuple[str, ...]) -> dict[str, Path]:
    try:
        return find_binaries(names)
    except UserError as exc:
        missing_prerequisite(str(exc))


# --------------------------------------------------------------------------- Pod Security `restricted`

RESTRICTED_NAMESPACE = {"pod-security.kubernetes.io/enforce": "restricted"}
"""Labels of a namespace that admits only pods meeting the restricted Pod Security Standard."""
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""A container securityContext that standard admits."""


# --------------------------------------------------------------------------- waiting


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Poll until `condition()` returns something truthy; return it, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """The object's status condition of this type; {} when it has none (or there is no object)."""
    for found in ((obj or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == type_:
            return dict(found)
    return {}


def api_client_for(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def create_object(api: client.ApiClient, manifest: Mapping[str, Any], *, namespace: str | None = None) -> Any:
    """Create any object from its manifest; returns it as a dict. Refusals raise ApiException."""
    resource = DynamicClient(api).resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    return resource.create(body=dict(manifest), namespace=namespace).to_dict()


# --------------------------------------------------------------------------- CRDs


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def apply_manifests(api: client.ApiClient, documents: list[dict[str, Any]]) -> None:
    """Server-side apply, so re-applying an unchanged or changed manifest both just work."""
    dynamic = DynamicClient(api)
    for document in documents:
        resource = dynamic.resources.get(api_version=document["apiVersion"], kind=document["kind"])
        dynamic.server_side_apply(
            resource,
            body=document,
            name=document["metadata"]["name"],
            namespace=document["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )


def crd_is_established(api: client.ApiClient, name: str) -> bool:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    conditions = {c.type: c.status for c in ((crd.status and crd.status.conditions) or [])}
    return conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"


def install_crds(api: client.ApiClient, directory: Path = CRD_DIR, *, timeout: float = 60) -> list[str]:
    """Apply every manifest in `directory` (nothing if it is empty) and wait for its CRDs."""
    documents = load_manifests(directory) if directory.is_dir() else []
    apply_manifests(api, documents)
    names = [d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"]
    for name in names:
        wait_for(partial(crd_is_established, api, name), timeout=timeout, what=f"CRD {name} Established")
    return names


# --------------------------------------------------------------------------- namespaces


def namespace_name(test_name: str) -> str:
    """A DNS label from the test's name plus a random suffix: readable in dumps, unique per run."""
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:48].strip("-")
    return f"{stem or 'test'}-{secrets.token_hex(3)}"


def create_namespace(
    api: client.ApiClient, name: str, *, labels: Mapping[str, str] | None = None, timeout: float = 60
) -> str:
    """Create a namespace and wait until its `default` ServiceAccount exists (pods need it)."""
    core = client.CoreV1Api(api)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {})))
    )

    def default_service_account_exists() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(default_service_account_exists, timeout=timeout, what=f"ServiceAccount {name}/default")
    return name


def delete_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


# --------------------------------------------------------------------------- failure dumps

# (apiVersion, kind) of the built-in objects worth seeing when a test fails; Secrets left out.
DUMPED_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Pod"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)
_NOISE_NAMES = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


def _custom_kinds(api: client.ApiClient) -> list[tuple[str, str]]:
    kinds = []
    for crd in client.ApiextensionsV1Api(api).list_custom_resource_definition().items:
        if crd.spec.group == CRD_GROUP and crd.spec.scope == "Namespaced":
            version = next((v.name for v in crd.spec.versions if v.storage), crd.spec.versions[0].name)
            kinds.append((f"{crd.spec.group}/{version}", crd.spec.names.kind))
    return kinds


def _event_line(event: client.CoreV1Event) -> str:
    when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
    involved = event.involved_object
    count = f" (x{event.count})" if event.count and event.count > 1 else ""
    return f"{when} {event.type} {event.reason} {involved.kind}/{involved.name}: {event.message}{count}"


def describe_namespace(api: client.ApiClient, namespace: str) -> str:
    """Events (oldest first) and the YAML of the namespace's objects, for a failed test's report."""
    sections: list[str] = []
    try:
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        events.sort(key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp))
        sections.append("events:\n" + ("\n".join(_event_line(e) for e in events) or "(none)"))
    except Exception as exc:  # a dump must never hide the real failure
        sections.append(f"events: could not list: {exc}")
    dynamic = DynamicClient(api)
    try:
        kinds = [*DUMPED_KINDS, *_custom_kinds(api)]
    except Exception as exc:
        kinds = list(DUMPED_KINDS)
        sections.append(f"custom resources: could not list CRDs: {exc}")
    for api_version, kind in kinds:
        try:
            resource = dynamic.resources.get(api_version=api_version, kind=kind)
            items = resource.get(namespace=namespace).to_dict()["items"]
        except Exception as exc:
            sections.append(f"{kind}: could not list: {exc}")
            continue
        items = [i for i in items if (kind, i["metadata"]["name"]) not in _NOISE_NAMES]
        for item in items:
            item["metadata"].pop("managedFields", None)
            sections.append(
                f"--- {kind} {item['metadata']['name']}\n" + yaml.safe_dump(item, sort_keys=False)
            )
    return "\n".join(sections)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real control plane for the whole session, in a temporary state directory."""
    binaries = require_binaries(CONTROL_PLANE_BINARIES)
    plane = ControlPlane(state_dir=tmp_path_factory.mktemp("controlplane"), binaries=binaries)
    with plane:
        yield plane
    shutil.rmtree(plane.layout.etcd_data, ignore_errors=True)  # etcd preallocates 64 MB; keep the logs


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = api_client_for(kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def installed_crds(api_client: client.ApiClient) -> list[str]:
    """Names of the CRDs from crds/*.yaml, applied and Established."""
    return install_crds(api_client)


@pytest.fixture
def new_namespace(
    request: pytest.FixtureRequest, api_client: client.ApiClient, installed_crds: list[str]
) -> Iterator[NamespaceFactory]:
    """Create namespaces for this test (deleted afterwards, dumped into the report if it fails).

    Call as new_namespace() or new_namespace(labels={...}); returns the name.
    """
    created = request.node.stash.setdefault(_created_namespaces, [])
    request.node.stash[_namespace_api] = api_client

    def factory(*, labels: Mapping[str, str] | None = None) -> str:
        name = namespace_name(request.node.name)
        created.append(name)
        return create_namespace(api_client, name, labels=labels)

    yield factory
    for name in created:
        delete_namespace(api_client, name)


@pytest.fixture
def namespace(new_namespace: NamespaceFactory) -> str:
    """A fresh namespace whose `default` ServiceAccount exists."""
    return new_namespace()


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return require_binaries(("kubectl",))["kubectl"]


@pytest.fixture(scope="session")
def helm() -> Path:
    return require_binaries(("helm",))["helm"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        api = item.stash.get(_namespace_api, None)
        for name in item.stash.get(_created_namespaces, []):
            if api is not None:
                report.sections.append(
                    (f"namespace {name}: events and objects", describe_namespace(api, name))
                )
    return report
