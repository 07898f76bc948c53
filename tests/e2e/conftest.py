"""End-to-end tier: the whole loop on the real node.

One platform per session, brought up as a user brings it up: `modelcycle local up` (containerd +
runc, a real kubelet and kube-proxy, the operator installed in-cluster by the Helm chart from the
images `make setup` built), and `modelcycle local down --purge` at the end, which must leave
nothing of ours on the host. Every pod runs in a container of our images; Services route through
kube-proxy; the ModelMonitor reads the serving pods' stats through the API server's pod proxy (the
chart's default). Each test gets namespaces labelled pod-security `restricted`, each with its own
artifact PersistentVolume (a directory of this host, node affinity to the node) and claim.

Without root, Linux or a usable container runtime (`modelcycle local preflight`) the tier skips,
and fails under CI=1.

External-cluster mode: with MODELCYCLE_E2E_KUBECONFIG naming a kubeconfig, the fixtures start no
platform. They use that cluster, where the operator must already run (the Helm chart's; `make
e2e-kind`): its CRDs must exist, and a Deployment labelled app.kubernetes.io/name=modelcycle, if
there is one, must be ready. Each test namespace gets its artifact claim (ReadWriteOnce, 1Gi) from
the cluster's default StorageClass, or, with MODELCYCLE_E2E_ARTIFACT_ROOT set, a local
PersistentVolume in a directory of this host (for a one-node cluster sharing this filesystem).
Traffic reaches serving pods through the API server's proxy (MODELCYCLE_E2E_TRANSPORT=service-proxy,
the default there) or straight to pod IPs (`direct`, the default on the suite's own node, whose pod
IPs this host routes). The drills that break the suite's own node (test_restarts.py,
test_real_node.py) skip in this mode. See docs/install.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcycle import GROUP
from modelcycle.api import kinds
from modelcycle.kubeclient import ApiError, Kube, NotFound
from modelcycle.local import incluster, kubenode, platform, traffic
from support.cluster import api_client_for, describe_namespace, missing_prerequisite
from support.loop import Cluster, ConditionLog
from support.realnode import RealNodePlatform, run_local

HERE = Path(__file__).resolve().parent
ARTIFACT_CLAIM = "modelcycle-artifacts"

EXTERNAL_KUBECONFIG_ENV = "MODELCYCLE_E2E_KUBECONFIG"
TRANSPORT_ENV = "MODELCYCLE_E2E_TRANSPORT"
ARTIFACT_ROOT_ENV = "MODELCYCLE_E2E_ARTIFACT_ROOT"
EXTERNAL_ARTIFACT_SIZE = "1Gi"
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelcycle"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# Drills that break the node or the operator this suite starts: nothing to break elsewhere.
LOCAL_PLATFORM_ONLY = ("test_restarts.py", "test_real_node.py")
UP_TIMEOUT = 300

_clusters = pytest.StashKey[list[Cluster]]()
_condition_logs = pytest.StashKey[list[ConditionLog]]()
_session_platform: list[RealNodePlatform] = []

ClusterFactory = Callable[..., Cluster]


def external_kubeconfig() -> Path | None:
    """The cluster of the external-cluster mode (MODELCYCLE_E2E_KUBECONFIG), or None."""
    value = os.environ.get(EXTERNAL_KUBECONFIG_ENV, "").strip()
    return Path(value).expanduser() if value else None


def transport_name() -> str:
    default = "service-proxy" if external_kubeconfig() else "direct"
    name = os.environ.get(TRANSPORT_ENV, "").strip() or default
    if name not in traffic.TRANSPORTS:
        raise pytest.UsageError(f"{TRANSPORT_ENV}={name!r}: one of {', '.join(traffic.TRANSPORTS)}")
    return name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    external = external_kubeconfig()
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            if external is not None and item.path.name in LOCAL_PLATFORM_ONLY:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"external-cluster mode ({EXTERNAL_KUBECONFIG_ENV}={external}): this "
                        "drill breaks the node or operator the suite starts itself"
                    )
                )


@pytest.fixture(scope="session", autouse=True)
def _traffic_transport() -> Iterator[str]:
    """How traffic.OipClient reaches serving pods in this session (see modelcycle.local.traffic)."""
    name = transport_name()
    previous = traffic.use_transport(name)
    yield name
    traffic.use_transport(previous)


@dataclass
class Target:
    """Where the tests' namespaces live: the suite's own real node, or an external cluster."""

    kube: Kube
    kubeconfig: Path
    external: bool
    node_name: str | None
    """The node every pod must run on (None: a cluster with several nodes, any of them)."""
    container_prefix: str | None
    """The scheme every containerID must have (containerd:// on the real node)."""
    artifact_root: Path | None
    """Where per-namespace local PersistentVolumes go; None: the default StorageClass."""


@pytest.fixture(scope="session")
def e2e_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNodePlatform]:
    """`modelcycle local up` for this session (one real node per machine: kube-proxy and the
    kubelet own host-wide state); `local down --purge` afterwards must leave nothing of ours."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        missing_prerequisite("the real node needs Linux and root")
    try:
        kubenode.preflight()
    except kubenode.NodeError as exc:
        missing_prerequisite(str(exc))
    root = tmp_path_factory.mktemp("real-node")
    up = run_local("up", "--root", str(root), "--timeout", str(UP_TIMEOUT), timeout=4 * UP_TIMEOUT)
    plat = RealNodePlatform(root, root / "controlplane" / "admin.kubeconfig", up.stdout)
    _session_platform.append(plat)
    try:
        if up.returncode != 0:
            pytest.fail(f"modelcycle local up failed:\n{up.stdout}\n{up.stderr}", pytrace=False)
        yield plat
    finally:
        _session_platform.remove(plat)
        down = run_local("down", "--root", str(root), "--purge", timeout=600)
        assert down.returncode == 0, f"modelcycle local down failed:\n{down.stdout}\n{down.stderr}"
        left = kubenode.leftovers(root / "node")
        assert not left, f"`local down` left these on the host: {left}"


@pytest.fixture(scope="session")
def e2e_kube(request: pytest.FixtureRequest) -> Iterator[Kube]:
    external = external_kubeconfig()
    if external is None:
        plat: RealNodePlatform = request.getfixturevalue("e2e_platform")
        kubeconfig = plat.kubeconfig
    else:
        if not external.is_file():
            pytest.fail(f"{EXTERNAL_KUBECONFIG_ENV}={external}: no such file", pytrace=False)
        kubeconfig = external
    kube = Kube.from_kubeconfig(kubeconfig, user_agent="modelcycle-e2e")
    yield kube
    kube.close()


@pytest.fixture(scope="session")
def e2e_target(request: pytest.FixtureRequest, e2e_kube: Kube) -> Target:
    external = external_kubeconfig()
    if external is None:
        plat: RealNodePlatform = request.getfixturevalue("e2e_platform")
        return Target(
            e2e_kube, plat.kubeconfig, False, platform.NODE_NAME, "containerd://", plat.root / "e2e-artifacts"
        )
    check_external_cluster(e2e_kube, external)
    nodes = e2e_kube.get("/api/v1/nodes").get("items") or []
    node_name = nodes[0]["metadata"]["name"] if len(nodes) == 1 else None
    root = os.environ.get(ARTIFACT_ROOT_ENV, "").strip()
    artifact_root = Path(root).expanduser().resolve() if root else None
    if artifact_root is not None and node_name is None:
        pytest.fail(f"{ARTIFACT_ROOT_ENV} needs a cluster with exactly one node", pytrace=False)
    if artifact_root is None:
        default_storage_class(e2e_kube, external)
    # A containerID's scheme is the runtime's own (containerd://, cri-o://): not checked here.
    return Target(e2e_kube, external, True, node_name, None, artifact_root)


def check_external_cluster(kube: Kube, kubeconfig: Path) -> None:
    """The operator's CRDs are installed, and its Deployment (if any) is ready; else a clear failure."""
    where = f"the cluster of {EXTERNAL_KUBECONFIG_ENV}={kubeconfig}"
    try:
        missing = [
            f"{k.plural}.{GROUP}"
            for k in kinds.ALL
            if kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{k.plural}.{GROUP}")
            is None
        ]
        deployments = (
            kube.get("/apis/apps/v1/deployments", labelSelector=OPERATOR_SELECTOR).get("items") or []
        )
    except Exception as exc:
        pytest.fail(f"cannot read {where}: {type(exc).__name__}: {exc}", pytrace=False)
    if missing:
        pytest.fail(
            f"{where} lacks the ModelCycle CRDs {missing}: install the chart first "
            "(helm upgrade --install modelcycle charts/modelcycle ...; see docs/install.md)",
            pytrace=False,
        )
    for d in deployments:
        if not ((d.get("status") or {}).get("readyReplicas") or 0):
            meta = d["metadata"]
            pytest.fail(
                f"{where}: the operator Deployment {meta['namespace']}/{meta['name']} has no ready "
                "replica (kubectl -n <ns> describe deployment; logs)",
                pytrace=False,
            )


