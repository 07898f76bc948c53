"""Objects the API server must accept and objects it must refuse, shared by every test tier.

tests/unit/test_crd_schemas.py checks them against the generated CRDs offline;
tests/integration/test_crd_admission.py sends the very same objects to a real API server. Each
refused object differs from a minimal valid one in exactly one place, and names the field the
refusal must blame, as the API server spells it (`spec.schema[0].type`).

Unknown fields are deliberately absent: the API server prunes them instead of refusing them (the
pydantic models refuse them, which tests/unit/test_api_models.py checks).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from modelcycle import API_VERSION
from modelcycle.api import kinds

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "examples"
PLURALS = {k.kind: k.plural for k in kinds.ALL}

Manifest = dict[str, Any]
_DELETE: Any = object()


class Example(NamedTuple):
    id: str
    """`<directory>/<file stem>`, such as `iris/dataset`."""
    kind: str
    object: Manifest


class MalformedCase(NamedTuple):
    id: str
    kind: str
    object: Manifest
    field: str
    """The field the refusal must name, as the API server writes it: `spec.strategy.canary.weight`."""


class ValidCase(NamedTuple):
    id: str
    kind: str
    object: Manifest


def load_examples(examples_dir: Path = EXAMPLES_DIR) -> list[Example]:
    """Every ModelCycle manifest under examples/, in a stable order (GitOps tool objects excluded)."""
    found: list[Example] = []
    for path in sorted(examples_dir.rglob("*.yaml")):
        stem = path.relative_to(examples_dir).with_suffix("").as_posix()
        documents = [
            d
            for d in yaml.safe_load_all(path.read_text())
            if d is not None and str(d.get("apiVersion", "")).startswith("modelcycle.io/")
        ]
        for index, document in enumerate(documents):
            ident = stem if len(documents) == 1 else f"{stem}[{index}]"
            found.append(Example(ident, document["kind"], document))
    return found


def _object(kind: str, name: str, spec: dict[str, Any]) -> Manifest:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


# Minimal valid objects: only required fields, so that one change makes one fault.
BASES: dict[str, Manifest] = {
    "Dataset": _object("Dataset", "base", {"source": {"builtin": {"name": "iris"}}}),
    "TrainingRun": _object(
        "TrainingRun",
        "base",
        {
            "datasetRef": {"name": "iris"},
            "model": {"name": "iris"},
            "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
        },
    ),
    "ModelVersion": _object(
        "ModelVersion",
        "base",
        {
            "model": "iris",
            "version": 1,
            "artifact": {"uri": "pvc://models/iris/v1/model.skops", "sha256": "ab" * 32},
        },
    ),
    "ModelDeployment": _object("ModelDeployment", "base", {"model": "iris"}),
    "ModelMonitor": _object("ModelMonitor", "base", {"deploymentRef": {"name": "iris"}}),
}


def with_changes(base: Manifest, name: str, changes: dict[str, Any]) -> Manifest:
    """A copy of base named `name`, with each dotted path (`spec.schema.0.type`) set, or deleted."""
    obj = copy.deepcopy(base)
    obj["metadata"]["name"] = name
    for dotted, value in changes.items():
        *parents, last = (int(p) if p.isdigit() else p for p in dotted.split("."))
        node: Any = obj
        for part in parents:
            if isinstance(part, str) and part not in node:
                node[part] = {}
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return obj


def _bad(ident: str, kind: str, field: str, **changes: Any) -> MalformedCase:
    # Keyword names cannot hold dots: `spec__source__url` means `spec.source.url`.
    dotted = {key.replace("__", "."): value for key, value in changes.items()}
    return MalformedCase(ident, kind, with_changes(BASES[kind], ident, dotted), field)


def _good(ident: str, kind: str, **changes: Any) -> ValidCase:
    dotted = {key.replace("__", "."): value for key, value in changes.items()}
    return ValidCase(ident, kind, with_changes(BASES[kind], ident, dotted))


MALFORMED: list[MalformedCase] = [
    # --- Dataset ---------------------------------------------------------------------------
    _bad("dataset-without-spec", "Dataset", "spec", spec=_DELETE),
    _bad("dataset-without-source", "Dataset", "spec.source", spec__source=_DELETE),
    _bad("dataset-empty-source", "Dataset", "spec.source", spec__source={}),
    _bad(
        "dataset-two-sources",
        "Dataset",
        "spec.source",
        spec__source={"builtin": {"name": "iris"}, "url": "https://example.com/iris.csv"},
    ),
    _bad(
        "dataset-builtin-not-in-enum",
        "Dataset",
        "spec.source.builtin.name",
        spec__source__builtin__name="mnist",
    ),
    _bad(
        "dataset-url-not-http",
        "Dataset",
        "spec.source.url",
        spec__source={"url": "ftp://example.com/iris.csv"},
    ),
    _bad(
        "dataset-s3-uri-malformed",
        "Dataset",
        "spec.source.s3.uri",
        spec__source={"s3": {"uri": "s3:/data/iris.csv"}},
    ),
    _bad(
        "dataset-s3-endpoint-not-http",
        "Dataset",
        "spec.source.s3.endpoint",
        spec__source={"s3": {"uri": "s3://data/iris.csv", "endpoint": "minio:9000"}},
    ),
    _bad(
        "dataset-pvc-absolute-path",
        "Dataset",
        "spec.source.pvc.path",
        spec__source={"pvc": {"claimName": "data", "path": "/iris.csv"}},
    ),
    _bad("dataset-format-xlsx", "Dataset", "spec.format", spec__format="xlsx"),
    _bad("dataset-features-empty", "Dataset", "spec.features", spec__features=[]),
    _bad(
        "dataset-column-type-unknown",
        "Dataset",
        "spec.schema[0].type",
        spec__schema=[{"name": "sepal length (cm)", "type": "float64"}],
    ),
    _bad("dataset-column-without-name", "Dataset", "spec.schema[0].name", spec__schema=[{"type": "number"}]),
    _bad("dataset-min-rows-zero", "Dataset", "spec.validation.minRows", spec__validation={"minRows": 0}),
    _bad(
        "dataset-max-null-fraction-2",
        "Dataset",
        "spec.validation.maxNullFraction",
        spec__validation={"maxNullFraction": 2},
    ),
    _bad("dataset-refresh-negative", "Dataset", "spec.refreshSeconds", spec__refreshSeconds=-60),
    _bad("dataset-refresh-below-60", "Dataset", "spec.refreshSeconds", spec__refreshSeconds=30),
    # --- TrainingRun -----------------------------------------------------------------------
    _bad("trainingrun-without-dataset-ref", "TrainingRun", "spec.datasetRef", spec__datasetRef=_DELETE),
    _bad("trainingrun-without-estimator", "TrainingRun", "spec.estimator", spec__estimator=_DELETE),
    _bad("trainingrun-model-name-uppercase", "TrainingRun", "spec.model.name", spec__model__name="Iris"),
    _bad(
        "trainingrun-model-name-underscore", "TrainingRun", "spec.model.name", spec__model__name="iris_logreg"
    ),
    _bad("trainingrun-model-name-too-long", "TrainingRun", "spec.model.name", spec__model__name="m" * 41),
    _bad(
        "trainingrun-estimator-class-not-import-path",
        "TrainingRun",
        "spec.estimator.class",
        spec__estimator__class="LogisticRegression",
    ),
    _bad(
        "trainingrun-preprocessing-step-unknown",
        "TrainingRun",
        "spec.preprocessing[0].type",
        spec__preprocessing=[{"type": "pca"}],
    ),
    _bad(
        "trainingrun-test-fraction-1-5",
        "TrainingRun",
        "spec.split.testFraction",
        spec__split={"testFraction": 1.5},
    ),
    # 0 is excluded (exclusiveMinimum): an empty holdout set cannot be evaluated.
    _bad(
        "trainingrun-test-fraction-zero",
        "TrainingRun",
        "spec.split.testFraction",
        spec__split={"testFraction": 0},
    ),
    _bad(
        "trainingrun-search-one-fold",
        "TrainingRun",
        "spec.search.folds",
        spec__search={"params": {"C": [1]}, "folds": 1},
    ),
    _bad(
        "trainingrun-search-type-bayes",
        "TrainingRun",
        "spec.search.type",
        spec__search={"type": "bayes", "params": {}},
    ),
    _bad(
        "trainingrun-search-without-params",
        "TrainingRun",
        "spec.search.params",
        spec__search={"type": "grid"},
    ),
    _bad(
        "trainingrun-tolerance-negative",
        "TrainingRun",
        "spec.gates.mustBeatProduction.tolerance",
        spec__gates={"mustBeatProduction": {"metric": "accuracy", "tolerance": -0.1}},
    ),
    _bad("trainingrun-backoff-limit-negative", "TrainingRun", "spec.backoffLimit", spec__backoffLimit=-1),
    _bad(
        "trainingrun-deadline-too-short",
        "TrainingRun",
        "spec.activeDeadlineSeconds",
        spec__activeDeadlineSeconds=5,
    ),
    # --- ModelVersion ----------------------------------------------------------------------
    _bad(
        "modelversion-sha256-too-short",
        "ModelVersion",
        "spec.artifact.sha256",
        spec__artifact__sha256="abc123",
    ),
    _bad(
        "modelversion-sha256-uppercase",
        "ModelVersion",
        "spec.artifact.sha256",
        spec__artifact__sha256="AB" * 32,
    ),
    _bad(
        "modelversion-sha256-not-hex",
        "ModelVersion",
        "spec.artifact.sha256",
        spec__artifact__sha256="zz" * 32,
    ),
    _bad(
        "modelversion-format-pickle", "ModelVersion", "spec.artifact.format", spec__artifact__format="pickle"
    ),
    _bad(
        "modelversion-uri-http",
        "ModelVersion",
        "spec.artifact.uri",
        spec__artifact__uri="https://example.com/model.skops",
    ),
    _bad("modelversion-version-zero", "ModelVersion", "spec.version", spec__version=0),
    _bad("modelversion-without-artifact", "ModelVersion", "spec.artifact", spec__artifact=_DELETE),
    _bad("modelversion-model-name-underscore", "ModelVersion", "spec.model", spec__model="iris_v2"),
    # --- ModelDeployment -------------------------------------------------------------------
    _bad("modeldeployment-replicas-negative", "ModelDeployment", "spec.replicas", spec__replicas=-1),
    _bad(
        "modeldeployment-canary-weight-150",
        "ModelDeployment",
        "spec.strategy.canary.weight",
        spec__strategy={"type": "Canary", "canary": {"weight": 150}},
    ),
    _bad(
        "modeldeployment-canary-settings-with-rolling",
        "ModelDeployment",
        "spec.strategy",
        spec__strategy={"type": "Rolling", "canary": {"weight": 20}},
    ),
    # No type means Rolling, so canary settings are just as wrong.
    _bad(
        "modeldeployment-canary-settings-without-type",
        "ModelDeployment",
        "spec.strategy",
        spec__strategy={"canary": {"weight": 20}},
    ),
    _bad(
        "modeldeployment-strategy-bluegreen",
        "ModelDeployment",
        "spec.strategy.type",
        spec__strategy={"type": "BlueGreen"},
    ),
    _bad("modeldeployment-version-newest", "ModelDeployment", "spec.version", spec__version="newest"),
    _bad("modeldeployment-version-zero", "ModelDeployment", "spec.version", spec__version=0),
    _bad("modeldeployment-version-negative", "ModelDeployment", "spec.version", spec__version=-3),
    _bad(
        "modeldeployment-autoscaling-min-above-max",
        "ModelDeployment",
        "spec.autoscaling",
        spec__autoscaling={"minReplicas": 5, "maxReplicas": 2},
    ),
    _bad(
        "modeldeployment-autoscaling-without-max",
        "ModelDeployment",
        "spec.autoscaling.maxReplicas",
        spec__autoscaling={"minReplicas": 2},
    ),
    _bad("modeldeployment-model-uppercase", "ModelDeployment", "spec.model", spec__model="Iris"),
    _bad("modeldeployment-without-model", "ModelDeployment", "spec.model", spec__model=_DELETE),
    # --- ModelMonitor ----------------------------------------------------------------------
    _bad(
        "modelmonitor-without-deployment-ref",
        "ModelMonitor",
        "spec.deploymentRef",
        spec__deploymentRef=_DELETE,
    ),
    _bad(
        "modelmonitor-drift-method-unknown",
        "ModelMonitor",
        "spec.drift.method",
        spec__drift={"method": "wasserstein"},
    ),
    _bad(
        "modelmonitor-drift-threshold-zero",
        "ModelMonitor",
        "spec.drift.threshold",
        spec__drift={"threshold": 0},
    ),
    _bad("modelmonitor-interval-zero", "ModelMonitor", "spec.intervalSeconds", spec__intervalSeconds=0),
    _bad(
        "modelmonitor-cooldown-negative",
        "ModelMonitor",
        "spec.retrain.cooldownSeconds",
        spec__retrain={"enabled": True, "cooldownSeconds": -1},
    ),
    _bad(
        "modelmonitor-max-concurrent-zero",
        "ModelMonitor",
        "spec.retrain.maxConcurrent",
        spec__retrain={"maxConcurrent": 0},
    ),
    _bad(
        "modelmonitor-performance-metric-unknown",
        "ModelMonitor",
        "spec.performance.metric",
        spec__performance={"metric": "auc", "min": 0.9},
    ),
]

# Valid objects at the edges of the rules: each guards against a rule that is too strict.
VALID: list[ValidCase] = [
    *(
        ValidCase(f"minimal-{kind.lower()}", kind, with_changes(base, f"minimal-{kind.lower()}", {}))
        for kind, base in BASES.items()
    ),
    _good(
        "dataset-s3-source",
        "Dataset",
        spec__source={"s3": {"uri": "s3://data/iris.csv", "endpoint": "http://minio:9000"}},
    ),
    _good(
        "dataset-configmap-source",
        "Dataset",
        spec__source={"configMap": {"name": "iris-csv", "key": "iris.csv"}},
    ),
    _good("dataset-refresh-60", "Dataset", spec__refreshSeconds=60),
    _good("trainingrun-model-name-40-chars", "TrainingRun", spec__model__name="m" * 40),
    # Optional fields a CEL rule reads must not make the rule fail when they are absent.
    _good("modeldeployment-autoscaling-only-max", "ModelDeployment", spec__autoscaling={"maxReplicas": 3}),
    _good(
        "modeldeployment-autoscaling-min-equals-max",
        "ModelDeployment",
        spec__autoscaling={"minReplicas": 3, "maxReplicas": 3},
    ),
    _good("modeldeployment-canary-without-settings", "ModelDeployment", spec__strategy={"type": "Canary"}),
    _good("modeldeployment-version-pinned", "ModelDeployment", spec__version=7),
    _good("modeldeployment-version-latest", "ModelDeployment", spec__version="latest"),
    _good("modeldeployment-zero-replicas", "ModelDeployment", spec__replicas=0),
    _good(
        "modelmonitor-cooldown-zero", "ModelMonitor", spec__retrain={"enabled": True, "cooldownSeconds": 0}
    ),
]


def immutable_update() -> tuple[Manifest, Manifest, str]:
    """A ModelVersion, the same one with a changed spec (refused), and the field the refusal names."""
    old = with_changes(BASES["ModelVersion"], "iris-v1", {})
    new = with_changes(old, "iris-v1", {"spec.artifact.sha256": "cd" * 32})
    return old, new, "spec"


def metadata_update() -> tuple[Manifest, Manifest]:
    """A ModelVersion and the same one with a new label: the spec is immutable, the metadata is not."""
    old = with_changes(BASES["ModelVersion"], "iris-v1", {})
    new = with_changes(old, "iris-v1", {"metadata.labels": {"team": "flowers"}})
    return old, new
