"""The local control plane behaves like a real cluster: controllers, GC, admission, tools, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelcycle.local.controlplane import CONTROL_PLANE_BINARIES, K8S_VERSION, read_state
from support.cluster import (
    CRD_DIR,
    RESTRICTED_CONTAINER,
    NamespaceFactory,
    create_object,
    require_binaries,
    wait_for,
)


def pod_manifest(name: str, *, security_context: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["true"],
                    "securityContext": security_context,
                }
            ],
        },
    }


def job_pods(core: client.CoreV1Api, namespace: str, job_name: str) -> list[client.V1Pod]:
    selector = f"batch.kubernetes.io/job-name={job_name}"
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def test_job_controller_creates_pod_and_gc_removes_it_after_job_delete(
    api_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "command": ["true"],
                            "securityContext": RESTRICTED_CONTAINER,
                        }
                    ],
                }
            },
        },
    }
    create_object(api_client, job, namespace=namespace)

    pods = wait_for(lambda: job_pods(core, namespace, "hello"), timeout=60, what="the Job's pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod.status is not None and pod.status.phase == "Pending"
    assert pod.metadata is not None and pod.metadata.name
    assert [o.kind for o in pod.metadata.owner_references or []] == ["Job"]
    pod_name = pod.metadata.name

    # The scheduler looked at it and found no node: proof that kube-scheduler is at work.
    def unschedulable() -> bool:
        status = core.read_namespaced_pod(pod_name, namespace).status
        conditions = (status and status.conditions) or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    wait_for(unschedulable, timeout=60, what="PodScheduled=False/Unschedulable")

    batch.delete_namespaced_job("hello", namespace, propagation_policy="Background")
    wait_for(lambda: not job_pods(core, namespace, "hello"), timeout=60, what="GC to delete the pod")


def test_restricted_namespace_refuses_privileged_pod(
    api_client: client.ApiClient, new_namespace: NamespaceFactory
) -> None:
    restricted = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    privileged = pod_manifest("privileged", security_context={"privileged": True})

    with pytest.raises(ApiException) as refused:
        create_object(api_client, privileged, namespace=restricted)

    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(refused.value.body or "{}")["message"]


def test_restricted_namespace_admits_restricted_compliant_pod(
    api_client: client.ApiClient, new_namespace: NamespaceFactory
) -> None:
    restricted = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})

    created = create_object(
        api_client,
        pod_manifest("compliant", security_context=RESTRICTED_CONTAINER),
        namespace=restricted,
    )

    assert created["metadata"]["uid"]


def test_privileged_pod_is_admitted_where_no_pod_security_level_is_enforced(
    api_client: client.ApiClient, namespace: str
) -> None:
    # The control for the refusal above: the API server allows privileged pods, PodSecurity does not.
    created = create_object(
        api_client, pod_manifest("privileged", security_context={"privileged": True}), namespace=namespace
    )

    assert created["spec"]["containers"][0]["securityContext"]["privileged"] is True


def test_kubectl_reports_v1_36_3_for_client_and_server(kubectl: Path, kubeconfig: Path) -> None:
    result = subprocess.run(
        [str(kubectl), "version", "--output=json", f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    versions = json.loads(result.stdout)
    assert versions["clientVersion"]["gitVersion"] == f"v{K8S_VERSION}"
    assert versions["serverVersion"]["gitVersion"] == f"v{K8S_VERSION}"


def test_helm_is_v3_and_reaches_the_control_plane(helm: Path, kubeconfig: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
    }

    version = subprocess.run(
        [str(helm), "version", "--short"], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    releases = subprocess.run(
        [str(helm), "list", "--all-namespaces", "--output=json", f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )

    assert version.stdout.startswith("v3.")
    assert json.loads(releases.stdout) == []


# --------------------------------------------------------------------------- the CLI and cleanup


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions `text` (our state directories are unique per test)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            pids.append(int(proc.name))
    return pids


def modelcycle_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelcycle", "local", "controlplane", *args]


@pytest.fixture
def cli_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory for a second control plane, stopped whatever the test does."""
    require_binaries(CONTROL_PLANE_BINARIES)
    state_dir = tmp_path / "cp"
    yield state_dir
    subprocess.run(modelcycle_cli("down", "--purge", "--state-dir", str(state_dir)), timeout=60, check=False)
    for pid in processes_mentioning(str(state_dir)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process checks read /proc (Linux)")
def test_detached_control_plane_outlives_up_and_down_stops_every_process(
    cli_state_dir: Path, kubectl: Path
) -> None:
    up = subprocess.run(
        modelcycle_cli("up", "--state-dir", str(cli_state_dir)), capture_output=True, text=True, timeout=180
    )
    assert up.returncode == 0, up.stderr
    kubeconfig = cli_state_dir / "admin.kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout

    state = read_state(cli_state_dir)
    assert state is not None
    assert [p.component for p in state.processes] == list(CONTROL_PLANE_BINARIES)
    status = subprocess.run(modelcycle_cli("status", "--state-dir", str(cli_state_dir)), timeout=60)
    assert status.returncode == 0
    namespaces = subprocess.run(
        [str(kubectl), "get", "namespace", "default", f"--kubeconfig={kubeconfig}"], timeout=60
    )
    assert namespaces.returncode == 0

    down = subprocess.run(modelcycle_cli("down", "--state-dir", str(cli_state_dir)), timeout=60)

    assert down.returncode == 0
    assert not any(p.is_running() for p in state.processes)
    assert processes_mentioning(str(cli_state_dir)) == []
    after = subprocess.run(modelcycle_cli("status", "--state-dir", str(cli_state_dir)), timeout=60)
    assert after.returncode == 3


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process checks read /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_foreground_control_plane_leaves_no_process_when_its_launcher_is_signalled(
    cli_state_dir: Path, signum: signal.Signals
) -> None:
    launcher = subprocess.Popen(
        modelcycle_cli("up", "--foreground", "--state-dir", str(cli_state_dir)),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As when started in the background of a script: SIGINT arrives ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert launcher.stdout is not None
        for line in launcher.stdout:  # bounded: the launcher gives up after its own --timeout
            if line.startswith("export KUBECONFIG="):
                break
        state = read_state(cli_state_dir)
        assert state is not None and all(p.is_running() for p in state.processes)

        launcher.send_signal(signum)
        launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)

    # SIGKILL gives Python no chance to clean up: the kernel's parent-death signal does it.
    wait_for(lambda: processes_mentioning(str(cli_state_dir)) == [], timeout=30, what="components to exit")


def test_every_crd_in_the_repository_is_established_and_served(
    api_client: client.ApiClient, installed_crds: list[str], namespace: str
) -> None:
    crd_files = sorted(CRD_DIR.glob("*.yaml"))
    if not crd_files:
        pytest.skip("crds/ holds no CRD yet")

    extensions = client.ApiextensionsV1Api(api_client)
    for name in installed_crds:
        crd = extensions.read_custom_resource_definition(name)
        served = next(v.name for v in crd.spec.versions if v.served)
        listed = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
            crd.spec.group, served, namespace, crd.spec.names.plural
        )
        assert cast(dict[str, Any], listed)["items"] == [], name
    assert len(installed_crds) == len(crd_files)
