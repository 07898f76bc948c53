"""Generate CustomResourceDefinitions from the pydantic models (the single source of truth).

Pydantic emits JSON Schema 2020-12; the API server wants a structural OpenAPI v3 schema. The
conversion inlines references, folds optional `anyOf [X, null]` into X, turns `int | str` into
`x-kubernetes-int-or-string`, free-form maps into `x-kubernetes-preserve-unknown-fields`, and drops
what structural schemas forbid (titles, defaults, `additionalProperties: false` beside properties).

CLI: `modelcycle crds generate [--out DIR] [--check]`, `modelcycle crds print`.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

from modelcycle import GROUP, VERSION, errors
from modelcycle.api import kinds

Schema = dict[str, Any]
_DROPPED_KEYS = {"title", "default", "examples"}


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline `$ref`s; a sibling description on the reference wins over the definition's."""
    if "$ref" in schema:
        target = copy.deepcopy(defs[schema["$ref"].rsplit("/", 1)[-1]])
        extras = {k: v for k, v in schema.items() if k != "$ref"}
        return _resolve({**target, **extras}, defs)
    return schema


def _structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    schema = _resolve(schema, defs)
    out: Schema = {k: v for k, v in schema.items() if k not in _DROPPED_KEYS}

    variants = out.pop("anyOf", None)
    if variants is not None:
        non_null = [_resolve(v, defs) for v in variants if v.get("type") != "null"]
        types = sorted(v.get("type", "") for v in non_null)
        if len(non_null) == 1:
            merged = {**non_null[0], **out}
            return _structural(merged, defs)
        if types == ["integer", "string"]:
            # Structural schemas allow nothing but the types inside the anyOf; the string's
            # bounds move up beside it (JSON Schema applies them to strings only), as Kubernetes
            # does for resource.Quantity.
            for variant in non_null:
                for key in ("minimum", "maxLength", "pattern"):
                    if key in variant:
                        out[key] = variant[key]
            out["x-kubernetes-int-or-string"] = True
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            return out
        raise ValueError(f"cannot express union {types} in a structural schema")

    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[flag] = out[bound]
            out[bound] = True

    if "properties" in out:
        out["type"] = "object"
        out.pop("additionalProperties", None)
        out["properties"] = {name: _structural(sub, defs) for name, sub in out["properties"].items()}
        if out.get("required") == []:
            out.pop("required")
    elif out.get("type") == "object" or "additionalProperties" in out:
        out["type"] = "object"
        values = out.pop("additionalProperties", True)
        if values in (True, {}):
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out["additionalProperties"] = _structural(values, defs)

    if out.get("type") == "array":
        items = out.get("items", {})
        out["items"] = _structural(items, defs) if items else {"x-kubernetes-preserve-unknown-fields": True}
    elif "type" not in out and not out.get("x-kubernetes-int-or-string"):
        # `Any`: a free-form JSON value.
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def model_schema(model: type[Any]) -> Schema:
    """Structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def crd(kind: kinds.Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_schema = model_schema(kind.spec)
    spec_schema["description"] = spec_schema.get("description", f"Desired state of a {kind.kind}.")
    status_schema = model_schema(kind.status)
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if kind.rules:
        root["x-kubernetes-validations"] = [dict(rule) for rule in kind.rules]
    columns = []
    for column in kind.columns:
        entry: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
        if column.description:
            entry["description"] = column.description
        if column.priority:
            entry["priority"] = column.priority
        columns.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "modelcycle"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short_name],
                "categories": ["modelcycle"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def render(kind: kinds.Kind) -> str:
    header = "# Generated by `modelcycle crds generate` from operator/modelcycle/api. Do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100, allow_unicode=True)


def file_name(kind: kinds.Kind) -> str:
    return f"{GROUP}_{kind.plural}.yaml"


def rendered_files() -> dict[str, str]:
    return {file_name(kind): render(kind) for kind in kinds.ALL}


def stale_files(*, out_dir: Path) -> dict[str, str]:
    """Files under out_dir that differ from what the models generate, with a unified diff each."""
    stale: dict[str, str] = {}
    wanted = rendered_files()
    for name, text in wanted.items():
        path = out_dir / name
        current = path.read_text() if path.exists() else ""
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True), f"{path}", "generated"
            )
            stale[name] = "".join(diff)
    for path in out_dir.glob(f"{GROUP}_*.yaml"):
        if path.name not in wanted:
            stale[path.name] = f"{path} is not generated by any kind; delete it\n"
    return stale


def write(*, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_files().items():
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="crds_command", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write crds/*.yaml from the models")
    gen.add_argument("--out", type=Path, default=Path("crds"), help="output directory (default: crds)")
    gen.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are stale")
    sub.add_parser("print", help="print every CRD as one YAML stream (pipe to kubectl apply -f -)")


def run(args: argparse.Namespace) -> int:
    if args.crds_command == "print":
        sys.stdout.write("---\n".join(rendered_files().values()))
        return 0
    if args.check:
        if not args.out.is_dir():
            what = "is not a directory" if args.out.exists() else "does not exist"
            raise errors.UserError(f"{args.out} {what}; run `modelcycle crds generate` in the repo root")
        stale = stale_files(out_dir=args.out)
        for name, diff in stale.items():
            print(f"stale: {name}", file=sys.stderr)
            sys.stderr.write(diff[:4000])
        if stale:
            print("crds are out of date: run `make crds` (modelcycle crds generate)", file=sys.stderr)
            return 1
        print(f"crds up to date ({len(kinds.ALL)} kinds)")
        return 0
    try:
        written = write(out_dir=args.out)
    except OSError as exc:
        # A bad --out (read-only, a file, a missing parent under /proc) is the user's to fix.
        raise errors.UserError(f"cannot write CRDs to {args.out}: {exc.strerror or exc}") from exc
    print(f"wrote {len(written)} file(s) to {args.out}" if written else "crds already up to date")
    return 0
