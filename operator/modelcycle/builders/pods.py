"""Pod pieces every workload shares: settings, the restricted security context, volumes and env."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ARTIFACTS_MOUNT = "/artifacts"
TERMINATION_LOG = "/dev/termination-log"
WORKLOAD_UID = 10001


@dataclass(frozen=True)
class WorkloadSettings:
    """Operator-wide settings for the pods it creates (from flags, env or Helm values)."""

    image: str = "modelcycle/workload:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    artifact_claim: str = "modelcycle-artifacts"
    """PersistentVolumeClaim, in each namespace, mounted at /artifacts. Empty: use S3 only."""
    s3_uri: str | None = None
    """`s3://bucket/prefix` artifact store instead of the claim."""
    s3_endpoint: str | None = None
    s3_secret: str | None = None
    """Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the S3 store."""
    service_account: str | None = None
    default_resources: dict[str, Any] = field(
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}
    )

    @property
    def store_uri(self) -> str:
        return self.s3_uri or ARTIFACTS_MOUNT


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKLOAD_UID,
        "runAsGroup": WORKLOAD_UID,
        "fsGroup": WORKLOAD_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Passes Pod Security Standard `restricted`; the root filesystem is read-only."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(settings: WorkloadSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "MODELCYCLE_STORE", "value": settings.store_uri},
        {"name": "MODELCYCLE_TERMINATION_LOG", "value": TERMINATION_LOG},
        {"name": "HOME", "value": "/tmp"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if settings.s3_endpoint:
        env.append({"name": "MODELCYCLE_S3_ENDPOINT", "value": settings.s3_endpoint})
    if settings.s3_secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": settings.s3_secret, "key": key}}})
    return env


def workload_pod_spec(
    *,
    settings: WorkloadSettings,
    container_name: str,
    args: list[str],
    image: str | None = None,
    resources: dict[str, Any] | None = None,
    restart_policy: str = "Never",
    extra_volumes: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
    extra_env: list[dict[str, Any]] | None = None,
    ports: list[dict[str, Any]] | None = None,
    probes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod spec running `modelcycle <args>` with the artifact store mounted and nothing else."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if settings.artifact_claim and not settings.s3_uri:
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": settings.artifact_claim}})
        mounts.append({"name": "artifacts", "mountPath": ARTIFACTS_MOUNT})
    container: dict[str, Any] = {
        "name": container_name,
        "image": image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelcycle"],
        "args": args,
        "env": _env(settings) + (extra_env or []),
        "resources": resources or settings.default_resources,
        "securityContext": container_security_context(),
        "volumeMounts": mounts + (extra_mounts or []),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if ports:
        container["ports"] = ports
    container.update(probes or {})
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes + (extra_volumes or []),
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return spec
