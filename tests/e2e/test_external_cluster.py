"""The external-cluster mode (MODELCYCLE_E2E_KUBECONFIG), proven on the one external cluster this
machine has: the session's real node (`modelcycle local up --runtime containers`: containerd,
kubelet, kube-proxy, and the operator installed in-cluster by the Helm chart).

A subprocess pytest runs the iris loop of test_loop.py through the external-mode fixtures: no
control plane, node or operator of its own; every pod runs in a container of the real node, from
the images built here. Traffic reaches the serving pods through the API server's pod proxy
(the external mode's default, as on any cluster), and the artifact claims are local volumes in a
directory the node shares (MODELCYCLE_E2E_ARTIFACT_ROOT), since the platform has no provisioner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.realnode import RealNodePlatform

pytestmark = pytest.mark.timeout(1500)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_iris_loop_on_the_real_node_through_the_external_mode(
    real_node_platform: RealNodePlatform, tmp_path: Path
) -> None:
    if os.environ.get("MODELCYCLE_E2E_KUBECONFIG"):
        pytest.skip("already in the external-cluster mode (MODELCYCLE_E2E_KUBECONFIG is set)")
    env = {
        **os.environ,
        "MODELCYCLE_E2E_KUBECONFIG": str(real_node_platform.kubeconfig),
        "MODELCYCLE_E2E_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    env.pop("MODELCYCLE_E2E_TRANSPORT", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(HERE / "test_loop.py"),
            "-k",
            "iris",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert "1 passed" in output, output[-5000:]
