"""End-to-end tier: the whole loop on a real control plane with the local node running every pod.

One platform per session (modelcycle.local.platform: control plane + local node agent + CRDs),
on a control plane of its own: the integration tier's control plane has no node on purpose (its
pods must stay Pending), so the two never share one. The operator is the real `modelcycle
operator` process (tests/support/operator.py), restartable by the drills. Each test gets
namespaces labelled pod-security `restricted`, each with its own artifact PersistentVolume
(a directory of the platform, node affinity to the local node) and claim.

Nothing is simulated: Jobs complete because their pods ran as processes of this machine. Without
the Kubernetes binaries (or off Linux, which the node needs) the tier skips, and fails under CI=1.

External-cluster mode: with MODELCYCLE_E2E_KUBECONFIG naming a kubeconfig, the fixtures start no
control plane, node or operator. They use that cluster, where the operator must already run (the
Helm chart's; `make e2e-kind`): its CRDs must exist, and a Deployment labelled
app.kubernetes.io/name=modelcycle, if there is one, must be ready. Each test namespace (pod
security `restricted`) gets its artifact claim (ReadWriteOnce, 1Gi) from the cluster's default
StorageClass, or, with MODELCYCLE_E2E_ARTIFACT_ROOT set, a local PersistentVolume in a directory
of this host (for a cluster whose node shares this filesystem, such as `modelcycle local up`,
which has no provisioner). Traffic reaches serving pods through the API server's proxy
(MODELCYCLE_E2E_TRANSPORT=service-proxy, the default there) or straight to pod IPs (`direct`, the
default of the local mode; also needed against `modelcycle local up`, whose loopback pod IPs the
API server refuses to proxy to). Tests that kill or restart the suite's own operator or node
(test_restarts.py, test_local_cli.py) skip in this mode. See docs/install.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcycle import GROUP
from modelcycle.api import kinds
from modelcycle.kubeclient import ApiError, Kube, NotFound
from modelcycle.local import platform, traffic
from modelcycle.local.controlplane import CONTROL_PLANE_BINARIES
from support.cluster import api_client_for, describe_namespace, missing_prerequisite, require_binaries
from support.loop import Cluster, ConditionLog
from support.operator import OperatorProcess

HERE = Path(__file__).resolve().parent
NODE_NAME = "modelcycle-e2e"
# A loopback range of its own: a `modelcycle local up` platform (127.1.0.0/16) may run beside.
POD_NETWORK = "127.77.0.0/16"
ARTIFACT_CLAIM = "modelcycle-artifacts"
OPERATOR_ARGS = ("--monitor-stats-access", "direct", "--artifact-claim", ARTIFACT_CLAIM)

EXTERNAL_KUBECONFIG_ENV = "MODELCYCLE_E2E_KUBECONFIG"
TRANSPORT_ENV = "MODELCYCLE_E2E_TRANSPORT"
ARTIFACT_ROOT_ENV = "MODELCYCLE_E2E_ARTIFACT_ROOT"
EXTERNAL_ARTIFACT_SIZE = "1Gi"
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelcycle"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# Drills that kill or restart the operator or node this suite starts: nothing to kill elsewhere.
LOCAL_PLATFORM_ONLY = ("test_restarts.py", "test_local_cli.py")

_clusters = pytest.StashKey[list[Cluster]]()
_condition_logs = pytest.StashKey[list[ConditionLog]]()
_session_platform: list[platform.Platform] = []
_session_operator: list[OperatorProcess] = []

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
                        "drill kills/restarts the operator or node the suite starts itself"
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
    """Where the tests' namespaces live: the suite's own platform, or an external cluster."""

    kube: Kube
    kubeconfig: Path
    external: bool
    node_name: str | None
    """The node every pod must run on (None: a cluster with several nodes, any of them)."""
    container_prefix: str | None
    """The scheme every containerID must have (local:// on the local node)."""
    artifact_root: Path | None
    """Where per-namespace local PersistentVolumes go; None: the default StorageClass."""


@pytest.fixture(scope="session")
def e2e_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[platform.Platform]:
    """Control plane + local node + CRDs, attached to this session (no operator: see e2e_operator)."""
    binaries = require_binaries(CONTROL_PLANE_BINARIES)
    if not sys.platform.startswith("linux"):
        missing_prerequisite("the local node needs Linux")
    root = tmp_path_factory.mktemp("platform")
    options = platform.PlatformOptions(
        namespace=None,
        node_name=NODE_NAME,
        pod_network=POD_NETWORK,
        binaries=binaries,
        operator=False,
    )
    plat = platform.Platform(root, options, detach=False)
    plat.start()
    _session_platform.append(plat)
    yield plat
    _session_platform.remove(plat)
    stopped = plat.stop()
    assert not platform.pod_runs(plat.layout.node), "pod processes outlived the platform"
    del stopped
    shutil.rmtree(plat.layout.controlplane / "etcd", ignore_errors=True)


@pytest.fixture(scope="session")
def e2e_kube(request: pytest.FixtureRequest) -> Iterator[Kube]:
    external = external_kubeconfig()
    if external is None:
        plat: platform.Platform = request.getfixturevalue("e2e_platform")
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
        plat: platform.Platform = request.getfixturevalue("e2e_platform")
        return Target(e2e_kube, plat.kubeconfig, False, NODE_NAME, "local://", plat.layout.artifacts)
    check_external_cluster(e2e_kube, external)
    nodes = e2e_kube.get("/api/v1/nodes").get("items") or []
    node_name = nodes[0]["metadata"]["name"] if len(nodes) == 1 else None
    root = os.environ.get(ARTIFACT_ROOT_ENV, "").strip()
    artifact_root = Path(root).expanduser().resolve() if root else None
    if artifact_root is not None and node_name is None:
        pytest.fail(f"{ARTIFACT_ROOT_ENV} needs a cluster with exactly one node", pytrace=False)
    if artifact_root is None:
        default_storage_class(e2e_kube, external)
    # A containerID's scheme is the runtime's own (containerd://, local://): not checked here.
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


@pytest.fixture(scope="session")
def _operator_process(e2e_platform: platform.Platform) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        e2e_platform.kubeconfig, e2e_platform.layout.logs / "operator.log", extra_args=OPERATOR_ARGS
    )
    process.start()
    _session_operator.append(process)
    yield process
    _session_operator.remove(process)
    process.stop()


