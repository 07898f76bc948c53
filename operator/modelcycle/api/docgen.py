"""Generate docs/reference.md, the field reference of every kind, from the pydantic models.

Every field of every spec and status with its type, constraints, default and description, plus the
CEL validation rules and printer columns, in the words the models (and so the CRDs and
`kubectl explain`) use. Nothing is written by hand, so the reference cannot drift from the API.

    python -m modelcycle.api.docgen            # write docs/reference.md
    python -m modelcycle.api.docgen --check    # exit 1 when docs/reference.md is stale
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcycle import GROUP, VERSION
from modelcycle.api import kinds

Schema = dict[str, Any]
DEFAULT_OUT = Path("docs/reference.md")


@dataclass(frozen=True)
class Field:
    path: str
    type: str
    required: bool
    default: Any
    has_default: bool
    constraints: tuple[str, ...]
    description: str
    rules: tuple[tuple[str, str, str], ...]
    """CEL rules on this field: (blamed field path relative to it, rule, message)."""


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline `$ref` (the reference's own keys win) and fold `anyOf [X, null]` into X."""
    while "$ref" in schema:
        target = copy.deepcopy(defs[schema["$ref"].rsplit("/", 1)[-1]])
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    variants = schema.get("anyOf")
    if variants is not None:
        non_null = [v for v in variants if v.get("type") != "null"]
        if len(non_null) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return _resolve({**_resolve(non_null[0], defs), **rest}, defs)
    return schema


def _type(schema: Schema, defs: dict[str, Schema]) -> str:
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        names = sorted({_type(v, defs) for v in schema["anyOf"] if v.get("type") != "null"})
        return " or ".join(names)
    kind = schema.get("type")
    if "const" in schema:
        return "string"
    if kind == "array":
        return f"list of {_type(schema.get('items') or {}, defs)}"
    if kind == "object" or "properties" in schema or "additionalProperties" in schema:
        if "properties" in schema:
            return "object"
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"map of {_type(values, defs)}"
        return "object (free-form)"
    if kind is None:
        return "any"
    return str(kind)


def _constraints(schema: Schema) -> tuple[str, ...]:
    out: list[str] = []
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "const" in schema:
        out.append(f"`{schema['const']}`")
    for key, text in (
        ("minimum", "≥ {}"),
        ("exclusiveMinimum", "> {}"),
        ("maximum", "≤ {}"),
        ("exclusiveMaximum", "< {}"),
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
    ):
        if key in schema and not isinstance(schema[key], bool):
            if schema[key] == 1 and key in ("minLength", "minItems"):
                out.append("non-empty")
            else:
                out.append(text.format(schema[key]))
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys", []))
        out.append(f"list keyed by {keys}")
    return tuple(out)


def _rules(schema: Schema) -> tuple[tuple[str, str, str], ...]:
    """(field path the rule blames, relative to the node; rule; message) of each CEL rule on a node."""
    return tuple(
        (r.get("fieldPath", ""), r["rule"], r.get("message", ""))
        for r in schema.get("x-kubernetes-validations", [])
    )


