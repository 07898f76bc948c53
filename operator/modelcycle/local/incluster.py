"""The operator in the local cluster, installed from charts/modelcycle as a user installs it.

`helm upgrade --install` with the images tools/images/build.sh built here: the operator runs as a
pod of the real node, with the chart's ServiceAccount and least-privilege RBAC, and reaches the
API server through the `kubernetes` Service like any in-cluster client.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from modelcycle.kubeclient import Kube, quote
from modelcycle.local.processes import PlatformError

RELEASE = "modelcycle"
NAMESPACE = "modelcycle-system"
DEPLOYMENT = "modelcycle-operator"
"""The chart's operator Deployment for release `modelcycle` (fullname = the release name)."""


def chart_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "charts" / "modelcycle"


def _image(ref: str) -> dict[str, str]:
    repository, tag = ref.rsplit(":", 1)
    return {"repository": repository, "tag": tag}


def operator_values(
    *,
    operator_image: str,
    workload_image: str,
    workload_namespaces: Sequence[str],
    artifact_claim: str,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Chart values for the local cluster: our images (never pulled: there is no registry), the
    artifact claim the platform binds to its volume, and statistics through the API server's pod
    proxy (the path a production cluster with NetworkPolicies takes)."""
    return {
        "operator": {
            "image": {**_image(operator_image), "pullPolicy": "Never"},
            "monitorStatsAccess": "proxy",
            "extraArgs": list(extra_args),
        },
        "workload": {"image": _image(workload_image)},
        "workloadNamespaces": list(workload_namespaces),
        "artifacts": {"type": "pvc", "pvc": {"create": False, "claimName": artifact_claim}},
    }


def helm_install(
    *, helm: Path, kubeconfig: Path, values: dict[str, Any], timeout: float, chart: Path | None = None
) -> str:
    """`helm upgrade --install` and wait for the operator to be available; returns helm's status line."""
    chart = chart or chart_dir()
    if not (chart / "Chart.yaml").is_file():
        raise PlatformError(f"the chart is not at {chart}: run ModelCycle from a checkout of its repository")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="modelcycle-values-") as file:
        yaml.safe_dump(values, file)
        file.flush()
        argv = [
            str(helm),
            "upgrade",
            "--install",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--kubeconfig",
            str(kubeconfig),
            "--values",
            file.name,
            "--wait",
            "--timeout",
            f"{int(timeout)}s",
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout + 30)
    if result.returncode != 0:
        raise PlatformError(
            f"helm could not install the operator ({result.returncode}): {result.stderr.strip()}\n"
            f"see `kubectl -n {NAMESPACE} describe pods` and "
            f"`kubectl -n {NAMESPACE} logs deploy/{DEPLOYMENT}`"
        )
    return next((line for line in result.stdout.splitlines() if line.startswith("STATUS")), "deployed")


def operator_available(kube: Kube) -> bool:
    deployment = kube.get_or_none(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{quote(DEPLOYMENT)}")
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return (
        status.get("observedGeneration") == generation
        and conditions.get("Available") == "True"
        and status.get("updatedReplicas", 0)
        == status.get("replicas", 0)
        == status.get("readyReplicas", 0)
        >= 1
    )
