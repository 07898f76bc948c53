"""Types shared by every kind: the base model, references, conditions, resources and gates."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SHA256_HEX = r"^[a-f0-9]{64}$"
# Condition reasons are CamelCase identifiers (Kubernetes API conventions).
REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

ModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        pattern=DNS_LABEL,
        description="Name of the model: a DNS label of at most 40 characters. Versions of one model "
        "share it across TrainingRuns, ModelVersions and ModelDeployments.",
    ),
]
Quantity = str | int
"""A Kubernetes resource quantity such as `500m`, `1Gi` or `2`."""


class KubeModel(BaseModel):
    """Base of every API type: camelCase JSON, unknown fields refused, descriptions from docstrings."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(KubeModel):
    """A reference to an object of a known kind in the same namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the referenced object."""


class ResourceRequirements(KubeModel):
    """CPU and memory for a container, as in a Pod spec."""

    requests: dict[str, Quantity] | None = None
    """Minimum resources, for example `{cpu: 100m, memory: 256Mi}`."""
    limits: dict[str, Quantity] | None = None
    """Maximum resources, for example `{cpu: "1", memory: 1Gi}`."""


class Condition(KubeModel):
    """One aspect of the object's state, in the shape of metav1.Condition."""

    type: str = Field(min_length=1, max_length=316)
    """Type of the condition in CamelCase, such as `Ready`, `Stalled` or `Validated`."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(min_length=1, max_length=1024, pattern=REASON)
    """Machine-readable CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable explanation: what happened and what to do about it."""
    last_transition_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The `.metadata.generation` this condition was computed from."""


class CommonStatus(KubeModel):
    """Fields every kind's status has (kstatus-compatible)."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `.metadata.generation` the operator last reconciled."""
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Current conditions: `Ready` always, `Reconciling`/`Stalled` when they apply, and kind-specific ones."""
    phase: str | None = None
    """A one-word summary for humans. Tools should read `conditions` instead."""


class MustBeatProduction(KubeModel):
    """Require the candidate to match or beat the version currently in production."""

    metric: str = Field(min_length=1)
    """Metric to compare, such as `accuracy` or `rmse`. Lower is better for rmse, mae, log_loss."""
    tolerance: float = Field(default=0.0, ge=0)
    """How much worse than production the candidate may be and still pass. Defaults to 0."""


class Gates(KubeModel):
    """Quality gates a model version must pass to become Validated."""

    min: dict[str, float] | None = None
    """Lowest acceptable holdout value per metric, for example `{accuracy: 0.9}`."""
    max: dict[str, float] | None = None
    """Highest acceptable holdout value per metric, for example `{rmse: 60}`."""
    must_beat_production: MustBeatProduction | None = None
    """Compare with the version a ModelDeployment serves for the same model, when there is one."""


class Split(KubeModel):
    """How rows are split into training and holdout sets. Deterministic for a given seed."""

    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    """Fraction of rows held out for evaluation. Defaults to 0.2."""
    seed: int = Field(default=42, ge=0)
    """Random seed of the split (and of estimators that take `random_state`). Defaults to 42."""
    stratify: bool = True
    """Keep class proportions in both sets (classification only). Defaults to true."""
