"""The local platform's pure pieces: endpoint selection, the artifact volume, the demo's manifests,
and the state file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelcycle.local import demo, platform, traffic

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = {
    "metadata": {"name": "iris"},
    "spec": {"selector": {"app": "iris"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
}


def pod(
    name: str,
    ip: str | None = "127.1.0.2",
    *,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    deleting: bool = False,
    phase: str = "Running",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels if labels is not None else {"app": "iris"}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_endpoints_from_pods_follow_the_endpointslice_controller_rules() -> None:
    pods = [
        pod("a", "127.1.0.2"),
        pod("b", "127.1.0.3", ready=False),
        pod("c", "127.1.0.4", deleting=True),
        pod("d", "127.1.0.5", labels={"app": "other"}),
        pod("e", None),
        pod("f", "127.1.0.6", phase="Succeeded"),
        pod("g", "127.1.0.7", labels={"app": "iris", "modelcycle.io/version": "3"}),
    ]
    found = traffic.endpoints_from_pods(SERVICE, pods, port_name="http")
    assert found == [
        traffic.Endpoint("a", "127.1.0.2", 8080, None),
        traffic.Endpoint("g", "127.1.0.7", 8080, "3"),
    ]


def test_a_numeric_target_port_is_used_as_is() -> None:
    service = {"spec": {"selector": {"app": "iris"}, "ports": [{"port": 80, "targetPort": 9000}]}}
    assert [e.port for e in traffic.endpoints_from_pods(service, [pod("a")], port_name=None)] == [9000]


def test_endpoints_from_slices_treat_unset_ready_as_ready() -> None:
    slices = [
        {
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "targetRef": {"name": "a"}},
                {"addresses": ["10.0.0.2"], "conditions": {}, "targetRef": {"name": "b"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False}, "targetRef": {"name": "c"}},
            ],
        }
    ]
    found = traffic.endpoints_from_slices(slices, port_name="http", versions={"a": "1"})
    assert [(e.pod, e.ip, e.port, e.version) for e in found] == [
        ("a", "10.0.0.1", 8080, "1"),
        ("b", "10.0.0.2", 8080, None),
    ]


def test_an_inference_body_is_one_fp64_matrix() -> None:
    body = traffic.infer_body([[1, 2], [3, 4.5]], outputs=("predict",), request_id="r1")
    assert body == {
        "inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.5]}],
        "outputs": [{"name": "predict"}],
        "id": "r1",
    }


def test_the_artifact_volume_is_local_with_node_affinity_and_prebound() -> None:
    pv = platform.artifact_volume(
        name="modelcycle-artifacts-demo", path=Path("/data/a"), node_name="n1", namespace="demo", claim="c"
    )
    spec = pv["spec"]
    assert spec["local"] == {"path": "/data/a"}
    terms = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}
    ]
    assert spec["claimRef"]["namespace"] == "demo" and spec["claimRef"]["name"] == "c"
    assert spec["persistentVolumeReclaimPolicy"] == "Retain" and spec["storageClassName"] == ""
    pvc = platform.artifact_claim(namespace="demo", claim="c", volume="modelcycle-artifacts-demo")
    assert pvc["spec"]["volumeName"] == "modelcycle-artifacts-demo" and pvc["spec"]["storageClassName"] == ""


def test_the_crds_are_the_generated_ones() -> None:
    generated = sorted(p.read_text() for p in (REPO_ROOT / "crds").glob("*.yaml"))
    rendered = sorted(yaml.safe_dump(m, sort_keys=False) for m in platform.crd_manifests())
    assert [yaml.safe_load(t) for t in generated] == [yaml.safe_load(t) for t in rendered]


def test_the_demo_changes_only_the_monitor_timing() -> None:
    examples = REPO_ROOT / "examples" / "iris"
    original = {
        d["kind"]: d for p in sorted(examples.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    }
    applied = {d["kind"]: d for d in demo.demo_manifests(examples)}
    assert set(applied) == set(original)
    for kind, doc in applied.items():
        if kind != "ModelMonitor":
            assert doc == original[kind]
    monitor, before = applied["ModelMonitor"]["spec"], original["ModelMonitor"]["spec"]
    assert monitor["intervalSeconds"] == demo.MONITOR_INTERVAL_SECONDS
    assert monitor["retrain"]["cooldownSeconds"] == demo.MONITOR_COOLDOWN_SECONDS
    assert {k: v for k, v in monitor.items() if k not in ("intervalSeconds", "retrain")} == {
        k: v for k, v in before.items() if k not in ("intervalSeconds", "retrain")
    }


def test_the_state_file_round_trips(tmp_path: Path) -> None:
    state = platform.PlatformState(
        root=str(tmp_path),
        kubeconfig="/k",
        server="https://127.0.0.1:1",
        controlplane_started_at=1.0,
        namespace="modelcycle-demo",
        artifact_claim="modelcycle-artifacts",
        node_name="n",
        started_at=3.0,
        timings={"total": 1.5},
    )
    platform._write_state(platform.PlatformLayout(tmp_path), state)
    assert platform.read_state(tmp_path) == state


def test_a_state_file_of_an_older_release_still_reads(tmp_path: Path) -> None:
    """`down` after an upgrade: the fields this release no longer records are ignored."""
    layout = platform.PlatformLayout(tmp_path)
    layout.state_file.write_text(
        '{"root": "/r", "kubeconfig": "/k", "server": "https://127.0.0.1:1", "controlplane_started_at": 1.0,'
        ' "namespace": "ns", "artifact_claim": "c", "node_name": "n", "started_at": 2.0,'
        ' "pod_network": "127.1.0.0/16", "processes": [], "runtime": "processes"}'
    )
    state = platform.read_state(tmp_path)
    assert state is not None and (state.namespace, state.node_name) == ("ns", "n")