def default_storage_class(kube: Kube, kubeconfig: Path) -> str:
    classes = kube.get("/apis/storage.k8s.io/v1/storageclasses").get("items") or []
    for sc in classes:
        if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
            return str(sc["metadata"]["name"])
    pytest.fail(
        f"the cluster of {EXTERNAL_KUBECONFIG_ENV}={kubeconfig} has no default StorageClass "
        f"(found: {[sc['metadata']['name'] for sc in classes]}); the tests' artifact claims need one, "
        f"or set {ARTIFACT_ROOT_ENV} to a directory of this host that the cluster's only node shares",
        pytrace=False,
    )


def ensure_default_class_claim(kube: Kube, namespace: str, claim: str) -> None:
    """A ReadWriteOnce claim from the default StorageClass (bound when its first pod is scheduled,
    with WaitForFirstConsumer, so it is not waited for here)."""
    kube.create(
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        platform.artifact_claim(
            namespace=namespace, claim=claim, volume=None, capacity=EXTERNAL_ARTIFACT_SIZE
        ),
    )


@pytest.fixture
def healthy_platform(e2e_platform: RealNodePlatform, e2e_kube: Kube) -> RealNodePlatform:
    """The session's platform, repaired by `local up` if an earlier test (a drill) left a node
    component or the operator down."""
    if not (e2e_platform.components_running() and incluster.operator_available(e2e_kube)):
        up = e2e_platform.local("up", "--timeout", str(UP_TIMEOUT), timeout=4 * UP_TIMEOUT)
        assert up.returncode == 0, (
            f"modelcycle local up could not repair the platform:\n{up.stdout}{up.stderr}"
        )
        platform.wait_until(
            lambda: incluster.operator_available(e2e_kube), timeout=UP_TIMEOUT, what="the operator"
        )
    return e2e_platform


