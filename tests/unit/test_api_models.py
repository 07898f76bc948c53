"""The pydantic models read and write specs in camelCase, refuse what the CRDs refuse, and apply defaults."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from modelcycle.api import kinds
from modelcycle.api.common import KubeModel
from support import malformed_cases as cases

EXAMPLES = cases.load_examples()
SPEC_CASES = [c for c in cases.MALFORMED if "spec" in c.object and c.field.startswith("spec.")]


def _spec_model(kind: str) -> type[KubeModel]:
    return kinds.BY_KIND[kind].spec


def _contains(whole: Any, part: Any) -> bool:
    """Whether `part` is `whole` with some keys left out (the keys a dump adds are defaults)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(whole) == len(part) and all(map(_contains, whole, part))
    return bool(whole == part)


def _loc(field: str) -> tuple[str | int, ...]:
    """`spec.schema[0].type` as a pydantic error location of the spec model: ("schema", 0, "type")."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field.removeprefix("spec.")):
        parts.append(int(index) if index else name)
    return tuple(parts)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_spec_round_trips_in_camel_case(example: cases.Example) -> None:
    spec = example.object["spec"]
    model = _spec_model(example.kind).model_validate(spec)
    dumped = model.to_json_dict()
    assert _contains(dumped, spec), f"{dumped} lost or changed part of {spec}"
    assert _spec_model(example.kind).model_validate(dumped) == model


def test_python_names_map_to_the_api_names() -> None:
    run = _spec_model("TrainingRun").model_validate(
        {"datasetRef": {"name": "iris"}, "model": {"name": "iris"}, "estimator": {"class": "sklearn.svm.SVC"}}
    )
    dumped = run.to_json_dict()
    assert dumped["datasetRef"] == {"name": "iris"}
    assert dumped["estimator"]["class"] == "sklearn.svm.SVC"  # `class_` in Python
    dataset = _spec_model("Dataset").model_validate(
        {"source": {"configMap": {"name": "iris", "key": "iris.csv"}}, "schema": [{"name": "x"}]}
    )
    assert set(dataset.to_json_dict()) >= {"source", "schema"}  # `schema_` in Python
    assert dataset.to_json_dict()["source"] == {"configMap": {"name": "iris", "key": "iris.csv"}}


UNKNOWN_FIELDS = [
    (
        "dataset-top-level",
        "Dataset",
        {"source": {"builtin": {"name": "iris"}}, "refreshSecond": 60},
        "refreshSecond",
    ),
    (
        "trainingrun-nested",
        "TrainingRun",
        {
            "datasetRef": {"name": "iris"},
            "model": {"name": "iris"},
            "estimator": {"klass": "sklearn.svm.SVC"},
        },
        "klass",
    ),
    (
        "modelversion-nested",
        "ModelVersion",
        {"model": "iris", "version": 1, "artifact": {"uri": "pvc://m", "sha256": "ab" * 32, "checksum": "x"}},
        "checksum",
    ),
    ("modeldeployment-snake-case", "ModelDeployment", {"model": "iris", "max_replicas": 3}, "max_replicas"),
    (
        "modelmonitor-nested",
        "ModelMonitor",
        {"deploymentRef": {"name": "iris"}, "drift": {"treshold": 0.1}},
        "treshold",
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "field"), [c[1:] for c in UNKNOWN_FIELDS], ids=[c[0] for c in UNKNOWN_FIELDS]
)
def test_unknown_field_is_refused_by_the_models_naming_it(
    kind: str, spec: dict[str, Any], field: str
) -> None:
    # The API server would silently prune it; the models are the strict reader of a spec.
    with pytest.raises(ValidationError) as excinfo:
        _spec_model(kind).model_validate(spec)
    errors = excinfo.value.errors()
    assert any(e["type"] == "extra_forbidden" and e["loc"][-1] == field for e in errors), errors


MINIMAL_SPECS = {kind: base["spec"] for kind, base in cases.BASES.items()}
DEFAULTS = [
    ("Dataset", "format", "csv"),
    ("Dataset", "target", "target"),
    ("TrainingRun", "backoffLimit", 1),
    ("TrainingRun", "activeDeadlineSeconds", 3600),
    ("ModelVersion", "artifact.format", "skops"),
    ("ModelDeployment", "version", "latest"),
    ("ModelDeployment", "replicas", 1),
    ("ModelDeployment", "progressDeadlineSeconds", 300),
    ("ModelMonitor", "intervalSeconds", 60),
]


@pytest.mark.parametrize(("kind", "path", "expected"), DEFAULTS, ids=[f"{k}.{p}" for k, p, _ in DEFAULTS])
def test_default_is_applied_when_the_field_is_left_out(kind: str, path: str, expected: Any) -> None:
    value: Any = _spec_model(kind).model_validate(MINIMAL_SPECS[kind]).to_json_dict()
    for part in path.split("."):
        value = value[part]
    assert value == expected


NESTED_DEFAULTS = [
    ("TrainingRun", {"split": {}}, "split", {"testFraction": 0.2, "seed": 42, "stratify": True}),
    ("ModelDeployment", {"strategy": {}}, "strategy", {"type": "Rolling"}),
    (
        "ModelDeployment",
        {"strategy": {"type": "Canary", "canary": {}}},
        "strategy.canary",
        {"weight": 10, "promoteAfterSeconds": 60},
    ),
    (
        "ModelDeployment",
        {"autoscaling": {"maxReplicas": 4}},
        "autoscaling",
        {"minReplicas": 1, "maxReplicas": 4, "targetCpu": 70},
    ),
    ("ModelMonitor", {"drift": {}}, "drift", {"method": "ks", "threshold": 0.05, "minSamples": 200}),
    (
        "ModelMonitor",
        {"retrain": {}},
        "retrain",
        {"enabled": False, "cooldownSeconds": 3600, "maxConcurrent": 1},
    ),
]


@pytest.mark.parametrize(
    ("kind", "extra", "path", "expected"), NESTED_DEFAULTS, ids=[f"{k}.{p}" for k, _, p, _ in NESTED_DEFAULTS]
)
def test_defaults_fill_an_empty_section(kind: str, extra: dict[str, Any], path: str, expected: Any) -> None:
    value: Any = _spec_model(kind).model_validate({**MINIMAL_SPECS[kind], **extra}).to_json_dict()
    for part in path.split("."):
        value = value[part]
    assert value == expected


@pytest.mark.parametrize("case", SPEC_CASES, ids=[c.id for c in SPEC_CASES])
def test_models_refuse_what_the_crds_refuse_naming_the_field(case: cases.MalformedCase) -> None:
    # The CEL rules are mirrored by validators in the models; this keeps the two in step.
    with pytest.raises(ValidationError) as excinfo:
        _spec_model(case.kind).model_validate(case.object["spec"])
    locations = [e["loc"] for e in excinfo.value.errors()]
    expected = _loc(case.field)
    assert any(loc[: len(expected)] == expected for loc in locations), f"{expected} not in {locations}"


@pytest.mark.parametrize("case", cases.VALID, ids=[c.id for c in cases.VALID])
def test_models_accept_what_the_crds_accept(case: cases.ValidCase) -> None:
    _spec_model(case.kind).model_validate(case.object["spec"])


@pytest.mark.parametrize("case", cases.MALFORMED, ids=[c.id for c in cases.MALFORMED])
def test_models_accept_the_valid_twin_of_every_malformed_object(case: cases.MalformedCase) -> None:
    _spec_model(case.kind).model_validate(case.twin["spec"])
