"""TrainingRun: train an estimator on a Dataset's snapshot and register a ModelVersion."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from modelcycle.api import common


class ModelRef(common.KubeModel):
    """The model this run produces a version of."""

    name: common.ModelName


class Estimator(common.KubeModel):
    """A scikit-learn estimator given by import path."""

    class_: str = Field(
        alias="class",
        min_length=3,
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$",
    )
    """Import path, such as `sklearn.linear_model.LogisticRegression`. Only allowlisted prefixes
    (by default `sklearn.`) are accepted."""
    params: dict[str, Any] | None = Field(default=None, max_length=common.MAX_ENTRIES)
    """Constructor keyword arguments, such as `{C: 1.0, max_iter: 500}`."""


class PreprocessingStep(common.KubeModel):
    """One preprocessing step, applied in order inside the model pipeline."""

    type: Literal["standardScaler", "minMaxScaler", "robustScaler", "simpleImputer", "oneHotEncoder"]
    """What the step does."""
    columns: list[common.Identifier] | None = Field(default=None, max_length=common.MAX_ITEMS)
    """Columns the step applies to. Defaults to every feature of a fitting type."""
    params: dict[str, Any] | None = Field(default=None, max_length=common.MAX_ENTRIES)
    """Keyword arguments of the scikit-learn transformer."""


class HyperparameterSearch(common.KubeModel):
    """Cross-validated hyperparameter search around the estimator."""

    type: Literal["grid", "random"] = "grid"
    """Grid search tries every combination; random search samples `maxTrials` of them."""
    params: dict[str, Annotated[list[Any], Field(max_length=1000)]] = Field(max_length=common.MAX_ENTRIES)
    """Candidate values per estimator parameter, for example `{C: [0.1, 1, 10]}`."""
    folds: int = Field(default=5, ge=2, le=20)
    """Cross-validation folds. Defaults to 5."""
    max_trials: int = Field(default=20, ge=1, le=1000)
    """Most parameter combinations tried by random search. Defaults to 20."""
    scoring: common.Identifier | None = None
    """scikit-learn scoring name. Defaults to accuracy (classification) or neg_root_mean_squared_error."""


class TrainingRunSpec(common.KubeModel):
    """Desired state of a TrainingRun."""

    dataset_ref: common.LocalObjectReference
    """The Dataset to train on; its current snapshot is used once it is Ready."""
    model: ModelRef
    """The model this run produces a version of."""
    estimator: Estimator
    """The estimator to train."""
    preprocessing: list[PreprocessingStep] | None = Field(default=None, max_length=32)
    """Preprocessing steps before the estimator."""
    split: common.Split | None = None
    """Train/holdout split. Defaults: 20% holdout, seed 42, stratified."""
    search: HyperparameterSearch | None = None
    """Optional hyperparameter search."""
    gates: common.Gates | None = None
    """Quality gates the produced ModelVersion must pass to become Validated."""
    image: common.Image | None = None
    """Container image of the training Job. Defaults to the operator's workload image."""
    resources: common.ResourceRequirements | None = None
    """Resources of the training container."""
    backoff_limit: int = Field(default=1, ge=0, le=10)
    """Retries of the training Job before it counts as failed. Defaults to 1."""
    active_deadline_seconds: int = Field(default=3600, ge=30, le=7 * 24 * 3600)
    """Longest the training Job may run. Defaults to 3600."""


class TrainingRunStatus(common.CommonStatus):
    """Observed state of a TrainingRun."""

    model_config = ConfigDict(protected_namespaces=())

    job_name: str | None = None
    """The training Job."""
    dataset_sha256: str | None = None
    """Snapshot of the Dataset the run trained on."""
    model_version: str | None = None
    """Name of the ModelVersion this run registered."""
    version: int | None = None
    """Version number of the registered ModelVersion."""
    metrics: dict[str, float] | None = None
    """Holdout metrics of the trained model."""
    best_params: dict[str, Any] | None = None
    """Parameters chosen by the hyperparameter search."""
    start_time: str | None = None
    """When training started (RFC 3339): the training Job's start time, recorded once one of its
    pods runs (a run whose pod waits to be scheduled has none yet)."""
    completion_time: str | None = None
    """When training finished (RFC 3339)."""
