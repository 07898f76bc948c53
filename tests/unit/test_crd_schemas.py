"""The generated CRDs accept every example and refuse malformed objects, naming the offending field.

Checked offline with modelcycle.api.admission (the openAPIV3Schema via jsonschema, the
CEL rules via cel-python); tests/integration/test_crd_admission.py sends the same objects to a
real API server.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelcycle import API_VERSION
from modelcycle.api import crdgen, kinds
from modelcycle.api.admission import CrdValidator, FieldError, names_field, validators
from support import malformed_cases as cases

VALIDATORS = validators()
EXAMPLES = cases.load_examples()


def _errors(
    kind: str, obj: dict[str, Any], *, old: dict[str, Any] | None = None, strict: bool = True
) -> list[FieldError]:
    return VALIDATORS[kind].errors(obj, old=old, strict=strict)


def _cel_rules(schema: Any) -> list[dict[str, Any]]:
    """Every CEL rule in a schema tree."""
    if isinstance(schema, dict):
        found = list(schema.get("x-kubernetes-validations", []))
        return found + [r for value in schema.values() for r in _cel_rules(value)]
    if isinstance(schema, list):
        return [r for value in schema for r in _cel_rules(value)]
    return []


def _unbounded(schema: Any, path: str) -> list[str]:
    """Strings without maxLength (or an enum) and lists without maxItems, by path."""
    if not isinstance(schema, dict):
        return []
    found = []
    if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
        found.append(path)
    if schema.get("x-kubernetes-int-or-string") and "maxLength" not in schema:
        found.append(path)
    if schema.get("type") == "array" and "maxItems" not in schema:
        found.append(path)
    values = schema.get("additionalProperties")
    if schema.get("type") == "object" and isinstance(values, dict) and "maxProperties" not in schema:
        found.append(path)
    for name, sub in (schema.get("properties") or {}).items():
        found += _unbounded(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        found += _unbounded(schema.get(key), f"{path}[]" if key == "items" else f"{path}{{}}")
    return found


@pytest.mark.parametrize("kind", kinds.ALL, ids=[k.kind for k in kinds.ALL])
def test_every_spec_string_list_and_map_is_bounded(kind: kinds.Kind) -> None:
    schema = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert _unbounded(schema, "spec") == []


@pytest.mark.parametrize("kind", kinds.ALL, ids=[k.kind for k in kinds.ALL])
def test_every_cel_rule_names_its_field_and_reason(kind: kinds.Kind) -> None:
    for rule in _cel_rules(crdgen.crd(kind)):
        assert rule.get("fieldPath", "").startswith("."), rule
        assert rule.get("reason") in ("FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"), rule


def _cel_messages(schema: Any) -> list[str]:
    """Every CEL rule's message in a schema tree."""
    if isinstance(schema, dict):
        found = [rule["message"] for rule in schema.get("x-kubernetes-validations", [])]
        return found + [m for value in schema.values() for m in _cel_messages(value)]
    if isinstance(schema, list):
        return [m for value in schema for m in _cel_messages(value)]
    return []


def test_there_is_a_crd_for_every_kind() -> None:
    assert set(VALIDATORS) == {k.kind for k in kinds.ALL}


def test_examples_cover_every_kind() -> None:
    assert {e.kind for e in EXAMPLES} == {k.kind for k in kinds.ALL}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_uses_the_served_api_version_and_has_a_name(example: cases.Example) -> None:
    assert example.object["apiVersion"] == API_VERSION
    assert example.object["metadata"]["name"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_is_accepted_by_its_crd(example: cases.Example) -> None:
    assert [str(e) for e in _errors(example.kind, example.object)] == []


@pytest.mark.parametrize("case", cases.VALID, ids=[c.id for c in cases.VALID])
def test_object_at_the_edge_of_the_rules_is_accepted(case: cases.ValidCase) -> None:
    assert [str(e) for e in _errors(case.kind, case.object)] == []


@pytest.mark.parametrize("case", cases.MALFORMED, ids=[c.id for c in cases.MALFORMED])
def test_malformed_object_is_refused_naming_the_field(case: cases.MalformedCase) -> None:
    messages = [str(e) for e in _errors(case.kind, case.object)]
    assert messages, f"{case.id} was accepted"
    assert any(names_field(m, case.field) for m in messages), f"no error names {case.field}: {messages}"


@pytest.mark.parametrize("case", cases.MALFORMED, ids=[c.id for c in cases.MALFORMED])
def test_valid_twin_of_a_malformed_object_is_accepted(case: cases.MalformedCase) -> None:
    assert [str(e) for e in _errors(case.kind, case.twin)] == []


def test_malformed_cases_are_many_distinct_and_cover_every_kind() -> None:
    ids = [c.id for c in cases.MALFORMED]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids)
    assert {c.kind for c in cases.MALFORMED} == {k.kind for k in kinds.ALL}


