"""The data flywheel end to end, as a user runs it: `modelcycle local demo --scenario concept-drift`
on the session's real node (`modelcycle local up`).

The label relation changes while the inputs do not; v1's live accuracy from feedback falls, the
monitor builds a Dataset of recent labelled traffic joined from the inference logs, retrains on it,
gates v2 against v1 on that traffic and rolls it out while labelled traffic flows (0 failed
requests). The demo prints v1 before and after the change and v2 after, and exits 1 when a target
is missed: v1 falls by at least 15 points, v2 recovers to within 5 points of v1 before.

Then a SIGKILL of a serving pod while it logs: every finished segment still reads.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from modelcycle.kubeclient import Kube
from modelcycle.local import platform
from support.realnode import RealNodePlatform

pytestmark = pytest.mark.timeout(2400)

ACCURACIES = re.compile(
    r"live accuracy \(feedback\):\s+v(\d+) before the change ([0-9.]+)"
    r"\s+v\d+ after ([0-9.]+)\s+v(\d+) after ([0-9.]+)"
)


@pytest.fixture
def real_node(healthy_platform: RealNodePlatform) -> RealNodePlatform:
    """The session's real node (`modelcycle local up`). The demo runs on the local platform, so the
    external-cluster mode skips this file (conftest.LOCAL_PLATFORM_ONLY)."""
    return healthy_platform


def test_concept_drift_demo_retrains_on_recent_labelled_traffic_and_recovers(
    real_node: RealNodePlatform,
) -> None:
    demo = real_node.local("demo", "--scenario", "concept-drift", "--timeout", "600", timeout=2100)
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    found = ACCURACIES.search(demo.stdout)
    assert found, demo.stdout
    v1, v1_before, v1_after, v2, v2_after = (
        int(found[1]),
        float(found[2]),
        float(found[3]),
        int(found[4]),
        float(found[5]),
    )
    assert v2 > v1
    assert v1_before - v1_after >= 0.15, output
    assert v1_before - v2_after <= 0.05, output
    assert "0 failed" in demo.stdout
    assert "retrained on recent traffic" in demo.stdout and "joined traffic rows" in demo.stdout
    assert "holdout rows of Dataset" in demo.stdout


def test_a_sigkilled_serving_pod_loses_at_most_its_unflushed_records(real_node: RealNodePlatform) -> None:
    """After the demo: kill one serving pod (SIGKILL, no grace) and read every segment the
    deployment logged; the Deployment replaces the pod."""
    kube = Kube.from_kubeconfig(real_node.kubeconfig, user_agent="modelcycle-e2e-concept-drift")
    try:
        state = platform.read_state(real_node.root)
        assert state is not None, "no platform state"
        namespace = state.namespace
        pods = kube.get(
            f"/api/v1/namespaces/{namespace}/pods",
            labelSelector="modelcycle.io/owner=concept,app.kubernetes.io/component=serving",
        )["items"]
        assert pods, "no serving pod of the concept deployment"
        victim = pods[0]["metadata"]["name"]
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{victim}", {"gracePeriodSeconds": 0})
        platform.wait_until(
            lambda: all(
                p["metadata"]["name"] != victim
                for p in kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
            ),
            timeout=120,
            what=f"pod {victim} to be gone",
        )
    finally:
        kube.close()
    logs = platform.PlatformLayout(real_node.root).artifacts / "inference-logs" / namespace / "concept"
    segments = [p for p in logs.rglob("*.parquet") if not p.name.startswith(".")]
    assert segments, f"no segments under {logs}"
    for path in segments:
        table = pq.read_table(io.BytesIO(Path(path).read_bytes()))
        assert table.num_rows > 0 and "_request_id" in table.column_names
