"""Validate ModelCycle objects the way the API server admits them, without one.

The API server checks a created custom object in these steps, and so does this module:

1. strict field validation (what `kubectl apply` asks for): a field the structural schema does
   not declare is refused (`unknown field "spec.foo"`), and so is an invalid `metadata.name`;
2. the openAPIV3Schema (here: `jsonschema` with the Draft 4 dialect, whose boolean
   `exclusiveMinimum` / `exclusiveMaximum` match OpenAPI v3.0; `x-kubernetes-*` keys are not
   JSON Schema and are left out, and int-or-string is already an `anyOf` in our CRDs);
3. every `x-kubernetes-validations` CEL rule (with `cel-python`) at the node where it sits: `self`
   is that node's value, typed by its schema; a rule's `fieldPath` says which field it blames;
   rules that use `oldSelf` are transition rules and run only on updates.

`status` is ignored on create, as the status subresource makes the API server do. Errors read like
the API server's (`spec.replicas: Invalid value: ...`) with the same field paths, which is what
`modelcycle check` prints and what tests/integration/test_check_agreement.py holds against a real
API server. Needs the `check` extra (cel-python, jsonschema).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

from modelcycle.api import common, crdgen, kinds

Schema = dict[str, Any]
PathParts = tuple[str | int, ...]
_MISSING: Any = object()  # "no old value here", distinct from an explicit null

METADATA_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "ownerReferences",
        "finalizers",
        "managedFields",
        "selfLink",
    }
)
_SUBDOMAIN = re.compile(common.DNS_SUBDOMAIN)
_LABEL = re.compile(common.DNS_LABEL)
# CEL rule reasons and how the API server words each (k8s.io/apimachinery field.ErrorType).
_REASON_TEXT = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
}


def field_path(parts: Sequence[str | int]) -> str:
    """`spec.schema[0].type` from ("spec", "schema", 0, "type"), as the API server writes paths."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class FieldError:
    """One refusal, located by the path of the field it blames."""

    parts: PathParts
    message: str

    @property
    def path(self) -> str:
        """API-server-style field path such as `spec.schema[0].type` (`<nil>` for the object)."""
        return field_path(self.parts) or "<nil>"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def names_field(message: str, field: str) -> bool:
    """Whether an error message blames `field` itself.

    The API server writes `<field>: <reason>` for a refused value and, under strict field
    validation, `unknown field "<field>"` or `duplicate field "<field>"`.
    """
    return any(
        form in message for form in (f"{field}: ", f'unknown field "{field}"', f'duplicate field "{field}"')
    )


# ---------------------------------------------------------------------------------------------
# step 1: strict field validation


def unknown_fields(value: Any, schema: Schema, parts: PathParts = ()) -> Iterator[FieldError]:
    """Every field of value that the structural schema does not declare."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        values = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield from unknown_fields(item, properties[key], (*parts, key))
            elif isinstance(values, dict):
                yield from unknown_fields(item, values, (*parts, key))
            else:
                where = field_path((*parts, key))
                yield FieldError((*parts, key), f'unknown field "{where}"')
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], (*parts, index))


def _dns_message(value: str, label: bool) -> str:
    if label:
        limit, shape = (
            63,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
        )
    else:
        limit, shape = (
            253,
            ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
        )
    if len(value) > limit:
        return f"Invalid value: {_describe(value)}: must be no more than {limit} characters"
    return (
        f"Invalid value: {_describe(value)}: {shape}, and must start and end with an alphanumeric character"
    )


def metadata_errors(metadata: Any) -> list[FieldError]:
    """What the API server checks of a new object's metadata: name, namespace, unknown fields."""
    if not isinstance(metadata, dict):
        return [FieldError(("metadata",), "Invalid type: metadata must be an object")]
    errors = [
        FieldError(("metadata", key), f'unknown field "metadata.{key}"')
        for key in metadata
        if key not in METADATA_FIELDS
    ]
    name = metadata.get("name")
    if not name:
        errors.append(FieldError(("metadata", "name"), "Required value: name or generateName is required"))
    elif not isinstance(name, str) or len(name) > common.MAX_NAME or not _SUBDOMAIN.match(name):
        errors.append(FieldError(("metadata", "name"), _dns_message(str(name), label=False)))
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > common.MAX_LABEL or not _LABEL.match(namespace)
    ):
        errors.append(FieldError(("metadata", "namespace"), _dns_message(str(namespace), label=True)))
    return errors


