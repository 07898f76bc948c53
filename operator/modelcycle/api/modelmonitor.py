"""ModelMonitor: watch a deployment's live traffic for drift and trigger retraining."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelcycle.api import common, dataset


class DriftSettings(common.KubeModel):
    """How drift is measured."""

    method: Literal["psi", "ks", "chi2", "jsd"] = "ks"
    """`ks` (numeric) / `chi2` (categorical) are statistical tests and threshold is the significance
    level, corrected across features; `psi` and `jsd` are effect sizes and threshold is the score
    above which a feature drifts. Defaults to ks."""
    threshold: float = Field(default=0.05, gt=0, le=10)
    """Significance level (ks, chi2) or score limit (psi, jsd). Defaults to 0.05."""
    min_samples: int = Field(default=200, ge=10)
    """No verdict below this many live rows. Defaults to 200."""
    features: list[common.Identifier] | None = Field(default=None, max_length=common.MAX_ITEMS)
    """Features to watch. Defaults to all."""


class PerformanceSettings(common.KubeModel):
    """Live quality from feedback labels posted to the model server. A verdict needs at least
    `drift.minSamples` labelled rows across the replicas."""

    metric: Literal["accuracy", "f1_macro", "rmse", "mae", "r2"]
    """Metric computed from predictions and feedback labels."""
    min: float | None = None
    """Lowest acceptable value (accuracy, f1_macro, r2)."""
    max: float | None = None
    """Highest acceptable value (rmse, mae)."""


class RetrainTraffic(common.KubeModel):
    """Retrain on recent labelled traffic (the deployment must log it: ModelDeployment.spec.logging)
    plus a share of the base data. On a trigger the monitor first creates a Dataset
    `<run>-traffic` with a `traffic` source over this window, merged with the base Dataset (the one
    the served version trained on, or `datasetRef`) and with its target, features, schema and
    validation; the retraining run is created on that Dataset once its snapshot is Ready. A window
    with fewer than `minLabelledRows` labelled rows creates no run (reason TooFewLabelledRows)."""

    window: dataset.TrafficWindow | None = None
    """Which requests: the last seconds or the last rows. Unset: every logged request."""
    base_share: float = Field(default=0.3, ge=0, lt=1)
    """Share of the training rows taken from the base Dataset (0: traffic only). Defaults to 0.3."""
    min_labelled_rows: int = Field(default=100, ge=1, le=100_000_000)
    """Fewest labelled rows the window must hold for a run. Defaults to 100."""


class RetrainSettings(common.KubeModel):
    """Automatic retraining when drift or a performance drop is detected."""

    enabled: bool = False
    """Create a TrainingRun when drift is detected. Defaults to false."""
    cooldown_seconds: int = Field(default=3600, ge=0)
    """Least time between two retraining runs. Defaults to 3600."""
    max_concurrent: int = Field(default=1, ge=1, le=10)
    """Most retraining runs in progress at once. Defaults to 1."""
    dataset_ref: common.LocalObjectReference | None = None
    """Train on this Dataset (fresh data) instead of the one the served version used. With
    `traffic`, the base data mixed with the traffic."""
    traffic: RetrainTraffic | None = None
    """Train on recent labelled traffic plus a share of the base data."""


class ModelMonitorSpec(common.KubeModel):
    """Desired state of a ModelMonitor."""

    deployment_ref: common.LocalObjectReference
    """The ModelDeployment to watch."""
    drift: DriftSettings | None = None
    """Drift detection settings. Defaults: ks at 0.05, 200 samples minimum."""
    performance: PerformanceSettings | None = None
    """Live performance check (needs feedback labels)."""
    interval_seconds: int = Field(default=60, ge=5, le=86400)
    """How often live statistics are gathered. Defaults to 60."""
    retrain: RetrainSettings | None = None
    """Automatic retraining."""


class FeatureDrift(common.KubeModel):
    """Drift of one feature."""

    name: str
    """Feature name."""
    score: float
    """Score of the configured method."""
    p_value: float | None = None
    """p-value of the statistical test, corrected for multiple testing."""
    psi: float | None = None
    """Population stability index, as an effect size."""
    drifted: bool
    """Whether the feature drifted."""


class ModelMonitorStatus(common.CommonStatus):
    """Observed state of a ModelMonitor."""

    served_version: int | None = None
    """The version whose traffic was checked."""
    last_check_time: str | None = None
    """When live statistics were last gathered (RFC 3339)."""
    window_size: int | None = None
    """Live rows the last verdict was computed on."""
    features: list[FeatureDrift] | None = None
    """Per-feature drift of the last check."""
    drifted_features: list[str] | None = None
    """Names of the drifted features."""
    performance: dict[str, float] | None = None
    """Live metric value and sample count from feedback labels."""
    last_retrain_time: str | None = None
    """When the last retraining run was created (RFC 3339)."""
    retrain_runs: list[str] | None = None
    """Retraining runs this monitor created, newest last (at most 20)."""
