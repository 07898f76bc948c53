"""ModelDeployment: serve a model version over the Open Inference Protocol v2 and roll out new ones."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from modelcycle.api import common

# The CEL rules below are what the API server enforces; the validators next to them mirror them for
# specs that reach the models some other way (tests/unit/test_api_models.py keeps them in step).
_CANARY_ONLY = "canary settings are only allowed with type Canary"
_MIN_NOT_ABOVE_MAX = "minReplicas must not exceed maxReplicas"
_VERSION = "version must be a positive integer or 'latest'"


class Canary(common.KubeModel):
    """Canary rollout settings."""

    weight: int = Field(default=10, ge=1, le=99)
    """Target percentage of the serving pods on the new version during the canary. Without a gateway
    the Service spreads requests over ready pods evenly, so this is also the share of requests. The
    replicas are split between the two versions as close to it as their number allows (3 replicas at
    10 give 1 of 3 pods, 33%; one replica gets one canary pod beside it, 50%); status.canaryShare
    reports the share in effect. Defaults to 10."""
    promote_after_seconds: int = Field(default=60, ge=0, le=86400)
    """How long the canary must stay healthy before it is promoted. Defaults to 60."""


class Strategy(common.KubeModel):
    """How a new version replaces the served one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # `type` is optional (Rolling when unset) and CEL fails on an absent field, so the
                # rule tests for it rather than reading it blindly.
                common.rule(
                    "!has(self.canary) || (has(self.type) && self.type == 'Canary')",
                    _CANARY_ONLY,
                    field_path=".canary",
                    reason="FieldValueForbidden",
                )
            ]
        }
    )

    type: Literal["Rolling", "Canary"] = "Rolling"
    """Rolling replaces pods one by one; Canary runs the new version beside the old one first."""
    canary: Canary | None = None
    """Canary settings (type Canary only)."""

    @field_validator("canary")
    @classmethod
    def _canary_only_with_canary_type(cls, canary: Canary | None, info: ValidationInfo) -> Canary | None:
        if canary is not None and info.data.get("type") != "Canary":
            raise ValueError(_CANARY_ONLY)
        return canary


class Autoscaling(common.KubeModel):
    """A HorizontalPodAutoscaler for the serving pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # minReplicas is optional (1 when unset, never above maxReplicas >= 1).
                common.rule(
                    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    _MIN_NOT_ABOVE_MAX,
                    field_path=".minReplicas",
                )
            ]
        }
    )

    # maxReplicas first: the validator of minReplicas compares with it.
    max_replicas: int = Field(ge=1, le=100)
    """Most replicas."""
    min_replicas: int = Field(default=1, ge=1, le=100)
    """Fewest replicas. Defaults to 1."""
    target_cpu: int = Field(default=70, ge=1, le=100)
    """Target average CPU utilisation in percent. Defaults to 70."""

    @field_validator("min_replicas")
    @classmethod
    def _min_not_above_max(cls, min_replicas: int, info: ValidationInfo) -> int:
        maximum = info.data.get("max_replicas")
        if maximum is not None and min_replicas > maximum:
            raise ValueError(_MIN_NOT_ABOVE_MAX)
        return min_replicas


class Batching(common.KubeModel):
    """Adaptive micro-batching of concurrent requests in the model server."""

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    """Most rows gathered into one predict call. Defaults to 64."""
    max_delay_microseconds: int = Field(default=2000, ge=0, le=1_000_000)
    """Longest a request waits for batch-mates. Defaults to 2000."""


class InferenceLogging(common.KubeModel):
    """Log served requests and feedback labels to the artifact store as Parquet segments, for a
    Dataset with a `traffic` source (docs/serving.md, "Inference logging"). Inference never waits for
    the store: when it is slow or full, records are dropped and counted on /metrics."""

    sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of requests logged, chosen by request id so every replica agrees (0 to 1; 0 turns
    logging off). Feedback labels are always logged while this is above 0. Defaults to 1."""
    flush_interval_seconds: int = Field(default=10, ge=1, le=3600)
    """Write a segment at least this often (seconds). Defaults to 10."""
    max_segment_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    """Most rows per segment: a segment is written as soon as this many rows wait. Defaults to 10000."""
    max_buffer_rows: int = Field(default=100_000, ge=1, le=10_000_000)
    """Most rows each server holds in memory waiting for the store; more are dropped and counted.
    Defaults to 100000."""


class ModelDeploymentSpec(common.KubeModel):
    """Desired state of a ModelDeployment."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "x-kubernetes-validations": [
                # On the spec, not on the field, so the rule can carry a fieldPath like every other.
                common.rule(
                    "!has(self.version) || (type(self.version) == int ? self.version >= 1 "
                    ": self.version == 'latest')",
                    _VERSION,
                    field_path=".version",
                )
            ]
        },
    )

    model: common.ModelName
    version: int | Annotated[str, Field(max_length=16)] = "latest"
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
    image: common.Image | None = None
    """Container image of the model server. Defaults to the operator's workload image."""
    logging: InferenceLogging | None = None
    """Log what is served and the feedback labels, for retraining on recent traffic. Off when unset."""
    progress_deadline_seconds: int = Field(default=300, ge=10, le=3600)
    """How long a new version's pods may take to become ready before the rollout is rolled back."""

    @field_validator("version")
    @classmethod
    def _positive_or_latest(cls, version: int | str) -> int | str:
        if (isinstance(version, int) and version >= 1) or version == "latest":
            return version
        raise ValueError(_VERSION)


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
    canary_share: int | None = None
    """Percentage of the serving pods on the canary version, and so of the requests, while one runs."""
    failed_version: int | None = None
    """The version whose rollout was rolled back (see the Degraded condition). It is not tried again
    until the spec changes or another version becomes the target."""
    replicas: int | None = None
    """Serving pods desired."""
    ready_replicas: int | None = None
    """Serving pods ready."""
    url: str | None = None
    """In-cluster base URL of the Open Inference Protocol endpoint."""
    history: list[RolloutRecord] | None = Field(default=None, max_length=20)
    """Recent rollouts, newest last (at most 20)."""
