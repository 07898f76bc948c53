"""`modelcycle local up | status | down --runtime processes` as a user runs them: detached, idempotent,
and nothing left behind, not even the processes of the pods the node started."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelcycle.kubeclient import Kube
from modelcycle.local import platform
from modelcycle.local.controlplane import CONTROL_PLANE_BINARIES, ControlPlaneState, read_state
from modelcycle.local.node_process import Run
from support.cluster import require_binaries

pytestmark = pytest.mark.timeout(600)

NODE_NAME = "modelcycle-cli"
POD_NETWORK = "127.78.0.0/16"
STEPS = ("control plane", "local node", "namespace", "artifact store", "CRDs", "operator")


def web_deployment(namespace: str) -> dict[str, object]:
    """A tiny web server that passes Pod Security `restricted`."""
    container = {
        "name": "web",
        "image": "python",
        "command": ["python", "-m", "http.server", "--bind", "0.0.0.0", "8080"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
        },
    }


def test_up_twice_reuses_everything_and_down_leaves_no_process(tmp_path: Path) -> None:
    require_binaries(CONTROL_PLANE_BINARIES)
    root = tmp_path / "local"

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelcycle", "local", *args, "--root", str(root)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    up_args = ("up", "--runtime", "processes", "--node-name", NODE_NAME, "--pod-network", POD_NETWORK)
    records: list[platform.cp.ProcessRecord] = []
    runs: list[Run] = []
    try:
        up = local(*up_args)
        assert up.returncode == 0, up.stdout + up.stderr
        assert all(step in up.stdout for step in STEPS), up.stdout
        assert f"export KUBECONFIG={root / 'controlplane' / 'admin.kubeconfig'}" in up.stdout
        state = platform.read_state(root)
        cp_state = read_state(root / "controlplane")
        assert state is not None and isinstance(cp_state, ControlPlaneState)
        records = [*cp_state.processes, *state.processes]
        assert {r.component for r in state.processes} == {platform.NODE, platform.OPERATOR}

        status = local("status")
        assert status.returncode == 0, status.stdout
        assert "memory (RSS)" in status.stdout

        again = local(*up_args)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already running") == 3, again.stdout
        state_again = platform.read_state(root)
        assert state_again is not None
        assert [p.pid for p in state_again.processes] == [p.pid for p in state.processes]

        kube = Kube.from_kubeconfig(Path(state.kubeconfig))
        try:
            kube.create(
                f"/apis/apps/v1/namespaces/{state.namespace}/deployments", web_deployment(state.namespace)
            )
            deadline = time.monotonic() + 120
            while not (runs := platform.pod_runs(root / "node")):
                assert time.monotonic() < deadline, "the node never started the web pod"
                time.sleep(0.5)
        finally:
            kube.close()
    finally:
        down = local("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "(1 pod(s))" in down.stdout, down.stdout
    assert records, "up recorded its processes"
    left = [r for r in records if r.is_running()]
    left_runs = [r for r in runs if r.wrapper_alive()]
    for record in left:  # never leave a failed test's processes behind
        platform.stop_process(record, timeout=0, kill=True)
    for run in left_runs:
        run.kill()
    assert not left and not left_runs, f"still running after down: {left} {left_runs}"
    assert platform.read_state(root) is None
    status = local("status")
    assert status.returncode == 3, status.stdout
