"""tools/kind/e2e.sh (`make e2e-kind`), run with recording stand-ins for kind, docker, kubectl,
helm and pytest: this machine has no Docker, so the real kind path runs only in the e2e-kind
workflow. These tests pin what the script hands to each tool."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "kind" / "e2e.sh"
TOOLS = ("kind", "docker", "kubectl", "helm", "pytest")

RECORDER = """#!/usr/bin/env python3
import json, os, sys
env = {k: v for k, v in os.environ.items() if k.startswith(("MODELCYCLE_E2E_", "KUBECONFIG"))}
with open(os.environ["CALLS"], "a") as log:
    log.write(json.dumps({"tool": os.path.basename(sys.argv[0]), "args": sys.argv[1:], "env": env}) + "\\n")
if sys.argv[1:3] == ["get", "clusters"]:
    print(os.environ.get("EXISTING_CLUSTER", ""))
if sys.argv[1:2] == ["exec"]:
    sys.exit(int(os.environ.get("MOUNT_MISSING", "0")))
"""


def run_script(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        (bin_dir / tool).write_text(RECORDER)
        (bin_dir / tool).chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    result = subprocess.run(
        ["bash", str(SCRIPT), "-k", "iris"],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CALLS": str(calls),
            "CACHE": str(tmp_path / "cache"),
            "KIND_CLUSTER": "mc-test",
            "HELM": "helm",
            "KUBECTL": "kubectl",
            "PYTEST": "pytest",
            "OPERATOR_REPO": "modelcycle/operator",
            "WORKLOAD_REPO": "modelcycle/workload",
            "IMAGE_TAG": "9.9.9",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return result, recorded


def calls_of(recorded: list[dict], tool: str) -> list[list[str]]:
    return [c["args"] for c in recorded if c["tool"] == tool]


def test_new_cluster_shares_the_artifact_directory_at_the_same_path_and_tests_use_it(tmp_path: Path) -> None:
    result, recorded = run_script(tmp_path)
    assert result.returncode == 0, result.stderr
    artifacts = tmp_path / "cache" / "kind-mc-test-artifacts"
    (create,) = [a for a in calls_of(recorded, "kind") if a[:2] == ["create", "cluster"]]
    config = yaml.safe_load(Path(create[create.index("--config") + 1]).read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (node,) = config["nodes"]
    assert node["extraMounts"] == [{"hostPath": str(artifacts), "containerPath": str(artifacts)}]
    assert artifacts.is_dir()

    (pytest_call,) = [c for c in recorded if c["tool"] == "pytest"]
    kubeconfig = str(tmp_path / "cache" / "kind-mc-test.kubeconfig")
    assert pytest_call["args"] == ["tests/e2e", "-k", "iris"]
    assert pytest_call["env"] == {
        "KUBECONFIG": kubeconfig,
        "MODELCYCLE_E2E_KUBECONFIG": kubeconfig,
        "MODELCYCLE_E2E_ARTIFACT_ROOT": str(artifacts),
    }


def test_images_are_loaded_and_the_chart_installed_with_them_before_the_tests(tmp_path: Path) -> None:
    result, recorded = run_script(tmp_path)
    assert result.returncode == 0, result.stderr
    assert [
        "load",
        "docker-image",
        "modelcycle/operator:9.9.9",
        "modelcycle/workload:9.9.9",
        "--name",
        "mc-test",
    ] in (calls_of(recorded, "kind"))
    (helm,) = calls_of(recorded, "helm")
    assert helm[:3] == ["upgrade", "--install", "modelcycle"] and "--wait" in helm
    sets = [helm[i + 1] for i, a in enumerate(helm) if a == "--set"]
    assert sets == [
        "operator.image.repository=modelcycle/operator",
        "operator.image.tag=9.9.9",
        "workload.image.repository=modelcycle/workload",
        "workload.image.tag=9.9.9",
    ]
    order = [c["tool"] for c in recorded if c["tool"] in ("helm", "pytest")]
    assert order == ["helm", "pytest"]


@pytest.mark.parametrize(
    ("mount_missing", "outcome"),
    [("0", "reused"), ("1", "refused")],
    ids=["existing-cluster-with-the-mount", "existing-cluster-without-the-mount"],
)
def test_an_existing_cluster_is_reused_only_when_it_shares_the_directory(
    tmp_path: Path, mount_missing: str, outcome: str
) -> None:
    result, recorded = run_script(tmp_path, EXISTING_CLUSTER="mc-test", MOUNT_MISSING=mount_missing)
    assert not [a for a in calls_of(recorded, "kind") if a[:1] == ["create"]]
    if outcome == "reused":
        assert result.returncode == 0, result.stderr
        assert calls_of(recorded, "pytest")
    else:
        assert result.returncode == 1
        assert "delete it first: kind delete cluster --name mc-test" in result.stderr
        assert not calls_of(recorded, "helm") and not calls_of(recorded, "pytest")