@pytest.fixture
def new_cluster(request: pytest.FixtureRequest, e2e_target: Target) -> Iterator[ClusterFactory]:
    """Namespaces for this test, each with pod security `restricted` and its own artifact store.

    Deleted afterwards; on failure their events, objects and pod logs, the condition history, and
    the operator and kubelet logs go into the report.
    """
    if not e2e_target.external:
        request.getfixturevalue("healthy_platform")
    e2e_kube = e2e_target.kube
    created = request.node.stash.setdefault(_clusters, [])
    logs = request.node.stash.setdefault(_condition_logs, [])

    def factory(prefix: str = "e2e") -> Cluster:
        namespace = f"{prefix}-{secrets.token_hex(3)}"
        platform.ensure_namespace(e2e_kube, namespace)
        artifacts: Path | None = None
        if e2e_target.artifact_root is not None:
            assert e2e_target.node_name is not None
            artifacts = e2e_target.artifact_root / namespace
            platform.ensure_artifact_store(
                e2e_kube,
                namespace=namespace,
                claim=ARTIFACT_CLAIM,
                path=artifacts,
                node_name=e2e_target.node_name,
            )
        else:
            ensure_default_class_claim(e2e_kube, namespace, ARTIFACT_CLAIM)
        history = ConditionLog(e2e_kube, namespace).start()
        cluster = Cluster(
            e2e_kube,
            namespace,
            artifacts,
            e2e_target.node_name,
            history,
            container_prefix=e2e_target.container_prefix,
        )
        created.append(cluster)
        logs.append(history)
        return cluster

    yield factory
    for log in logs:
        log.stop()
    for cluster in created:
        _delete_namespace(e2e_kube, cluster.namespace)


def _delete_namespace(kube: Kube, namespace: str) -> None:
    with contextlib.suppress(NotFound):
        kube.delete(f"/api/v1/namespaces/{namespace}", {"propagationPolicy": "Background"})
    volume = platform.artifact_volume_name(namespace, ARTIFACT_CLAIM)
    with contextlib.suppress(NotFound):
        kube.delete(f"/api/v1/persistentvolumes/{volume}")
    # Let the node stop the namespace's pods before the next test loads the machine.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if not kube.get(f"/api/v1/namespaces/{namespace}/pods").get("items"):
                return
        except ApiError:
            return
        time.sleep(0.5)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _pod_logs(kube: Kube, namespace: str, *, limit: int = 12) -> list[tuple[str, str]]:
    """The last lines of each container of a namespace's pods, read through the API server."""
    sections: list[tuple[str, str]] = []
    try:
        pods = kube.get(f"/api/v1/namespaces/{namespace}/pods").get("items") or []
    except ApiError as exc:
        return [(f"pods of {namespace}", f"cannot list: {exc}")]
    for pod in pods[-limit:]:
        name = pod["metadata"]["name"]
        for container in pod["spec"]["containers"]:
            try:
                text = kube.fetch(
                    "GET",
                    f"/api/v1/namespaces/{namespace}/pods/{name}/log",
                    params={"container": container["name"], "tailLines": "60"},
                ).decode(errors="replace")
            except ApiError as exc:
                text = f"(no log: {exc})"
            sections.append((f"pod log {namespace}/{name}/{container['name']}", _tail(text, 60)))
    return sections


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not (report.failed and report.when in ("setup", "call")):
        return report
    for log in item.stash.get(_condition_logs, []):
        report.sections.append((f"condition history of {log.namespace}", log.dump() or "(none)"))
    external = external_kubeconfig()
    kubeconfig = (
        external if external is not None else (_session_platform[0].kubeconfig if _session_platform else None)
    )
    if kubeconfig is None or not kubeconfig.exists():
        return report
    api = api_client_for(kubeconfig)
    kube = Kube.from_kubeconfig(kubeconfig, user_agent="modelcycle-e2e-report")
    try:
        for cluster in item.stash.get(_clusters, []):
            report.sections.append(
                (
                    f"namespace {cluster.namespace}: events and objects",
                    describe_namespace(api, cluster.namespace),
                )
            )
            if external is None:
                report.sections.extend(_pod_logs(kube, cluster.namespace))
        if external is None:
            report.sections.extend(_pod_logs(kube, incluster.NAMESPACE, limit=2))
            plat = _session_platform[0]
            report.sections.append(("kubelet log", plat.log_tail(kubenode.KUBELET, 150)))
    finally:
        kube.close()
        api.close()
    return report
