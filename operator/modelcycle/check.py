"""`modelcycle check`: validate ModelCycle manifests offline, with exactly the API server's rules.

    modelcycle check -f FILE|DIR|- [-f ...] [--output text|json] [--require-refs]

Every ModelCycle object in the files (a directory is searched for *.yaml, *.yml and *.json; `-` is
stdin; other kinds such as an Argo CD Application are skipped) is checked as `kubectl apply` would
have the API server check it (modelcycle.api.admission): strict field validation (unknown and
duplicate fields refused), metadata.name, the structural schema and the CEL rules of the CRDs the
installed version generates. Then one check across the set: each `datasetRef` / `deploymentRef`
points to an object in the same set (same namespace), or is reported as external, a note that
only `--require-refs` turns into a finding.

Each finding is one line, `file:line: kind/name: field: message`; `--output json` prints one JSON
document instead. Exit 0 when clean, 1 on findings, 2 when an input cannot be read or parsed.
This is the pre-merge check of a GitOps repository (docs/install.md, examples/gitops).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from modelcycle import GROUP, VERSION, errors

SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
# (kind holding the reference, path of the reference's name, kind it names)
REFERENCES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("TrainingRun", ("spec", "datasetRef", "name"), "Dataset"),
    ("ModelMonitor", ("spec", "deploymentRef", "name"), "ModelDeployment"),
    ("ModelMonitor", ("spec", "retrain", "datasetRef", "name"), "Dataset"),
)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    kind: str
    name: str
    field: str
    message: str
    severity: str = "error"
    """`error`, or `note` for an external reference (an error with --require-refs)."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}/{self.name}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Document:
    file: str
    node: yaml.Node
    value: Any

    def line(self, parts: Sequence[str | int]) -> int:
        """The line of the deepest node on the path that exists (1-based)."""
        node = self.node
        for part in parts:
            child = _child(node, part)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1

    @property
    def kind(self) -> str:
        return str(self.value.get("kind") or "<no kind>")

    @property
    def name(self) -> str:
        metadata = self.value.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return str(name) if name else "<no name>"

    @property
    def namespace(self) -> str:
        metadata = self.value.get("metadata")
        return str(metadata.get("namespace") or "") if isinstance(metadata, dict) else ""


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    return None


class Unreadable(Exception):
    """An input that cannot be read or parsed (exit 2)."""


def _files(target: str) -> Iterator[Path | None]:
    """The files named by one -f argument; None stands for stdin."""
    if target == STDIN:
        yield None
        return
    path = Path(target)
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    elif path.exists():
        yield path
    else:
        raise Unreadable(f"{target}: no such file or directory")


