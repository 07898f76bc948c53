"""Types shared by every kind: the base model, references, conditions, resources and gates."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label: what Kubernetes requires of namespace names (at most 63 characters)."""
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""RFC 1123 subdomain: what Kubernetes requires of most object names (at most 253 characters)."""
SHA256_HEX = r"^[a-f0-9]{64}$"
# Condition reasons are CamelCase identifiers (Kubernetes API conventions).
REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# One segment of a relative path: not empty, not `.` or `..`, no `/` and no NUL. Written without
# look-ahead because the API server's regular expressions (Go RE2) have none.
_SEGMENT = r"([^/.\x00][^/\x00]*|\.[^/.\x00][^/\x00]*|\.\.[^/\x00]+)"
RELATIVE_PATH = rf"^{_SEGMENT}(/{_SEGMENT})*$"
"""A path that stays inside its root: relative, and no empty, `.` or `..` segment."""
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,62}"
ARTIFACT_URI = rf"^(pvc://|s3://{_BUCKET}/|file:///){_SEGMENT}(/{_SEGMENT})*$"
"""`pvc://<relative path>`, `s3://<bucket>/<key>` or `file:///<path>`, none with a `..` segment."""
_DECIMAL = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = rf"^\+?{_DECIMAL}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_DECIMAL}))?$"
"""A non-negative Kubernetes resource quantity (the syntax of k8s.io/apimachinery resource.Quantity)."""

# Bounds chosen from what Kubernetes allows (object names, label values, annotation sizes).
MAX_NAME = 253
MAX_LABEL = 63
MAX_PATH = 1024
MAX_URI = 2048
MAX_IMAGE = 1024
MAX_QUANTITY = 64
MAX_IDENTIFIER = 256
"""Column, feature and metric names."""
MAX_ITEMS = 1024
"""Most entries of a list of names (features, columns, allowed values)."""
MAX_ENTRIES = 128
"""Most entries of a map of parameters, metrics or gates."""

K8sName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN,
        description="Name of a Kubernetes object: a DNS-1123 subdomain (lowercase letters, digits, "
        "`-` and `.`, at most 253 characters).",
    ),
]
K8sLabelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_LABEL,
        pattern=DNS_LABEL,
        description="A DNS-1123 label: lowercase letters, digits and `-`, at most 63 characters.",
    ),
]
RelativePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PATH,
        pattern=RELATIVE_PATH,
        description="A path relative to its volume: no leading `/`, no empty, `.` or `..` segment.",
    ),
]
ArtifactUri = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URI,
        pattern=ARTIFACT_URI,
        description="`pvc://<path>` on the artifact volume, `s3://<bucket>/<key>` or `file:///<path>`; "
        "no empty, `.` or `..` segment.",
    ),
]
Sha256 = Annotated[str, Field(min_length=64, max_length=64, pattern=SHA256_HEX)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_IDENTIFIER)]
"""A column, feature or metric name."""
Image = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_IMAGE,
        pattern=r"^[^\s]+$",
        description="A container image reference, such as `registry.example.com/team/image:1.2`.",
    ),
]
Quantity = (
    Annotated[int, Field(ge=0)]
    | Annotated[str, Field(min_length=1, max_length=MAX_QUANTITY, pattern=QUANTITY)]
)
"""A Kubernetes resource quantity such as `500m`, `1Gi` or `2`."""
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


def rule(
    expression: str, message: str, *, field_path: str, reason: str = "FieldValueInvalid"
) -> dict[str, Any]:
    """A CEL validation rule that blames `field_path` (relative to the node it sits on, `.minReplicas`).

    reason is one of FieldValueInvalid, FieldValueForbidden, FieldValueRequired, FieldValueDuplicate.
    """
    return {"rule": expression, "message": message, "fieldPath": field_path, "reason": reason}


class KubeModel(BaseModel):
    """Base of every API type: camelCase JSON, unknown fields refused, strict types, docstrings."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        # Strict like the API server: no "100" -> 100 or "yes" -> true coercion.
        strict=True,
        use_attribute_docstrings=True,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(KubeModel):
    """A reference to an object of a known kind in the same namespace."""

    name: K8sName
    """Name of the referenced object."""


class ResourceRequirements(KubeModel):
    """CPU and memory for a container, as in a Pod spec."""

    requests: dict[str, Quantity] | None = Field(default=None, max_length=16)
    """Minimum resources, for example `{cpu: 100m, memory: 256Mi}`."""
    limits: dict[str, Quantity] | None = Field(default=None, max_length=16)
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

    metric: Identifier
    """Metric to compare, such as `accuracy` or `rmse`. Lower is better for rmse, mae, log_loss."""
    tolerance: float = Field(default=0.0, ge=0)
    """How much worse than production the candidate may be and still pass. Defaults to 0."""


class Gates(KubeModel):
    """Quality gates a model version must pass to become Validated."""

    min: dict[str, float] | None = Field(default=None, max_length=MAX_ENTRIES)
    """Lowest acceptable holdout value per metric, for example `{accuracy: 0.9}`."""
    max: dict[str, float] | None = Field(default=None, max_length=MAX_ENTRIES)
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