@pytest.fixture
def e2e_operator(request: pytest.FixtureRequest, e2e_target: Target) -> OperatorProcess | None:
    """The session's operator, started again if an earlier test left it stopped (None in the
    external-cluster mode: the cluster's own operator does the work)."""
    if e2e_target.external:
        return None
    process: OperatorProcess = request.getfixturevalue("_operator_process")
    if not process.alive():
        process.start()
    return process


@pytest.fixture
def node_running(e2e_platform: platform.Platform) -> platform.Platform:
    """The platform, with its node agent started again if an earlier test left it stopped."""
    if not e2e_platform.running(platform.NODE):
        e2e_platform.start_node()
    return e2e_platform


@pytest.fixture
def new_cluster(request: pytest.FixtureRequest, e2e_target: Target) -> Iterator[ClusterFactory]:
    """Namespaces for this test, each with pod security `restricted` and its own artifact store.

    Deleted afterwards; on failure their events and objects, the condition history, and the
    operator and node logs go into the report.
    """
    if not e2e_target.external:
        request.getfixturevalue("node_running")
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


def _tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


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
    if external is not None:
        api = api_client_for(external)
        try:
            for cluster in item.stash.get(_clusters, []):
                report.sections.append(
                    (
                        f"namespace {cluster.namespace}: events and objects",
                        describe_namespace(api, cluster.namespace),
                    )
                )
        finally:
            api.close()
    if _session_platform:
        plat = _session_platform[0]
        api = api_client_for(plat.kubeconfig)
        try:
            for cluster in item.stash.get(_clusters, []):
                report.sections.append(
                    (
                        f"namespace {cluster.namespace}: events and objects",
                        describe_namespace(api, cluster.namespace),
                    )
                )
                pod_logs = sorted((plat.layout.node / "logs").glob(f"{cluster.namespace}_*/*/*.log"))
                for path in pod_logs[-12:]:
                    report.sections.append(
                        (f"pod log {path.parent.parent.name}/{path.name}", _tail(path, 40))
                    )
        finally:
            api.close()
        report.sections.append(("local node log", _tail(plat.layout.log(platform.NODE), 150)))
    for process in _session_operator:
        report.sections.append(("operator log", process.log_tail(300)))
    return report
