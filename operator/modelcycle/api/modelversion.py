"""ModelVersion: an immutable, registered model artifact with lineage, validated before serving."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from modelcycle.api import common


class Artifact(common.KubeModel):
    """The stored model file."""

    uri: common.ArtifactUri
    """Where the model is stored: `pvc://<path>` on the artifact volume, `file:///<path>`, or
    `s3://<bucket>/<key>`. No `..` segment."""
    sha256: common.Sha256
    """SHA-256 of the file, 64 lowercase hex characters; checked before every load."""
    format: Literal["skops"] = "skops"
    """Serialization format. Only skops (loaded with an explicit trusted-type list) is accepted."""


class Lineage(common.KubeModel):
    """Where the model came from."""

    training_run: common.K8sName | None = None
    """The TrainingRun that produced it."""
    dataset: common.K8sName | None = None
    """The Dataset it was trained on."""
    dataset_sha256: common.Sha256 | None = None
    """The Dataset snapshot it was trained on."""
    dataset_uri: common.ArtifactUri | None = None
    """Where that snapshot is stored; validation re-evaluates on its holdout split."""
    profile_uri: common.ArtifactUri | None = None
    """The training data profile, the reference for drift detection."""
    split: common.Split | None = None
    """The split used in training, so validation evaluates on the same holdout rows."""
    params: dict[str, Any] | None = Field(default=None, max_length=common.MAX_ENTRIES)
    """Estimator parameters actually used."""
    image: common.Image | None = None
    """Container image that trained it."""
    base_dataset: common.K8sName | None = None
    """For a version trained on recent traffic (ModelMonitor retrain.traffic): the base Dataset whose
    rows the traffic Dataset mixed in."""
    base_dataset_sha256: common.Sha256 | None = None
    """That base Dataset's snapshot (the `dataset` snapshot holds a sample of it)."""


IMMUTABLE = common.rule(
    "self.spec == oldSelf.spec",
    "ModelVersion spec is immutable; register a new version",
    field_path=".spec",
    reason="FieldValueForbidden",
)
"""A transition rule on the whole object (see kinds.MODEL_VERSION): the spec never changes."""


class ModelVersionSpec(common.KubeModel):
    """A registered model version. Immutable after creation."""

    model_config = ConfigDict(protected_namespaces=())

    model: common.ModelName
    version: int = Field(ge=1)
    """Version number, unique per model in the namespace."""
    artifact: Artifact
    """The stored model file."""
    lineage: Lineage | None = None
    """Where the model came from."""
    metrics: dict[str, float] | None = Field(default=None, max_length=common.MAX_ENTRIES)
    """Holdout metrics reported by training."""
    gates: common.Gates | None = None
    """Quality gates this version must pass to become Validated."""


class ProductionComparison(common.KubeModel):
    """How the candidate compared with the version in production."""

    version: int
    """The production version."""
    metric: str
    """The compared metric."""
    production: float
    """Production's value."""
    candidate: float
    """This version's value."""


class Holdout(common.KubeModel):
    """The rows validation evaluated on: the test split of a Dataset snapshot."""

    dataset: str | None = None
    """The Dataset (a `traffic` Dataset when the version trained on recent traffic)."""
    dataset_sha256: str | None = None
    """Its snapshot."""
    rows: int | None = None
    """Holdout rows."""
    test_fraction: float | None = None
    """The split's test fraction."""
    seed: int | None = None
    """The split's seed."""
    production_evaluated: bool | None = None
    """True when the production version was evaluated on these same rows for mustBeatProduction
    (a version trained on a traffic Dataset); else production's recorded metrics were used."""


class Latency(common.KubeModel):
    """Prediction latency measured during validation."""

    single_row_ms: float | None = None
    """Median time of one single-row predict call, in milliseconds."""
    batch_rows_per_second: float | None = None
    """Rows per second when predicting the holdout set at once."""


class ModelVersionStatus(common.CommonStatus):
    """Observed state of a ModelVersion."""

    job_name: str | None = None
    """The validation Job."""
    metrics: dict[str, float] | None = None
    """Holdout metrics recomputed by validation."""
    reasons: list[str] | None = None
    """Why the version was rejected (or notes on why it passed)."""
    production: ProductionComparison | None = None
    """Comparison with production, when a gate asked for one."""
    latency: Latency | None = None
    """Prediction latency."""
    holdout: Holdout | None = None
    """Which holdout the metrics and the gates used."""
    validated_at: str | None = None
    """When validation finished (RFC 3339)."""
