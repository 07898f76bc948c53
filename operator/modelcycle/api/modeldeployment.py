"""ModelDeployment: serve a model version over the Open Inference Protocol v2 and roll out new ones."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from modelcycle.api import common


class Canary(common.KubeModel):
    """Canary rollout settings."""

    weight: int = Field(default=10, ge=1, le=99)
    """Percentage of replicas (and so of traffic) on the new version during the canary. Defaults to 10."""
    promote_after_seconds: int = Field(default=60, ge=0, le=86400)
    """How long the canary must stay healthy before it is promoted. Defaults to 60."""


class Strategy(common.KubeModel):
    """How a new version replaces the served one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # `type` is optional (Rolling when unset) and CEL fails on an absent field, so the
                # rule tests for it rather than reading it blindly.
                {
                    "rule": "!has(self.canary) || (has(self.type) && self.type == 'Canary')",
                    "message": "canary settings are only allowed with type Canary",
                }
            ]
        }
    )

    type: Literal["Rolling", "Canary"] = "Rolling"
    """Rolling replaces pods one by one; Canary runs the new version beside the old one first."""
    canary: Canary | None = None
    """Canary settings (type Canary only)."""


class Autoscaling(common.KubeModel):
    """A HorizontalPodAutoscaler for the serving pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # minReplicas is optional (1 when unset, never above maxReplicas >= 1).
                {
                    "rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must not exceed maxReplicas",
                }
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=1, le=100)
    """Fewest replicas. Defaults to 1."""
    max_replicas: int = Field(ge=1, le=100)
    """Most replicas."""
    target_cpu: int = Field(default=70, ge=1, le=100)
    """Target average CPU utilisation in percent. Defaults to 70."""


class Batching(common.KubeModel):
    """Adaptive micro-batching of concurrent requests in the model server."""

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    """Most rows gathered into one predict call. Defaults to 64."""
    max_delay_microseconds: int = Field(default=2000, ge=0, le=1_000_000)
    """Longest a request waits for batch-mates. Defaults to 2000."""


class ModelDeploymentSpec(common.KubeModel):
    """Desired state of a ModelDeployment."""

    model_config = ConfigDict(protected_namespaces=())

    model: common.ModelName
    version: int | str = Field(
        default="latest",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? self >= 1 : self == 'latest'",
                    "message": "version must be a positive integer or 'latest'",
                }
            ]
        },
    )
    """A pinned version number, or `latest` for the newest Validated version. Defaults to latest."""
    replicas: int = Field(default=1, ge=0, le=100)
    """Serving replicas (ignored while autoscaling is set). Defaults to 1."""
    strategy: Strategy | None = None
    """How new versions are rolled out. Defaults to Rolling."""
    autoscaling: Autoscaling | None = None
    """Scale replicas on CPU with a HorizontalPodAutoscaler."""
    batching: Batching | None = None
    """Micro-batching settings of the model server."""
    resources: common.ResourceRequirements | None = None
    """Resources of each serving container."""
    image: str | None = None
    """Container image of the model server. Defaults to the operator's workload image."""
    progress_deadline_seconds: int = Field(default=300, ge=10, le=3600)
    """How long a new version's pods may take to become ready before the rollout is rolled back."""


class RolloutRecord(common.KubeModel):
    """One entry of the rollout history."""

    version: int
    """The version rolled out."""
    outcome: Literal["Serving", "RolledBack", "Superseded", "InProgress"]
    """How the rollout ended."""
    at: str
    """When (RFC 3339)."""
    message: str | None = None
    """Details, such as why it was rolled back."""


class ModelDeploymentStatus(common.CommonStatus):
    """Observed state of a ModelDeployment."""

    model_config = ConfigDict(protected_namespaces=())

    served_version: int | None = None
    """The version taking all stable traffic."""
    model_version: str | None = None
    """Name of the served ModelVersion."""
    canary_version: int | None = None
    """The version under canary, while one runs."""
    replicas: int | None = None
    """Serving pods desired."""
    ready_replicas: int | None = None
    """Serving pods ready."""
    url: str | None = None
    """In-cluster base URL of the Open Inference Protocol endpoint."""
    history: list[RolloutRecord] | None = Field(default=None, max_length=20)
    """Recent rollouts, newest last (at most 20)."""
