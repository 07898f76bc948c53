"""docs/troubleshooting.md explains every reason an object can be Stalled (or Degraded) with.

Reasons are read from the code, so a new one fails this test until it is documented:

- `Stalled("<Reason>", ...)` raised by a controller (first argument);
- `stalled_outcome(..., reason="<Reason>")` (a terminal failure reported by a controller);
- failure reasons of the workloads (`WorkloadError` subclasses' `reason = "..."` and every
  `reason="..."` keyword in operator/modelcycle/workloads), which a failed Job hands to the
  controller, and the `{"reason": "..."}` fallbacks of controllers/workload.py;
- the reason of a `Degraded` condition (module constants named `*_REASON` used with it).

String constants, module-level names bound to a string, and `x or "Fallback"` are resolved; a
reason computed at run time is not (and needs no entry).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "modelcycle"
DOC = REPO / "docs" / "troubleshooting.md"


def _module_strings(tree: ast.Module) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            names[node.targets[0].id] = node.value.value
    return names


def _strings(node: ast.AST | None, names: dict[str, str]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in names:
        return [names[node.id]]
    if isinstance(node, ast.BoolOp):
        return [s for value in node.values for s in _strings(value, names)]
    if isinstance(node, ast.IfExp):
        return _strings(node.body, names) + _strings(node.orelse, names)
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "str" and node.args:
        return _strings(node.args[0], names)
    return []


@cache
def reasons_in_code() -> dict[str, list[str]]:
    """{reason: [file:line, ...]}"""
    found: dict[str, list[str]] = {}

    def add(values: list[str], path: Path, line: int) -> None:
        for value in values:
            if re.fullmatch(r"[A-Z][A-Za-z0-9]+", value):
                found.setdefault(value, []).append(f"{path.relative_to(REPO)}:{line}")

    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = _module_strings(tree)
        room = path.parent.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                keywords = {k.arg: k.value for k in node.keywords}
                if name == "Stalled" and node.args:
                    add(_strings(node.args[0], names), path, node.lineno)
                if name == "stalled_outcome" and "reason" in keywords:
                    add(_strings(keywords["reason"], names), path, node.lineno)
                if room == "workloads" and "reason" in keywords:
                    add(_strings(keywords["reason"], names), path, node.lineno)
                if name == "set_condition" and "reason" in keywords:
                    type_ = keywords.get("type_")
                    if isinstance(type_, ast.Attribute) and type_.attr in ("STALLED", "DEGRADED"):
                        add(_strings(keywords["reason"], names), path, node.lineno)
            if room == "workloads" and isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if isinstance(statement, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "reason" for t in statement.targets
                    ):
                        add(_strings(statement.value, names), path, statement.lineno)
            if path.name == "workload.py" and room == "controllers":
                if isinstance(node, ast.Dict):
                    for key, value in zip(node.keys, node.values, strict=True):
                        if isinstance(key, ast.Constant) and key.value == "reason":
                            add(_strings(value, names), path, node.lineno)
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "reason" for t in node.targets
                ):
                    add(_strings(node.value, names), path, node.lineno)
        for name, constant in names.items():
            if name.endswith("_REASON") and room == "controllers":
                add([constant], path, 0)
    return found


def documented() -> set[str]:
    """Reasons that have an entry: a table row or heading that starts with `Reason`."""
    text = DOC.read_text()
    return set(re.findall(r"^\|\s*`([A-Z][A-Za-z0-9]+)`", text, re.M)) | set(
        re.findall(r"^#+\s*`([A-Z][A-Za-z0-9]+)`", text, re.M)
    )


def test_extraction_finds_known_reasons() -> None:
    reasons = reasons_in_code()
    for known in ("NameConflict", "DatasetNotFound", "UntrustedType", "ValidationFailed"):
        assert known in reasons, f"the extractor lost {known}: {sorted(reasons)}"


def test_every_stalled_reason_is_documented() -> None:
    missing = {r: where for r, where in reasons_in_code().items() if r not in documented()}
    assert not missing, (
        "add these reasons to docs/troubleshooting.md (a table row `| `Reason` | ...`):\n"
        + "\n".join(f"  {reason}: {', '.join(where[:3])}" for reason, where in sorted(missing.items()))
    )


def string_literals() -> set[str]:
    return {
        node.value
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_documented_reasons_still_exist() -> None:
    """No stale entries: every documented reason is still a string in the code, or Kubernetes' own."""
    kubernetes_reasons = {"BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy", "FailedCreate"}
    stale = documented() - string_literals() - kubernetes_reasons
    assert not stale, f"docs/troubleshooting.md documents reasons the code no longer uses: {sorted(stale)}"
