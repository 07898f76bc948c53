"""Reading the object a workload runs for: `--spec FILE` (YAML or JSON, `-` for stdin) or `--spec-json`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from modelcycle.workloads.results import InvalidSpec

M = TypeVar("M", bound=BaseModel)


def add_spec_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--spec", metavar="FILE", help=f"YAML or JSON file holding the whole {kind} object ('-': stdin)"
    )
    group.add_argument("--spec-json", metavar="JSON", help=f"the whole {kind} object as a JSON string")


def read_document(args: argparse.Namespace) -> dict[str, Any]:
    try:
        if getattr(args, "spec_json", None) is not None:
            doc = json.loads(args.spec_json)
        elif args.spec == "-":
            import yaml

            doc = yaml.safe_load(sys.stdin.read())
        else:
            import yaml

            doc = yaml.safe_load(Path(args.spec).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidSpec(f"cannot read --spec {args.spec}: {exc.strerror or exc}") from exc
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise InvalidSpec(f"the spec is not valid YAML/JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidSpec("the spec must be a YAML/JSON object")
    return doc


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_object(doc: dict[str, Any], kind: str, model: type[M]) -> tuple[M, dict[str, Any]]:
    """The validated spec and the object's metadata. Accepts a whole object or a bare spec."""
    if "spec" in doc or "kind" in doc:
        if doc.get("kind", kind) != kind:
            raise InvalidSpec(f"expected a {kind} object, got kind {doc.get('kind')!r}")
        raw_spec = doc.get("spec")
        metadata = doc.get("metadata") or {}
    else:
        raw_spec, metadata = doc, {}
    if not isinstance(raw_spec, dict):
        raise InvalidSpec(f"the {kind} has no spec object")
    if not isinstance(metadata, dict):
        raise InvalidSpec(f"the {kind} metadata must be an object")
    try:
        return model.model_validate(raw_spec), metadata
    except ValidationError as exc:
        raise InvalidSpec(f"invalid {kind} spec: {_describe(exc, 'spec')}") from exc


def load(args: argparse.Namespace, kind: str, model: type[M]) -> tuple[M, dict[str, Any]]:
    return parse_object(read_document(args), kind, model)