# ---------------------------------------------------------------------------------------------
# step 2: the OpenAPI schema


def to_json_schema(schema: Any) -> Any:
    """The CRD schema as Draft 4 JSON Schema: the same keywords minus the Kubernetes extensions."""
    if isinstance(schema, dict):
        return {k: to_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [to_json_schema(v) for v in schema]
    return schema


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if isinstance(value, str):
        return f'"{value[:64]}..."' if len(value) > 64 else f'"{value}"'
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


_SKIPS_CEL = ("Required value", "Unsupported value", "Invalid type")
_CEL_NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


def _schema_errors(validator: jsonschema.protocols.Validator, obj: Any) -> list[FieldError]:
    errors: list[FieldError] = []
    for error in validator.iter_errors(obj):
        parts: PathParts = tuple(error.absolute_path)
        if error.validator == "required":
            # jsonschema reports the parent; the API server names the missing field itself.
            missing = [
                n
                for n in error.validator_value
                if isinstance(error.instance, dict) and n not in error.instance
            ]
            errors.extend(FieldError((*parts, name), "Required value") for name in missing)
        elif error.validator == "enum":
            allowed = ", ".join(_describe(v) for v in error.validator_value)
            errors.append(
                FieldError(
                    parts, f"Unsupported value: {_describe(error.instance)}: supported values: {allowed}"
                )
            )
        elif error.validator == "type":
            errors.append(FieldError(parts, f"Invalid type: {_describe(error.instance)}: {error.message}"))
        else:
            message = error.message if len(error.message) < 300 else error.message[:300] + "..."
            errors.append(FieldError(parts, f"Invalid value: {_describe(error.instance)}: {message}"))
    return errors


# ---------------------------------------------------------------------------------------------
# step 3: CEL rules


@cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def compile_rules(schema: Schema) -> None:
    """Compile every rule once, so a rule that does not parse fails loudly (as the API server would)."""
    for rule in schema.get("x-kubernetes-validations", []):
        _program(rule["rule"])
    for child in _children(schema):
        compile_rules(child)


def _children(schema: Schema) -> Iterator[Schema]:
    yield from schema.get("properties", {}).values()
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield schema[key]
    yield from schema.get("anyOf", [])


def to_cel(value: Any, schema: Schema) -> Any:
    """A JSON value as the CEL type the API server gives it: declared numbers are doubles, and so on."""
    if value is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.IntType(value) if isinstance(value, int) else celtypes.StringType(value)
    kind = schema.get("type")
    if kind is None:  # free-form (x-kubernetes-preserve-unknown-fields)
        return celpy.json_to_cel(value)
    if kind == "object" and isinstance(value, dict):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        values = schema.get("additionalProperties")
        free: Schema = {}
        return celtypes.MapType(
            {
                celtypes.StringType(k): to_cel(
                    v, properties.get(k, values if isinstance(values, dict) else free)
                )
                for k, v in value.items()
            }
        )
    if kind == "array" and isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items", {})) for v in value])
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return celtypes.IntType(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(value)
    if kind == "string" and isinstance(value, str):
        return celtypes.StringType(value)
    if kind == "boolean" and isinstance(value, bool):
        return celtypes.BoolType(value)
    # A value of the wrong type was already reported by the schema step.
    return celpy.json_to_cel(value)


def _is_transition_rule(rule: str) -> bool:
    # The API server decides by whether the compiled rule references oldSelf; for our rules the
    # identifier appearing in the text is the same test.
    return "oldSelf" in rule


def _blamed(parts: PathParts, rule: Mapping[str, Any]) -> PathParts:
    relative = str(rule.get("fieldPath", "")).lstrip(".")
    return (*parts, *relative.split(".")) if relative else parts


def _cel_errors(schema: Schema, value: Any, old: Any, parts: PathParts) -> list[FieldError]:
    errors: list[FieldError] = []
    if value is None:
        return errors
    for rule in schema.get("x-kubernetes-validations", []):
        expression: str = rule["rule"]
        activation: dict[str, Any] = {"self": to_cel(value, schema)}
        if _is_transition_rule(expression):
            if old is _MISSING or old is None:
                continue
            activation["oldSelf"] = to_cel(old, schema)
        where = _blamed(parts, rule)
        try:
            result = _program(expression).evaluate(activation)
        except celpy.CELEvalError as exc:
            # The API server refuses the object when a rule cannot be evaluated (for example it
            # reads an optional field that is absent), so a sloppy rule shows up as a refusal.
            errors.append(
                FieldError(where, f"Invalid value: {_describe(value)}: rule evaluation error: {exc.args[0]}")
            )
            continue
        if isinstance(result, celpy.CELEvalError):
            errors.append(
                FieldError(where, f"Invalid value: {_describe(value)}: rule evaluation error: {result}")
            )
        elif not bool(result):
            message = rule.get("message") or f"failed rule: {expression}"
            text = _REASON_TEXT.get(str(rule.get("reason", "FieldValueInvalid")), "Invalid value")
            errors.append(FieldError(where, f"{text}: {message}"))

    if isinstance(value, dict):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        values = schema.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key, values if isinstance(values, dict) else None)
            if child is not None:
                old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                errors.extend(_cel_errors(child, item, old_item, (*parts, key)))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        # Old list items are correlated only for map-type lists; none of our rules need that.
        for index, item in enumerate(value):
            errors.extend(_cel_errors(schema["items"], item, _MISSING, (*parts, index)))
    return errors


# ---------------------------------------------------------------------------------------------
# the validator of one CRD


def prune(value: Any, schema: Schema) -> Any:
    """A copy of value without the fields the structural schema does not declare."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return copy.deepcopy(value)
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        values = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in properties:
                out[key] = prune(item, properties[key])
            elif isinstance(values, dict):
                out[key] = prune(item, values)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return copy.deepcopy(value)


class CrdValidator:
    """Validates objects of one kind against its CRD's openAPIV3Schema and CEL rules."""

    def __init__(self, crd: Mapping[str, Any]) -> None:
        self.kind: str = crd["spec"]["names"]["kind"]
        self.plural: str = crd["spec"]["names"]["plural"]
        self.group: str = crd["spec"]["group"]
        (version,) = crd["spec"]["versions"]
        self.version: str = version["name"]
        self.schema: Schema = version["schema"]["openAPIV3Schema"]
        json_schema = to_json_schema(self.schema)
        jsonschema.Draft4Validator.check_schema(json_schema)
        self._validator = jsonschema.Draft4Validator(json_schema)
        compile_rules(self.schema)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def prune(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """obj as the API server stores it: undeclared fields dropped, metadata left to its own rules."""
        pruned: dict[str, Any] = prune(dict(obj), self.schema)
        if "metadata" in obj:
            pruned["metadata"] = copy.deepcopy(obj["metadata"])
        return pruned

    def errors(
        self, obj: Mapping[str, Any], *, old: Mapping[str, Any] | None = None, strict: bool = False
    ) -> list[FieldError]:
        """Why the API server would refuse to create obj (or to update old to obj); empty if it would not.

        strict: refuse unknown fields and an invalid metadata.name (what `kubectl apply` asks the API
        server for) instead of dropping them silently (what a plain API request gets).
        """
        created = {k: v for k, v in obj.items() if k != "status"} if old is None else dict(obj)
        if strict:
            unknown = list(unknown_fields({k: v for k, v in created.items() if k != "metadata"}, self.schema))
            if unknown:
                # Strict decoding fails before the object is validated at all, as on the API server.
                return unknown
        errors = metadata_errors(created.get("metadata", {})) if strict else []
        pruned = self.prune(created)
        errors += _schema_errors(self._validator, pruned)
        if any(e.message.startswith(_SKIPS_CEL) for e in errors):
            # Like the API server: with a field missing, of the wrong type or outside its enum, CEL
            # rules could only fail with evaluation errors, so they are not run at all.
            return [*errors, FieldError((), f"Invalid value: null: {_CEL_NOT_CHECKED}")]
        old_pruned = self.prune(old) if old is not None else _MISSING
        errors.extend(_cel_errors(self.schema, pruned, old_pruned, ()))
        return errors


def load_crds(crd_dir: Path) -> dict[str, dict[str, Any]]:
    """The CRDs in a directory (such as the repository's crds/), by kind."""
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        crds[document["spec"]["names"]["kind"]] = document
    return crds


@cache
def validators() -> dict[str, CrdValidator]:
    """A validator per kind, from the CRDs the models generate (the ones `modelcycle crds` writes)."""
    return {kind.kind: CrdValidator(crdgen.crd(kind)) for kind in kinds.ALL}
