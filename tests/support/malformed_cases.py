"""Objects the API server must accept and objects it must refuse, shared by every test tier.

tests/unit/test_crd_schemas.py checks them against the generated CRDs offline;
tests/integration/test_crd_admission.py sends the very same objects to a real API server. Each
refused object differs from a minimal valid one in exactly one place, and names the field the
refusal must blame, as the API server spells it (`spec.schema[0].type`).

Each malformed object also has a valid twin (the same changes with the one value put right) that
both must accept. Unknown fields are refused only under strict field validation, which is what
`kubectl apply` and `modelcycle check` use; a plain API request has them pruned instead.
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
    twin: Manifest
    """The same object with that one field put right: it must be accepted."""


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


def _dotted(changes: dict[str, Any]) -> dict[str, Any]:
    # Keyword names cannot hold dots: `spec__source__url` means `spec.source.url`.
    return {key.replace("__", "."): value for key, value in changes.items()}


def _case(ident: str, kind: str, field: str, *, bad: dict[str, Any], good: dict[str, Any]) -> MalformedCase:
    """A malformed object and its valid twin: the same changes to the base, one value put right."""
    return MalformedCase(
        ident,
        kind,
        with_changes(BASES[kind], ident, _dotted(bad)),
        field,
        with_changes(BASES[kind], f"{ident}-twin", _dotted(good)),
    )


def _good(ident: str, kind: str, **changes: Any) -> ValidCase:
    return ValidCase(ident, kind, with_changes(BASES[kind], ident, _dotted(changes)))


_S3 = "s3://data/iris.csv"
_PVC = {"claimName": "data", "path": "iris/iris.csv"}
_CM = {"name": "iris-csv", "key": "iris.csv"}
_SHA = "ab" * 32

MALFORMED: list[MalformedCase] = [
    # --- Dataset: required fields and the one source ---------------------------------------
    _case("dataset-without-spec", "Dataset", "spec", bad={"spec": _DELETE}, good={}),
    _case("dataset-without-source", "Dataset", "spec.source", bad={"spec__source": _DELETE}, good={}),
    _case(
        "dataset-empty-source",
        "Dataset",
        "spec.source",
        bad={"spec__source": {}},
        good={"spec__source": {"builtin": {"name": "wine"}}},
    ),
    _case(
        "dataset-two-sources",
        "Dataset",
        "spec.source",
        bad={"spec__source": {"builtin": {"name": "iris"}, "url": "https://example.com/iris.csv"}},
        good={"spec__source": {"url": "https://example.com/iris.csv"}},
    ),
    _case(
        "dataset-builtin-not-in-enum",
        "Dataset",
        "spec.source.builtin.name",
        bad={"spec__source__builtin__name": "mnist"},
        good={"spec__source__builtin__name": "digits"},
    ),
    # --- Dataset: URLs and URIs -------------------------------------------------------------
    _case(
        "dataset-url-not-http",
        "Dataset",
        "spec.source.url",
        bad={"spec__source": {"url": "ftp://example.com/iris.csv"}},
        good={"spec__source": {"url": "https://example.com/iris.csv"}},
    ),
    _case(
        "dataset-url-too-long",
        "Dataset",
        "spec.source.url",
        bad={"spec__source": {"url": "https://example.com/" + "a" * 2100}},
        good={"spec__source": {"url": "https://example.com/" + "a" * 2000}},
    ),
    _case(
        "dataset-s3-uri-malformed",
        "Dataset",
        "spec.source.s3.uri",
        bad={"spec__source": {"s3": {"uri": "s3:/data/iris.csv"}}},
        good={"spec__source": {"s3": {"uri": _S3}}},
    ),
    _case(
        "dataset-s3-endpoint-not-http",
        "Dataset",
        "spec.source.s3.endpoint",
        bad={"spec__source": {"s3": {"uri": _S3, "endpoint": "minio:9000"}}},
        good={"spec__source": {"s3": {"uri": _S3, "endpoint": "http://minio:9000"}}},
    ),
    _case(
        "dataset-s3-secret-ref-underscore",
        "Dataset",
        "spec.source.s3.secretRef.name",
        bad={"spec__source": {"s3": {"uri": _S3, "secretRef": {"name": "s3_creds"}}}},
        good={"spec__source": {"s3": {"uri": _S3, "secretRef": {"name": "s3-creds"}}}},
    ),
    # --- Dataset: the traffic source -------------------------------------------------------
    _case(
        "dataset-traffic-deployment-and-model",
        "Dataset",
        "spec.source.traffic.model",
        bad={"spec__source": {"traffic": {"deployment": "iris", "model": "iris"}}},
        good={"spec__source": {"traffic": {"deployment": "iris"}}},
    ),
    _case(
        "dataset-traffic-neither-deployment-nor-model",
        "Dataset",
        "spec.source.traffic.model",
        bad={"spec__source": {"traffic": {"window": {"lastRows": 10}}}},
        good={"spec__source": {"traffic": {"model": "iris", "window": {"lastRows": 10}}}},
    ),
    _case(
        "dataset-traffic-two-windows",
        "Dataset",
        "spec.source.traffic.window.lastRows",
        bad={
            "spec__source": {"traffic": {"deployment": "iris", "window": {"lastSeconds": 60, "lastRows": 10}}}
        },
        good={"spec__source": {"traffic": {"deployment": "iris", "window": {"lastSeconds": 60}}}},
    ),
    _case(
        "dataset-traffic-merge-share-one",
        "Dataset",
        "spec.source.traffic.mergeWith.share",
        bad={
            "spec__source": {"traffic": {"deployment": "iris", "mergeWith": {"dataset": "base", "share": 1}}}
        },
        good={
            "spec__source": {
                "traffic": {"deployment": "iris", "mergeWith": {"dataset": "base", "share": 0.5}}
            }
        },
    ),
    _case(
        "dataset-traffic-and-builtin",
        "Dataset",
        "spec.source",
        bad={"spec__source": {"builtin": {"name": "iris"}, "traffic": {"deployment": "iris"}}},
        good={"spec__source": {"traffic": {"deployment": "iris"}}},
    ),
    # --- Dataset: names and paths inside volumes --------------------------------------------
    _case(
        "dataset-pvc-claim-name-dotdot",
        "Dataset",
        "spec.source.pvc.claimName",
        bad={"spec__source": {"pvc": {**_PVC, "claimName": ".."}}},
        good={"spec__source": {"pvc": _PVC}},
    ),
    _case(
        "dataset-pvc-claim-name-not-dns",
        "Dataset",
        "spec.source.pvc.claimName",
        bad={"spec__source": {"pvc": {**_PVC, "claimName": "Iris_Data"}}},
        good={"spec__source": {"pvc": {**_PVC, "claimName": "iris-data"}}},
    ),
    _case(
        "dataset-pvc-claim-name-too-long",
        "Dataset",
        "spec.source.pvc.claimName",
        bad={"spec__source": {"pvc": {**_PVC, "claimName": "a" * 254}}},
        good={"spec__source": {"pvc": {**_PVC, "claimName": "a" * 253}}},
    ),
    _case(
        "dataset-pvc-absolute-path",
        "Dataset",
        "spec.source.pvc.path",
        bad={"spec__source": {"pvc": {**_PVC, "path": "/iris.csv"}}},
        good={"spec__source": {"pvc": {**_PVC, "path": "iris.csv"}}},
    ),
    _case(
        "dataset-pvc-path-climbs-out",
        "Dataset",
        "spec.source.pvc.path",
        bad={"spec__source": {"pvc": {**_PVC, "path": "../../etc/passwd"}}},
        good={"spec__source": {"pvc": {**_PVC, "path": "etc/passwd"}}},
    ),
    _case(
        "dataset-pvc-path-dotdot-inside",
        "Dataset",
        "spec.source.pvc.path",
        bad={"spec__source": {"pvc": {**_PVC, "path": "iris/../../x.csv"}}},
        good={"spec__source": {"pvc": {**_PVC, "path": "iris/..x/x.csv"}}},
    ),
    _case(
        "dataset-pvc-path-empty-segment",
        "Dataset",
        "spec.source.pvc.path",
        bad={"spec__source": {"pvc": {**_PVC, "path": "iris//iris.csv"}}},
        good={"spec__source": {"pvc": {**_PVC, "path": "iris/.iris.csv"}}},
    ),
    _case(
        "dataset-configmap-name-dotdot",
        "Dataset",
        "spec.source.configMap.name",
        bad={"spec__source": {"configMap": {**_CM, "name": ".."}}},
        good={"spec__source": {"configMap": _CM}},
    ),
    _case(
        "dataset-configmap-name-uppercase",
        "Dataset",
        "spec.source.configMap.name",
        bad={"spec__source": {"configMap": {**_CM, "name": "Iris"}}},
        good={"spec__source": {"configMap": {**_CM, "name": "iris"}}},
    ),
    _case(
        "dataset-configmap-key-dotdot",
        "Dataset",
        "spec.source.configMap.key",
        bad={"spec__source": {"configMap": {**_CM, "key": ".."}}},
        good={"spec__source": {"configMap": {**_CM, "key": ".iris"}}},
    ),
    _case(
        "dataset-configmap-key-with-slash",
        "Dataset",
        "spec.source.configMap.key",
        bad={"spec__source": {"configMap": {**_CM, "key": "../iris.csv"}}},
        good={"spec__source": {"configMap": {**_CM, "key": "iris..csv"}}},
    ),
    # --- Dataset: columns, bounds and types ---------------------------------------------------
    _case(
        "dataset-format-xlsx",
        "Dataset",
        "spec.format",
        bad={"spec__format": "xlsx"},
        good={"spec__format": "parquet"},
    ),
    _case(
        "dataset-features-empty",
        "Dataset",
        "spec.features",
        bad={"spec__features": []},
        good={"spec__features": ["sepal length (cm)"]},
    ),
    _case(
        "dataset-features-too-many",
        "Dataset",
        "spec.features",
        bad={"spec__features": [f"f{i}" for i in range(1025)]},
        good={"spec__features": [f"f{i}" for i in range(1024)]},
    ),
    _case(
        "dataset-feature-name-too-long",
        "Dataset",
        "spec.features[0]",
        bad={"spec__features": ["f" * 257]},
        good={"spec__features": ["f" * 256]},
    ),
    _case(
        "dataset-target-too-long",
        "Dataset",
        "spec.target",
        bad={"spec__target": "t" * 257},
        good={"spec__target": "t" * 256},
    ),
    _case(
        "dataset-column-type-unknown",
        "Dataset",
        "spec.schema[0].type",
        bad={"spec__schema": [{"name": "sepal length (cm)", "type": "float64"}]},
        good={"spec__schema": [{"name": "sepal length (cm)", "type": "number"}]},
    ),
    _case(
        "dataset-column-without-name",
        "Dataset",
        "spec.schema[0].name",
        bad={"spec__schema": [{"type": "number"}]},
        good={"spec__schema": [{"name": "x", "type": "number"}]},
    ),
    _case(
        "dataset-column-nullable-yes",
        "Dataset",
        "spec.schema[0].nullable",
        bad={"spec__schema": [{"name": "x", "nullable": "yes"}]},
        good={"spec__schema": [{"name": "x", "nullable": True}]},
    ),
    _case(
        "dataset-min-rows-zero",
        "Dataset",
        "spec.validation.minRows",
        bad={"spec__validation": {"minRows": 0}},
        good={"spec__validation": {"minRows": 1}},
    ),
    _case(
        "dataset-min-rows-string",
        "Dataset",
        "spec.validation.minRows",
        bad={"spec__validation": {"minRows": "100"}},
        good={"spec__validation": {"minRows": 100}},
    ),
    _case(
        "dataset-max-null-fraction-2",
        "Dataset",
        "spec.validation.maxNullFraction",
        bad={"spec__validation": {"maxNullFraction": 2}},
        good={"spec__validation": {"maxNullFraction": 1}},
    ),
    _case(
        "dataset-refresh-negative",
        "Dataset",
        "spec.refreshSeconds",
        bad={"spec__refreshSeconds": -60},
        good={"spec__refreshSeconds": 600},
    ),
    _case(
        "dataset-refresh-below-60",
        "Dataset",
        "spec.refreshSeconds",
        bad={"spec__refreshSeconds": 30},
        good={"spec__refreshSeconds": 60},
    ),
    _case(
        "dataset-unknown-spec-field",
        "Dataset",
        "spec.refreshSecond",
        bad={"spec__refreshSecond": 60},
        good={"spec__refreshSeconds": 60},
    ),
    _case(
        "dataset-unknown-source-field",
        "Dataset",
        "spec.source.builtin.version",
        bad={"spec__source__builtin__version": 2},
        good={"spec__source__builtin__name": "iris"},
    ),
    # --- metadata -----------------------------------------------------------------------------
    _case(
        "dataset-name-not-dns",
        "Dataset",
        "metadata.name",
        bad={"metadata__name": "Iris_Data"},
        good={"metadata__name": "iris-data"},
    ),
    _case(
        "modelmonitor-name-too-long",
        "ModelMonitor",
        "metadata.name",
        bad={"metadata__name": "m" * 254},
        good={"metadata__name": "m" * 253},
    ),
    # --- TrainingRun --------------------------------------------------------------------------
    _case(
        "trainingrun-without-dataset-ref",
        "TrainingRun",
        "spec.datasetRef",
        bad={"spec__datasetRef": _DELETE},
        good={},
    ),
    _case(
        "trainingrun-dataset-ref-not-dns",
        "TrainingRun",
        "spec.datasetRef.name",
        bad={"spec__datasetRef__name": "iris_prod"},
        good={"spec__datasetRef__name": "iris-prod"},
    ),
    _case(
        "trainingrun-dataset-ref-empty",
        "TrainingRun",
        "spec.datasetRef.name",
        bad={"spec__datasetRef__name": ""},
        good={"spec__datasetRef__name": "i"},
    ),
    _case(
        "trainingrun-without-estimator",
        "TrainingRun",
        "spec.estimator",
        bad={"spec__estimator": _DELETE},
        good={},
    ),
    _case(
        "trainingrun-model-name-uppercase",
        "TrainingRun",
        "spec.model.name",
        bad={"spec__model__name": "Iris"},
        good={"spec__model__name": "iris"},
    ),
    _case(
        "trainingrun-model-name-underscore",
        "TrainingRun",
        "spec.model.name",
        bad={"spec__model__name": "iris_logreg"},
        good={"spec__model__name": "iris-logreg"},
    ),
    _case(
        "trainingrun-model-name-too-long",
        "TrainingRun",
        "spec.model.name",
        bad={"spec__model__name": "m" * 41},
        good={"spec__model__name": "m" * 40},
    ),
    _case(
        "trainingrun-estimator-class-not-import-path",
        "TrainingRun",
        "spec.estimator.class",
        bad={"spec__estimator__class": "LogisticRegression"},
        good={"spec__estimator__class": "sklearn.svm.SVC"},
    ),
    _case(
        "trainingrun-unknown-estimator-field",
        "TrainingRun",
        "spec.estimator.parameters",
        bad={"spec__estimator__parameters": {"C": 1}},
        good={"spec__estimator__params": {"C": 1}},
    ),
    _case(
        "trainingrun-preprocessing-step-unknown",
        "TrainingRun",
        "spec.preprocessing[0].type",
        bad={"spec__preprocessing": [{"type": "pca"}]},
        good={"spec__preprocessing": [{"type": "standardScaler"}]},
    ),
    _case(
        "trainingrun-preprocessing-too-many",
        "TrainingRun",
        "spec.preprocessing",
        bad={"spec__preprocessing": [{"type": "standardScaler"}] * 33},
        good={"spec__preprocessing": [{"type": "standardScaler"}] * 32},
    ),
    _case(
        "trainingrun-test-fraction-1-5",
        "TrainingRun",
        "spec.split.testFraction",
        bad={"spec__split": {"testFraction": 1.5}},
        good={"spec__split": {"testFraction": 0.5}},
    ),
    # 0 is excluded (exclusiveMinimum): an empty holdout set cannot be evaluated.
    _case(
        "trainingrun-test-fraction-zero",
        "TrainingRun",
        "spec.split.testFraction",
        bad={"spec__split": {"testFraction": 0}},
        good={"spec__split": {"testFraction": 0.01}},
    ),
    _case(
        "trainingrun-stratify-yes",
        "TrainingRun",
        "spec.split.stratify",
        bad={"spec__split": {"stratify": "yes"}},
        good={"spec__split": {"stratify": True}},
    ),
    _case(
        "trainingrun-search-one-fold",
        "TrainingRun",
        "spec.search.folds",
        bad={"spec__search": {"params": {"C": [1]}, "folds": 1}},
        good={"spec__search": {"params": {"C": [1]}, "folds": 2}},
    ),
    _case(
        "trainingrun-search-type-bayes",
        "TrainingRun",
        "spec.search.type",
        bad={"spec__search": {"type": "bayes", "params": {}}},
        good={"spec__search": {"type": "random", "params": {}}},
    ),
    _case(
        "trainingrun-search-without-params",
        "TrainingRun",
        "spec.search.params",
        bad={"spec__search": {"type": "grid"}},
        good={"spec__search": {"type": "grid", "params": {}}},
    ),
    _case(
        "trainingrun-tolerance-negative",
        "TrainingRun",
        "spec.gates.mustBeatProduction.tolerance",
        bad={"spec__gates": {"mustBeatProduction": {"metric": "accuracy", "tolerance": -0.1}}},
        good={"spec__gates": {"mustBeatProduction": {"metric": "accuracy", "tolerance": 0.1}}},
    ),
    _case(
        "trainingrun-backoff-limit-negative",
        "TrainingRun",
        "spec.backoffLimit",
        bad={"spec__backoffLimit": -1},
        good={"spec__backoffLimit": 0},
    ),
    _case(
        "trainingrun-backoff-limit-string",
        "TrainingRun",
        "spec.backoffLimit",
        bad={"spec__backoffLimit": "2"},
        good={"spec__backoffLimit": 2},
    ),
    _case(
        "trainingrun-deadline-too-short",
        "TrainingRun",
        "spec.activeDeadlineSeconds",
        bad={"spec__activeDeadlineSeconds": 5},
        good={"spec__activeDeadlineSeconds": 30},
    ),
    _case(
        "trainingrun-image-too-long",
        "TrainingRun",
        "spec.image",
        bad={"spec__image": "registry.example.com/" + "i" * 1100},
        good={"spec__image": "registry.example.com/" + "i" * 1000},
    ),
    _case(
        "trainingrun-image-with-space",
        "TrainingRun",
        "spec.image",
        bad={"spec__image": "modelcycle/workload:0.1 --privileged"},
        good={"spec__image": "modelcycle/workload:0.1"},
    ),
    _case(
        "trainingrun-memory-512mb",
        "TrainingRun",
        "spec.resources.requests.memory",
        bad={"spec__resources": {"requests": {"memory": "512MB"}}},
        good={"spec__resources": {"requests": {"memory": "512M"}}},
    ),
    _case(
        "trainingrun-cpu-lots",
        "TrainingRun",
        "spec.resources.limits.cpu",
        bad={"spec__resources": {"limits": {"cpu": "lots"}}},
        good={"spec__resources": {"limits": {"cpu": "1500m"}}},
    ),
    _case(
        "trainingrun-cpu-negative",
        "TrainingRun",
        "spec.resources.limits.cpu",
        bad={"spec__resources": {"limits": {"cpu": "-1"}}},
        good={"spec__resources": {"limits": {"cpu": 1}}},
    ),
    # --- ModelVersion -------------------------------------------------------------------------
    _case(
        "modelversion-sha256-too-short",
        "ModelVersion",
        "spec.artifact.sha256",
        bad={"spec__artifact__sha256": "abc123"},
        good={"spec__artifact__sha256": "cd" * 32},
    ),
    _case(
        "modelversion-sha256-uppercase",
        "ModelVersion",
        "spec.artifact.sha256",
        bad={"spec__artifact__sha256": "AB" * 32},
        good={"spec__artifact__sha256": "ab" * 32},
    ),
    _case(
        "modelversion-sha256-not-hex",
        "ModelVersion",
        "spec.artifact.sha256",
        bad={"spec__artifact__sha256": "zz" * 32},
        good={"spec__artifact__sha256": "ef" * 32},
    ),
    _case(
        "modelversion-format-pickle",
        "ModelVersion",
        "spec.artifact.format",
        bad={"spec__artifact__format": "pickle"},
        good={"spec__artifact__format": "skops"},
    ),
    _case(
        "modelversion-uri-http",
        "ModelVersion",
        "spec.artifact.uri",
        bad={"spec__artifact__uri": "https://example.com/model.skops"},
        good={"spec__artifact__uri": "s3://models/iris/v1/model.skops"},
    ),
    _case(
        "modelversion-uri-climbs-out",
        "ModelVersion",
        "spec.artifact.uri",
        bad={"spec__artifact__uri": "pvc://models/../../etc/passwd"},
        good={"spec__artifact__uri": "pvc://models/etc/passwd"},
    ),
    _case(
        "modelversion-uri-absolute-on-the-volume",
        "ModelVersion",
        "spec.artifact.uri",
        bad={"spec__artifact__uri": "pvc:///etc/model.skops"},
        good={"spec__artifact__uri": "file:///etc/model.skops"},
    ),
    _case(
        "modelversion-s3-uri-dotdot",
        "ModelVersion",
        "spec.artifact.uri",
        bad={"spec__artifact__uri": "s3://models/../other/model.skops"},
        good={"spec__artifact__uri": "s3://models/other/model.skops"},
    ),
    _case(
        "modelversion-lineage-dataset-uri-dotdot",
        "ModelVersion",
        "spec.lineage.datasetUri",
        bad={"spec__lineage": {"datasetUri": "pvc://datasets/../../x/data.parquet"}},
        good={"spec__lineage": {"datasetUri": "pvc://datasets/x/data.parquet"}},
    ),
    _case(
        "modelversion-lineage-run-not-dns",
        "ModelVersion",
        "spec.lineage.trainingRun",
        bad={"spec__lineage": {"trainingRun": "Iris_Run"}},
        good={"spec__lineage": {"trainingRun": "iris-run"}},
    ),
    _case(
        "modelversion-version-zero",
        "ModelVersion",
        "spec.version",
        bad={"spec__version": 0},
        good={"spec__version": 2},
    ),
    _case(
        "modelversion-version-string",
        "ModelVersion",
        "spec.version",
        bad={"spec__version": "3"},
        good={"spec__version": 3},
    ),
    _case(
        "modelversion-without-artifact",
        "ModelVersion",
        "spec.artifact",
        bad={"spec__artifact": _DELETE},
        good={},
    ),
    _case(
        "modelversion-model-name-underscore",
        "ModelVersion",
        "spec.model",
        bad={"spec__model": "iris_v2"},
        good={"spec__model": "iris-v2"},
    ),
    # --- ModelDeployment ----------------------------------------------------------------------
    _case(
        "modeldeployment-replicas-negative",
        "ModelDeployment",
        "spec.replicas",
        bad={"spec__replicas": -1},
        good={"spec__replicas": 0},
    ),
    _case(
        "modeldeployment-replicas-string",
        "ModelDeployment",
        "spec.replicas",
        bad={"spec__replicas": "100"},
        good={"spec__replicas": 100},
    ),
    _case(
        "modelmonitor-retrain-traffic-two-windows",
        "ModelMonitor",
        "spec.retrain.traffic.window.lastRows",
        bad={"spec__retrain": {"enabled": True, "traffic": {"window": {"lastSeconds": 60, "lastRows": 5}}}},
        good={"spec__retrain": {"enabled": True, "traffic": {"window": {"lastRows": 5}}}},
    ),
    _case(
        "modelmonitor-retrain-traffic-base-share-one",
        "ModelMonitor",
        "spec.retrain.traffic.baseShare",
        bad={"spec__retrain": {"enabled": True, "traffic": {"baseShare": 1}}},
        good={"spec__retrain": {"enabled": True, "traffic": {"baseShare": 0}}},
    ),
    _case(
        "modeldeployment-logging-sample-rate-above-one",
        "ModelDeployment",
        "spec.logging.sampleRate",
        bad={"spec__logging": {"sampleRate": 1.5}},
        good={"spec__logging": {"sampleRate": 1}},
    ),
    _case(
        "modeldeployment-canary-weight-150",
        "ModelDeployment",
        "spec.strategy.canary.weight",
        bad={"spec__strategy": {"type": "Canary", "canary": {"weight": 150}}},
        good={"spec__strategy": {"type": "Canary", "canary": {"weight": 50}}},
    ),
    _case(
        "modeldeployment-canary-settings-with-rolling",
        "ModelDeployment",
        "spec.strategy.canary",
        bad={"spec__strategy": {"type": "Rolling", "canary": {"weight": 20}}},
        good={"spec__strategy": {"type": "Canary", "canary": {"weight": 20}}},
    ),
    # No type means Rolling, so canary settings are just as wrong.
    _case(
        "modeldeployment-canary-settings-without-type",
        "ModelDeployment",
        "spec.strategy.canary",
        bad={"spec__strategy": {"canary": {"weight": 20}}},
        good={"spec__strategy": {"type": "Canary", "canary": {"weight": 20}}},
    ),
    _case(
        "modeldeployment-strategy-bluegreen",
        "ModelDeployment",
        "spec.strategy.type",
        bad={"spec__strategy": {"type": "BlueGreen"}},
        good={"spec__strategy": {"type": "Rolling"}},
    ),
    _case(
        "modeldeployment-version-newest",
        "ModelDeployment",
        "spec.version",
        bad={"spec__version": "newest"},
        good={"spec__version": "latest"},
    ),
    _case(
        "modeldeployment-version-zero",
        "ModelDeployment",
        "spec.version",
        bad={"spec__version": 0},
        good={"spec__version": 1},
    ),
    _case(
        "modeldeployment-version-negative",
        "ModelDeployment",
        "spec.version",
        bad={"spec__version": -3},
        good={"spec__version": 3},
    ),
    _case(
        "modeldeployment-autoscaling-min-above-max",
        "ModelDeployment",
        "spec.autoscaling.minReplicas",
        bad={"spec__autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        good={"spec__autoscaling": {"minReplicas": 2, "maxReplicas": 2}},
    ),
    _case(
        "modeldeployment-autoscaling-without-max",
        "ModelDeployment",
        "spec.autoscaling.maxReplicas",
        bad={"spec__autoscaling": {"minReplicas": 2}},
        good={"spec__autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
    ),
    _case(
        "modeldeployment-model-uppercase",
        "ModelDeployment",
        "spec.model",
        bad={"spec__model": "Iris"},
        good={"spec__model": "iris"},
    ),
    _case(
        "modeldeployment-without-model",
        "ModelDeployment",
        "spec.model",
        bad={"spec__model": _DELETE},
        good={},
    ),
    _case(
        "modeldeployment-memory-lots",
        "ModelDeployment",
        "spec.resources.limits.memory",
        bad={"spec__resources": {"limits": {"memory": "lots"}}},
        good={"spec__resources": {"limits": {"memory": "1Gi"}}},
    ),
    _case(
        "modeldeployment-image-too-long",
        "ModelDeployment",
        "spec.image",
        bad={"spec__image": "i" * 2000},
        good={"spec__image": "i" * 1024},
    ),
    # --- ModelMonitor -------------------------------------------------------------------------
    _case(
        "modelmonitor-without-deployment-ref",
        "ModelMonitor",
        "spec.deploymentRef",
        bad={"spec__deploymentRef": _DELETE},
        good={},
    ),
    _case(
        "modelmonitor-deployment-ref-not-dns",
        "ModelMonitor",
        "spec.deploymentRef.name",
        bad={"spec__deploymentRef__name": "iris_prod"},
        good={"spec__deploymentRef__name": "iris.prod"},
    ),
    _case(
        "modelmonitor-retrain-dataset-ref-not-dns",
        "ModelMonitor",
        "spec.retrain.datasetRef.name",
        bad={"spec__retrain": {"datasetRef": {"name": "Iris_Data"}}},
        good={"spec__retrain": {"datasetRef": {"name": "iris-data"}}},
    ),
    _case(
        "modelmonitor-drift-method-unknown",
        "ModelMonitor",
        "spec.drift.method",
        bad={"spec__drift": {"method": "wasserstein"}},
        good={"spec__drift": {"method": "jsd"}},
    ),
    _case(
        "modelmonitor-drift-threshold-zero",
        "ModelMonitor",
        "spec.drift.threshold",
        bad={"spec__drift": {"threshold": 0}},
        good={"spec__drift": {"threshold": 0.01}},
    ),
    _case(
        "modelmonitor-drift-features-too-many",
        "ModelMonitor",
        "spec.drift.features",
        bad={"spec__drift": {"features": ["x"] * 1025}},
        good={"spec__drift": {"features": ["x"] * 10}},
    ),
    _case(
        "modelmonitor-interval-zero",
        "ModelMonitor",
        "spec.intervalSeconds",
        bad={"spec__intervalSeconds": 0},
        good={"spec__intervalSeconds": 5},
    ),
    _case(
        "modelmonitor-cooldown-negative",
        "ModelMonitor",
        "spec.retrain.cooldownSeconds",
        bad={"spec__retrain": {"enabled": True, "cooldownSeconds": -1}},
        good={"spec__retrain": {"enabled": True, "cooldownSeconds": 1}},
    ),
    _case(
        "modelmonitor-retrain-enabled-yes",
        "ModelMonitor",
        "spec.retrain.enabled",
        bad={"spec__retrain": {"enabled": "yes"}},
        good={"spec__retrain": {"enabled": True}},
    ),
    _case(
        "modelmonitor-max-concurrent-zero",
        "ModelMonitor",
        "spec.retrain.maxConcurrent",
        bad={"spec__retrain": {"maxConcurrent": 0}},
        good={"spec__retrain": {"maxConcurrent": 1}},
    ),
    _case(
        "modelmonitor-performance-metric-unknown",
        "ModelMonitor",
        "spec.performance.metric",
        bad={"spec__performance": {"metric": "auc", "min": 0.9}},
        good={"spec__performance": {"metric": "accuracy", "min": 0.9}},
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
