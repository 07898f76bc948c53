"""The external-cluster mode (MODELCYCLE_E2E_KUBECONFIG), proven on the one external cluster this
machine has: a detached `modelcycle local up` platform with its own operator and node.

A subprocess pytest runs the iris loop of test_loop.py through the external-mode fixtures: no
control plane, node or operator of its own. The platform's pod IPs are loopback addresses, which
the API server refuses to proxy to, so traffic goes direct (MODELCYCLE_E2E_TRANSPORT=direct), and
the platform has no StorageClass provisioner, so the artifact claims are local volumes in a
directory the node shares (MODELCYCLE_E2E_ARTIFACT_ROOT). On kind, both default otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcycle.local.controlplane import CONTROL_PLANE_BINARIES, StateLayout
from support.cluster import missing_prerequisite, require_binaries

pytestmark = pytest.mark.timeout(1500)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# Beside the local mode's platform (127.77.0.0/16) and a user's `local up` (127.1.0.0/16).
POD_NETWORK = "127.78.0.0/16"
NODE_NAME = "modelcycle-e2e-external"


def _modelcycle(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle", "local", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def detached_platform(tmp_path: Path) -> Iterator[Path]:
    """`modelcycle local up` in a directory of its own; yields its admin kubeconfig."""
    if os.environ.get("MODELCYCLE_E2E_KUBECONFIG"):
        pytest.skip("already in the external-cluster mode (MODELCYCLE_E2E_KUBECONFIG is set)")
    require_binaries(CONTROL_PLANE_BINARIES)
    if not sys.platform.startswith("linux"):
        missing_prerequisite("the local node needs Linux")
    root = tmp_path / "platform"
    up = _modelcycle(
        "up", "--root", str(root), "--node-name", NODE_NAME, "--pod-network", POD_NETWORK, timeout=300
    )
    try:
        assert up.returncode == 0, f"modelcycle local up failed:\n{up.stdout}\n{up.stderr}"
        yield StateLayout(root / "controlplane").admin_kubeconfig
    finally:
        down = _modelcycle("down", "--root", str(root), "--purge", timeout=180)
        assert down.returncode == 0, f"modelcycle local down failed:\n{down.stdout}\n{down.stderr}"


def test_iris_loop_on_an_external_cluster(detached_platform: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODELCYCLE_E2E_KUBECONFIG": str(detached_platform),
        "MODELCYCLE_E2E_TRANSPORT": "direct",
        "MODELCYCLE_E2E_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
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
