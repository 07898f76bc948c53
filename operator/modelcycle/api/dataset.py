"""Dataset: a versioned, validated and profiled snapshot of training data."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from modelcycle.api import common

BuiltinName = Literal["iris", "wine", "breast_cancer", "diabetes", "digits"]


class BuiltinSource(common.KubeModel):
    """A data set that ships with scikit-learn."""

    name: BuiltinName
    """One of iris, wine, breast_cancer, diabetes, digits. The target column is `target`."""


class S3Source(common.KubeModel):
    """An object in S3-compatible storage."""

    uri: str = Field(max_length=common.MAX_URI, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,62}/.+$")
    """Object URI, `s3://bucket/key`."""
    endpoint: str | None = Field(default=None, max_length=common.MAX_URI, pattern=r"^https?://[^\s]+$")
    """Endpoint URL for S3-compatible stores such as MinIO. Defaults to AWS."""
    secret_ref: common.LocalObjectReference | None = None
    """Secret with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`."""


class PvcSource(common.KubeModel):
    """A file on a PersistentVolumeClaim in the same namespace."""

    claim_name: common.K8sName
    """Name of the PersistentVolumeClaim."""
    path: common.RelativePath
    """Path of the file relative to the volume root (no leading `/`, no `..`)."""


class ConfigMapSource(common.KubeModel):
    """A CSV file kept in a ConfigMap key (small data sets only: ConfigMaps hold at most 1 MiB)."""

    name: common.K8sName
    """Name of the ConfigMap."""
    key: str = Field(min_length=1, max_length=common.MAX_NAME, pattern=r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$")
    """Key holding the file contents: letters, digits, `-`, `_` and `.`; not `.`, not starting `..`."""


_ONE_TRAFFIC_ORIGIN = "exactly one of deployment and model must be set"
_ONE_WINDOW = "at most one of lastSeconds and lastRows may be set"


class TrafficWindow(common.KubeModel):
    """Which logged requests count: the recent ones by time or by number. Unset: all of them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                common.rule(
                    "!(has(self.lastSeconds) && has(self.lastRows))",
                    _ONE_WINDOW,
                    field_path=".lastRows",
                    reason="FieldValueForbidden",
                )
            ]
        }
    )

    last_seconds: int | None = Field(default=None, ge=1, le=366 * 86400)
    """Requests served in this many seconds before the data Job ran."""
    last_rows: int | None = Field(default=None, ge=1, le=100_000_000)
    """The most recent this many labelled rows."""

    @field_validator("last_rows")
    @classmethod
    def _at_most_one(cls, last_rows: int | None, info: ValidationInfo) -> int | None:
        if last_rows is not None and info.data.get("last_seconds") is not None:
            raise ValueError(_ONE_WINDOW)
        return last_rows


class MergeWith(common.KubeModel):
    """Another Dataset whose current snapshot is mixed into the traffic rows."""

    dataset: common.K8sName
    """Name of the Dataset (same namespace). Its snapshot's columns are the columns of the result."""
    share: float = Field(gt=0, lt=1)
    """Share of the result's rows taken from that Dataset (0 < share < 1): with N labelled traffic
    rows, N * share / (1 - share) of its rows, a seeded sample (all of them when it has fewer)."""


class TrafficSource(common.KubeModel):
    """Served traffic: the requests a ModelDeployment logged (`spec.logging`) joined by request id
    with their feedback labels. Only labelled rows are kept. Feedback sent with its features counts
    as labelled rows too."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                common.rule(
                    "[has(self.deployment), has(self.model)].filter(x, x).size() == 1",
                    _ONE_TRAFFIC_ORIGIN,
                    field_path=".model",
                )
            ]
        }
    )

    deployment: common.K8sName | None = None
    """The ModelDeployment whose logs are read."""
    model: common.ModelName | None = Field(default=None, validate_default=True)
    """Every ModelDeployment's logs of this model, in the namespace."""
    window: TrafficWindow | None = None
    """Which requests: the last seconds or the last rows. Unset: every logged request."""
    min_labelled_rows: int = Field(default=1, ge=1, le=100_000_000)
    """Fewest labelled rows the window must hold; fewer fail the data Job with reason
    TooFewLabelledRows (no snapshot, so no run trains on it). Defaults to 1."""
    merge_with: MergeWith | None = None
    """Mix in rows of another Dataset's snapshot (such as the base training data)."""

    @field_validator("model")
    @classmethod
    def _one_origin(cls, model: str | None, info: ValidationInfo) -> str | None:
        if (info.data.get("deployment") is None) == (model is None):
            raise ValueError(_ONE_TRAFFIC_ORIGIN)
        return model


_ONE_SOURCE = "exactly one of builtin, url, s3, pvc, configMap, traffic must be set"


class DatasetSource(common.KubeModel):
    """Where the data comes from. Exactly one field must be set."""

    builtin: BuiltinSource | None = None
    """A built-in scikit-learn data set."""
    url: str | None = Field(default=None, max_length=common.MAX_URI, pattern=r"^https?://[^\s]+$")
    """An http(s) URL of a CSV or Parquet file."""
    s3: S3Source | None = None
    """An object in S3-compatible storage."""
    pvc: PvcSource | None = None
    """A file on a PersistentVolumeClaim."""
    config_map: ConfigMapSource | None = None
    """A CSV file stored in a ConfigMap key."""
    traffic: TrafficSource | None = None
    """Labelled served traffic, from the inference logs in the artifact store."""

    # The CEL rule on DatasetSpec is what the API server enforces; this mirrors it for specs that reach
    # the models some other way (tests/unit/test_api_models.py keeps the two in step).
    @model_validator(mode="after")
    def _exactly_one_source(self) -> DatasetSource:
        chosen = [self.builtin, self.url, self.s3, self.pvc, self.config_map, self.traffic]
        if sum(source is not None for source in chosen) != 1:
            raise ValueError(_ONE_SOURCE)
        return self


class ColumnSchema(common.KubeModel):
    """Expected type and value constraints of one column."""

    name: common.Identifier
    """Column name as it appears in the data."""
    type: Literal["number", "integer", "string", "category", "boolean"] = "number"
    """Expected type. Defaults to number."""
    min: float | None = None
    """Smallest allowed value (numeric columns)."""
    max: float | None = None
    """Largest allowed value (numeric columns)."""
    allowed_values: list[common.Identifier] | None = Field(default=None, max_length=common.MAX_ITEMS)
    """Allowed values (category and string columns), compared as strings."""
    nullable: bool = False
    """Whether missing values are allowed in this column. Defaults to false."""


class ValidationRules(common.KubeModel):
    """Rules the whole data set must satisfy."""

    min_rows: int = Field(default=1, ge=1)
    """Fewest rows accepted. Defaults to 1."""
    max_null_fraction: float = Field(default=0.0, ge=0, le=1)
    """Largest fraction of missing values accepted in any column. Defaults to 0."""


class DatasetSpec(common.KubeModel):
    """Desired state of a Dataset."""

    # On the spec rather than on the source, so that the refusal names `spec.source`.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                common.rule(
                    "[has(self.source.builtin), has(self.source.url), has(self.source.s3), "
                    "has(self.source.pvc), has(self.source.configMap), has(self.source.traffic)]"
                    ".filter(x, x).size() == 1",
                    _ONE_SOURCE,
                    field_path=".source",
                )
            ]
        }
    )

    source: DatasetSource
    """Where the data comes from."""
    format: Literal["csv", "parquet"] = "csv"
    """File format of url, s3 and pvc sources. Defaults to csv."""
    target: common.Identifier = "target"
    """Name of the label column. Defaults to `target`."""
    features: list[common.Identifier] | None = Field(default=None, min_length=1, max_length=common.MAX_ITEMS)
    """Columns used as features. Defaults to every column but the target."""
    schema_: list[ColumnSchema] | None = Field(
        default=None,
        alias="schema",
        max_length=common.MAX_ITEMS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Expected columns with their types and constraints. Every violation is reported."""
    validation: ValidationRules | None = None
    """Rules for the whole data set."""
    refresh_seconds: int | None = Field(default=None, ge=60)
    """Take a new snapshot this often (at least 60). Unset: snapshot once per spec change."""


class Snapshot(common.KubeModel):
    """The current validated snapshot of the data."""

    sha256: str | None = Field(default=None, pattern=common.SHA256_HEX)
    """Content hash of the canonical serialization of the data."""
    uri: str | None = None
    """Where the snapshot is stored in the artifact store."""
    rows: int | None = None
    """Number of rows."""
    columns: int | None = None
    """Number of columns, target included."""
    profile_uri: str | None = None
    """Where the profile (statistics and reference histograms for drift) is stored."""
    profile_sha256: str | None = None
    """Content hash of the profile."""
    task: Literal["classification", "regression"] | None = None
    """Learning task inferred from the target column."""
    taken_at: str | None = None
    """When the snapshot was taken (RFC 3339)."""


class TrafficStatistics(common.KubeModel):
    """What the data Job found joining the traffic logs with their labels."""

    logged: int | None = None
    """Logged request rows in the window."""
    labelled: int | None = None
    """Label records read (by request id, or with their features)."""
    joined: int | None = None
    """Rows of the snapshot that are logged requests with a label (after `lastRows`)."""
    labelled_with_features: int | None = None
    """Rows of the snapshot that came as feedback with their features instead of a request id."""
    unmatched_labels: int | None = None
    """Labels whose request id is in no logged request (not sampled, not flushed, or unknown)."""
    corrupt_segments: int | None = None
    """Segments that could not be read and were skipped."""
    segments: int | None = None
    """Segments read."""
    merged_rows: int | None = None
    """Rows taken from spec.source.traffic.mergeWith's Dataset."""
    merged_snapshot: str | None = None
    """sha256 of the snapshot those rows came from."""
    since: str | None = None
    """Start of the window (RFC 3339), with lastSeconds."""
    until: str | None = None
    """When the logs were read (RFC 3339)."""


class DatasetStatus(common.CommonStatus):
    """Observed state of a Dataset."""

    snapshot: Snapshot | None = None
    """The current validated snapshot."""
    violations: list[str] | None = None
    """Validation failures of the last attempt, at most 20."""
    job_name: str | None = None
    """The data Job of the current spec."""
    traffic: TrafficStatistics | None = None
    """Join statistics of the current snapshot (traffic sources only)."""