def read_documents(label: str, text: str) -> list[Document]:
    """Every non-empty YAML document of a file, with its node tree (for line numbers)."""
    loader = yaml.SafeLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            value = loader.construct_document(node)
            if value is not None:
                documents.append(Document(label, node, value))
    except yaml.YAMLError as exc:
        raise Unreadable(f"{label}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return documents


def _duplicates(
    node: yaml.Node, parts: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], int]]:
    """Paths of fields given twice in one mapping (the API server's strict decoding refuses them)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                yield (*parts, name), key.start_mark.line + 1
            seen.add(name)
            yield from _duplicates(value, (*parts, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicates(item, (*parts, index))


def _is_modelcycle(value: Any) -> bool:
    return isinstance(value, dict) and str(value.get("apiVersion", "")).split("/")[0] == GROUP


def check_document(document: Document) -> list[Finding]:
    """What the API server would refuse in one ModelCycle object."""
    from modelcycle.api import admission

    def finding(parts: Sequence[str | int], message: str) -> Finding:
        return Finding(
            document.file,
            document.line(parts),
            document.kind,
            document.name,
            admission.field_path(parts) or "<nil>",
            message,
        )

    duplicates = list(_duplicates(document.node))
    if duplicates:
        return [
            Finding(
                document.file, line, document.kind, document.name, admission.field_path(p), "duplicate field"
            )
            for p, line in duplicates
        ]
    obj = document.value
    version = str(obj.get("apiVersion", "")).split("/", 1)[-1]
    if version != VERSION:
        return [finding(("apiVersion",), f"{GROUP} serves version {VERSION}, not {version!r}")]
    validators = admission.validators()
    if obj.get("kind") not in validators:
        return [finding(("kind",), f"unknown kind; {GROUP}/{VERSION} has {', '.join(sorted(validators))}")]
    return [finding(error.parts, error.message) for error in validators[obj["kind"]].errors(obj, strict=True)]


def _get(value: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def check_references(documents: Sequence[Document]) -> list[Finding]:
    """Each datasetRef / deploymentRef names an object of the set, or is noted as external."""
    present = {(d.kind, d.namespace, d.name) for d in documents}
    notes = []
    for document in documents:
        for kind, parts, target in REFERENCES:
            name = _get(document.value, parts) if document.kind == kind else None
            if not isinstance(name, str) or (target, document.namespace, name) in present:
                continue
            where = (
                f"namespace {document.namespace}" if document.namespace else "the namespace it is applied to"
            )
            notes.append(
                Finding(
                    document.file,
                    document.line(parts),
                    document.kind,
                    document.name,
                    ".".join(parts),
                    f"external reference: {target}/{name} is not in the checked files; "
                    f"it must exist in {where}",
                    severity="note",
                )
            )
    return notes


@dataclass
class Report:
    objects: int
    findings: list[Finding]
    unreadable: list[str]

    def exit_code(self, *, require_refs: bool) -> int:
        if self.unreadable:
            return 2
        errors_ = [f for f in self.findings if f.severity == "error" or require_refs]
        return 1 if errors_ else 0


def check(targets: Sequence[str], *, stdin: Any = None) -> Report:
    """Check every ModelCycle object in the targets (files, directories, `-`)."""
    documents: list[Document] = []
    unreadable: list[str] = []
    for target in targets:
        try:
            files = list(_files(target))
        except Unreadable as exc:
            unreadable.append(str(exc))
            continue
        for path in files:
            label = "<stdin>" if path is None else str(path)
            try:
                text = (stdin or sys.stdin).read() if path is None else path.read_text(encoding="utf-8")
                documents += [d for d in read_documents(label, text) if _is_modelcycle(d.value)]
            except Unreadable as exc:
                unreadable.append(str(exc))
            except (OSError, UnicodeDecodeError) as exc:
                unreadable.append(f"{label}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    findings = [f for d in documents for f in check_document(d)]
    findings += check_references(documents)
    findings.sort(key=lambda f: (f.file, f.line, f.field))
    return Report(len(documents), findings, unreadable)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="targets",
        action="append",
        required=True,
        metavar="FILE|DIR|-",
        help="manifests to check: a file, a directory (searched for *.yaml, *.yml, *.json) or - (stdin)",
    )
    parser.add_argument("--output", "-o", choices=["text", "json"], default="text", help="default: text")
    parser.add_argument(
        "--require-refs",
        action="store_true",
        help="a datasetRef/deploymentRef to an object outside the checked files is a finding, not a note",
    )


def run(args: argparse.Namespace) -> int:
    try:
        import celpy  # noqa: F401
        import jsonschema  # noqa: F401
    except ImportError as exc:
        raise errors.UserError(
            f"modelcycle check needs the `check` extra ({exc.name} is missing): "
            "pip install 'modelcycle[check]'"
        ) from exc
    report = check(args.targets)
    code = report.exit_code(require_refs=args.require_refs)
    if args.output == "json":
        doc = {
            "objects": report.objects,
            "findings": [asdict(f) for f in report.findings],
            "unreadable": report.unreadable,
            "exitCode": code,
        }
        print(json.dumps(doc, indent=2))
        return code
    for problem in report.unreadable:
        print(f"error: {problem}", file=sys.stderr)
    for finding in report.findings:
        print(f"{finding}" if finding.severity == "error" or args.require_refs else f"{finding} (note)")
    errors_ = sum(f.severity == "error" or args.require_refs for f in report.findings)
    print(
        f"checked {report.objects} object(s): {errors_} finding(s), "
        f"{len(report.findings) - errors_} note(s), {len(report.unreadable)} unreadable input(s)",
        file=sys.stderr,
    )
    return code
