"""End-to-end tier: the whole loop on a real control plane with the local node running every pod.

One platform per session (modelcycle.local.platform: control plane + local node agent + CRDs),
on a control plane of its own: the integration tier's control plane has no node on purpose (its
pods must stay Pending), so the two never share one. The operator is the real `modelcycle
operator` process (tests/support/operator.py), restartable by the drills. Each test gets
namespaces labelled pod-security `restricted`, each with its own artifact PersistentVolume
(a directory of the platform, node affinity to the local node) and claim.

Nothing is simulated: Jobs complete because their pods ran as processes of this machine. Without
the Kubernetes binaries (or off Linux, which the node needs) the tier skips, and fails under CI=1.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from modelcycle.local import platform
from modelcycle.local.controlplane import CONTROL_PLANE_BINARIES
from modelcycle.local.node_kube import ApiError, Kube
from support.cluster import api_client_for, describe_namespace, missing_prerequisite, require_binaries
from support.loop import Cluster, ConditionLog
from support.operator import OperatorProcess

HERE = Path(__file__).resolve().parent
NODE_NAME = "modelcycle-e2e"
# A loopback range of its own: a `modelcycle local up` platform (127.1.0.0/16) may run beside.
POD_NETWORK = "127.77.0.0/16"
ARTIFACT_CLAIM = "modelcycle-artifacts"
OPERATOR_ARGS = ("--monitor-stats-access", "direct", "--artifact-claim", ARTIFACT_CLAIM)

_clusters = pytest.StashKey[list[Cluster]]()
_condition_logs = pytest.StashKey[list[ConditionLog]]()
_session_platform: list[platform.Platform] = []
_session_operator: list[OperatorProcess] = []

ClusterFactory = Callable[..., Cluster]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


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
def e2e_kube(e2e_platform: platform.Platform) -> Iterator[Kube]:
    kube = Kube(e2e_platform.kubeconfig, user_agent="modelcycle-e2e")
    yield kube
    kube.close()


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
def e2e_operator(_operator_process: OperatorProcess) -> OperatorProcess:
    """The session's operator, started again if an earlier test left it stopped."""
    if not _operator_process.alive():
        _operator_process.start()
    return _operator_process


@pytest.fixture
def node_running(e2e_platform: platform.Platform) -> platform.Platform:
    """The platform, with its node agent started again if an earlier test left it stopped."""
    if not e2e_platform.running(platform.NODE):
        e2e_platform.start_node()
    return e2e_platform


@pytest.fixture
def new_cluster(
    request: pytest.FixtureRequest, node_running: platform.Platform, e2e_kube: Kube
) -> Iterator[ClusterFactory]:
    """Namespaces for this test, each with pod security `restricted` and its own artifact store.

    Deleted afterwards; on failure their events and objects, the condition history, and the
    operator and node logs go into the report.
    """
    created = request.node.stash.setdefault(_clusters, [])
    logs = request.node.stash.setdefault(_condition_logs, [])

    def factory(prefix: str = "e2e") -> Cluster:
        namespace = f"{prefix}-{secrets.token_hex(3)}"
        platform.ensure_namespace(e2e_kube, namespace)
        artifacts = node_running.layout.artifacts / namespace
        platform.ensure_artifact_store(
            e2e_kube, namespace=namespace, claim=ARTIFACT_CLAIM, path=artifacts, node_name=NODE_NAME
        )
        history = ConditionLog(e2e_kube, namespace).start()
        cluster = Cluster(e2e_kube, namespace, artifacts, NODE_NAME, history)
        created.append(cluster)
        logs.append(history)
        return cluster

    yield factory
    for log in logs:
        log.stop()
    for cluster in created:
        _delete_namespace(e2e_kube, cluster.namespace)


def _delete_namespace(kube: Kube, namespace: str) -> None:
    try:
        kube.delete(f"/api/v1/namespaces/{namespace}", {"propagationPolicy": "Background"})
    except ApiError as exc:
        if exc.status != 404:
            raise
    volume = platform.artifact_volume_name(namespace, ARTIFACT_CLAIM)
    try:
        kube.delete(f"/api/v1/persistentvolumes/{volume}")
    except ApiError as exc:
        if exc.status != 404:
            raise
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