def test_every_cel_rule_is_exercised_by_a_malformed_case() -> None:
    # A new rule without a case here would be checked by nothing before a real API server.
    refused = {str(e) for c in cases.MALFORMED for e in _errors(c.kind, c.object)}
    old, new, _ = cases.immutable_update()
    refused |= {str(e) for e in _errors("ModelVersion", new, old=old)}
    messages = {m for kind in kinds.ALL for m in _cel_messages(crdgen.crd(kind))}
    assert messages
    unexercised = sorted(m for m in messages if not any(m in r for r in refused))
    assert unexercised == []


def test_modelversion_spec_change_is_refused_as_immutable() -> None:
    old, new, field = cases.immutable_update()
    messages = [str(e) for e in _errors("ModelVersion", new, old=old)]
    assert any(names_field(m, field) and "immutable" in m for m in messages), messages


def test_modelversion_immutability_does_not_apply_on_create() -> None:
    # Transition rules (oldSelf) only run on updates: creating any valid version is fine.
    _, new, _ = cases.immutable_update()
    assert _errors("ModelVersion", new) == []


def test_modelversion_label_change_is_allowed() -> None:
    old, new = cases.metadata_update()
    assert _errors("ModelVersion", new, old=old) == []


def test_unknown_spec_field_is_pruned_not_refused() -> None:
    # The API server drops fields the schema does not declare; the pydantic models refuse them
    # (tests/unit/test_api_models.py), which is why no malformed case relies on an unknown field.
    obj = cases.with_changes(cases.BASES["Dataset"], "typo", {"spec.refreshSecond": 60})
    validator = VALIDATORS["Dataset"]
    assert validator.errors(obj) == []
    assert [str(e) for e in validator.errors(obj, strict=True)] == [
        'spec.refreshSecond: unknown field "spec.refreshSecond"'
    ]
    assert "refreshSecond" not in validator.prune(obj)["spec"]
    assert validator.prune(obj)["metadata"] == obj["metadata"]


def _toy_crd(rule: str) -> dict[str, Any]:
    spec = {
        "type": "object",
        "properties": {"low": {"type": "integer"}, "high": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": rule, "message": "low must not exceed high"}],
    }
    return {
        "spec": {
            "group": "example.com",
            "names": {"kind": "Toy", "plural": "toys"},
            "versions": [
                {
                    "name": "v1",
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        }
    }


def test_a_rule_that_reads_an_absent_optional_field_refuses_the_object() -> None:
    # The API server refuses an object when a rule cannot be evaluated; the engine must too, or a
    # sloppy rule (like `self.low <= self.high` with `low` optional) would pass unit tests only.
    toy = CrdValidator(_toy_crd("self.low <= self.high"))
    messages = [str(e) for e in toy.errors({"spec": {"high": 3}})]
    assert any(names_field(m, "spec") and "evaluation error" in m for m in messages), messages
    guarded = CrdValidator(_toy_crd("!has(self.low) || self.low <= self.high"))
    assert guarded.errors({"spec": {"high": 3}}) == []
    assert [str(e) for e in guarded.errors({"spec": {"low": 4, "high": 3}})] == [
        "spec: Invalid value: low must not exceed high"
    ]