def walk(model: type[Any]) -> Iterator[Field]:
    """Every field of a model, depth first, with dotted paths (`[]` marks list items)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    yield from _walk(raw, defs, prefix="")


def _walk(schema: Schema, defs: dict[str, Schema], *, prefix: str) -> Iterator[Field]:
    schema = _resolve(schema, defs)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], defs, prefix=f"{prefix}[]")
        return
    required = set(schema.get("required", []))
    for name, raw_sub in (schema.get("properties") or {}).items():
        sub = _resolve(raw_sub, defs)
        path = f"{prefix}.{name}" if prefix else name
        yield Field(
            path=path,
            type=_type(sub, defs),
            required=name in required,
            default=sub.get("default"),
            has_default="default" in sub and sub["default"] is not None,
            constraints=_constraints(sub),
            description=" ".join(str(sub.get("description", "")).split()),
            rules=_rules(sub),
        )
        yield from _walk(sub, defs, prefix=path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    return f"`{value}`" if isinstance(value, str) and value else f"`{json.dumps(value)}`"


def _table(model: type[Any], root: str, object_rules: Sequence[dict[str, Any]] = ()) -> list[str]:
    lines = [
        "| Field | Type | Required | Default | Description |",
        "|---|---|---|---|---|",
    ]
    rules: list[tuple[str, str, str]] = []
    top = model.model_json_schema(by_alias=True, mode="validation")
    for entry in object_rules:
        rules.append((entry["fieldPath"].lstrip("."), entry["rule"], entry["message"]))
    for field_path, rule, message in _rules(top):
        rules.append((f"{root}{field_path}", rule, message))
    for field in walk(model):
        description = field.description
        if field.constraints:
            description = f"{description} *({'; '.join(field.constraints)})*".strip()
        lines.append(
            f"| `{_cell(field.path)}` | {_cell(field.type)} | {'yes' if field.required else ''} | "
            f"{_cell(_default(field.default)) if field.has_default else ''} | {_cell(description)} |"
        )
        for field_path, rule, message in field.rules:
            rules.append((f"{root}.{field.path}{field_path}", rule, message))
    if rules:
        lines += ["", "Validation rules (CEL, enforced by the API server):", ""]
        lines += [f"- `{path}`: {message} — `{rule}`" for path, rule, message in rules]
    return lines


def render() -> str:
    lines = [
        "# API reference",
        "",
        "<!-- Generated by `python -m modelcycle.api.docgen` from operator/modelcycle/api. Do not edit;",
        "     tests/unit/test_docgen.py fails when this file is stale. -->",
        "",
        f"API group `{GROUP}`, version `{VERSION}`. Every kind is namespaced, has a `status` subresource",
        "and belongs to the category `modelcycle` (`kubectl get modelcycle` lists them all).",
        "Field names are camelCase; paths below are relative to `spec` or `status`, and `[]` marks the",
        "items of a list. The same descriptions are served by the API server: "
        "`kubectl explain dataset.spec.source`.",
        "",
        "Every status carries `observedGeneration` and `conditions` (`Ready`, plus `Reconciling` or",
        "`Stalled` when they apply, plus kind-specific types); see docs/troubleshooting.md for the reasons.",
        "",
        "| Kind | Short name | Plural | What it is |",
        "|---|---|---|---|",
    ]
    for kind in kinds.ALL:
        link = f"[{kind.kind}](#{kind.kind.lower()})"
        lines.append(f"| {link} | `{kind.short_name}` | `{kind.plural}` | {kind.description} |")
    for kind in kinds.ALL:
        lines += ["", f"## {kind.kind}", "", kind.description, ""]
        lines.append(
            f"`apiVersion: {GROUP}/{VERSION}`, `kind: {kind.kind}`; "
            f"`kubectl get {kind.plural}` (or `{kind.short_name}`)."
        )
        spec_doc = " ".join((kind.spec.__doc__ or "").split())
        lines += ["", f"### {kind.kind} spec", "", spec_doc, ""]
        lines += _table(kind.spec, "spec", kind.rules)
        status_doc = " ".join((kind.status.__doc__ or "").split())
        lines += ["", f"### {kind.kind} status", "", status_doc, ""]
        lines += _table(kind.status, "status")
        lines += [
            "",
            f"### {kind.kind} printer columns",
            "",
            "| Column | JSONPath | Shown |",
            "|---|---|---|",
        ]
        for column in kind.columns:
            shown = "with `-o wide`" if column.priority else "always"
            lines.append(f"| {column.name} | `{_cell(column.json_path)}` | {shown} |")
    return "\n".join(lines) + "\n"


def stale(path: Path) -> str | None:
    """A unified diff when `path` differs from the generated reference, else None."""
    wanted = render()
    current = path.read_text() if path.exists() else ""
    if current == wanted:
        return None
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True), wanted.splitlines(keepends=True), str(path), "generated"
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelcycle.api.docgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output file (default: docs/reference.md)"
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is stale")
    args = parser.parse_args(argv)
    if args.check:
        diff = stale(args.out)
        if diff is not None:
            sys.stderr.write(diff[:6000])
            print(f"{args.out} is stale: run `python -m modelcycle.api.docgen`", file=sys.stderr)
            return 1
        print(f"{args.out} up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
