"""The five kinds: names, spec and status models, and how kubectl prints them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelcycle.api import common, dataset, modeldeployment, modelmonitor, modelversion, trainingrun


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_name: str
    spec: type[common.KubeModel]
    status: type[common.KubeModel]
    description: str
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)
    rules: tuple[dict[str, Any], ...] = ()
    """CEL rules on the whole object (`self` is the object), such as a transition rule on the spec."""

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _condition(type_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].status'


READY = PrinterColumn("Ready", _condition("Ready"), description="Whether the object is Ready")
PHASE = PrinterColumn("Phase", ".status.phase", description="One-word summary for humans")
AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")

DATASET = Kind(
    kind="Dataset",
    plural="datasets",
    short_name="dset",
    spec=dataset.DatasetSpec,
    status=dataset.DatasetStatus,
    description="A versioned, validated and profiled snapshot of training data.",
    columns=(
        READY,
        PrinterColumn("Rows", ".status.snapshot.rows", type="integer"),
        PrinterColumn("Task", ".status.snapshot.task"),
        PHASE,
        PrinterColumn("SHA256", ".status.snapshot.sha256", priority=1),
        AGE,
    ),
)
TRAINING_RUN = Kind(
    kind="TrainingRun",
    plural="trainingruns",
    short_name="trun",
    spec=trainingrun.TrainingRunSpec,
    status=trainingrun.TrainingRunStatus,
    description="Trains an estimator on a Dataset's snapshot and registers a ModelVersion.",
    columns=(
        READY,
        PrinterColumn("Model", ".spec.model.name"),
        PrinterColumn("Dataset", ".spec.datasetRef.name"),
        PrinterColumn("Succeeded", _condition("Succeeded")),
        PrinterColumn("Version", ".status.version", type="integer"),
        PHASE,
        AGE,
    ),
)
MODEL_VERSION = Kind(
    kind="ModelVersion",
    plural="modelversions",
    short_name="mver",
    spec=modelversion.ModelVersionSpec,
    status=modelversion.ModelVersionStatus,
    description="An immutable registered model artifact with lineage, validated before it is served.",
    columns=(
        READY,
        PrinterColumn("Model", ".spec.model"),
        PrinterColumn("Version", ".spec.version", type="integer"),
        PrinterColumn("Validated", _condition("Validated")),
        PHASE,
        PrinterColumn("SHA256", ".spec.artifact.sha256", priority=1),
        PrinterColumn("Run", ".spec.lineage.trainingRun", priority=1),
        AGE,
    ),
    rules=(modelversion.IMMUTABLE,),
)
MODEL_DEPLOYMENT = Kind(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_name="mdep",
    spec=modeldeployment.ModelDeploymentSpec,
    status=modeldeployment.ModelDeploymentStatus,
    description="Serves a model version over the Open Inference Protocol v2 and rolls out new versions.",
    columns=(
        READY,
        PrinterColumn("Model", ".spec.model"),
        PrinterColumn("Served", ".status.servedVersion", type="integer"),
        PrinterColumn("Canary", ".status.canaryVersion", type="integer"),
        PrinterColumn("Replicas", ".status.readyReplicas", type="integer"),
        PHASE,
        PrinterColumn("URL", ".status.url", priority=1),
        AGE,
    ),
)
MODEL_MONITOR = Kind(
    kind="ModelMonitor",
    plural="modelmonitors",
    short_name="mmon",
    spec=modelmonitor.ModelMonitorSpec,
    status=modelmonitor.ModelMonitorStatus,
    description="Watches a deployment's live traffic for drift and triggers retraining.",
    columns=(
        READY,
        PrinterColumn("Deployment", ".spec.deploymentRef.name"),
        PrinterColumn("Drift", _condition("DriftDetected")),
        PrinterColumn("Window", ".status.windowSize", type="integer"),
        PrinterColumn("Checked", ".status.lastCheckTime", type="date"),
        AGE,
    ),
)

ALL: tuple[Kind, ...] = (DATASET, TRAINING_RUN, MODEL_VERSION, MODEL_DEPLOYMENT, MODEL_MONITOR)
BY_KIND: dict[str, Kind] = {k.kind: k for k in ALL}
