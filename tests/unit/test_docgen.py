"""docs/reference.md is generated from the models and up to date; every CRD field has a description.

The second part is what makes `kubectl explain <kind>.<field>` useful: the API server serves the
CRD schema's descriptions, so a property without one explains nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcycle.api import docgen, kinds

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference.md"
CRD_FILES = sorted((REPO / "crds").glob("*.yaml")) + sorted((REPO / "charts/modelcycle/crds").glob("*.yaml"))


def test_reference_is_up_to_date() -> None:
    diff = docgen.stale(REFERENCE)
    assert diff is None, f"docs/reference.md is stale: run `python -m modelcycle.api.docgen`\n{diff[:4000]}"


def test_check_mode_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    assert docgen.main(["--check", "--out", str(out)]) == 1
    assert docgen.main(["--out", str(out)]) == 0
    assert docgen.main(["--check", "--out", str(out)]) == 0


def test_reference_lists_every_field_of_every_kind() -> None:
    text = docgen.render()
    for kind in kinds.ALL:
        assert f"## {kind.kind}" in text
        for model in (kind.spec, kind.status):
            for field in docgen.walk(model):
                assert f"| `{field.path}` |" in text, f"{kind.kind} {field.path} missing"
                assert field.description, f"{kind.kind}.{field.path} has no description in the model"


def test_reference_shows_defaults_constraints_and_cel_rules() -> None:
    text = docgen.render()
    assert "| `format` | string |  | `csv` |" in text
    assert "one of `psi`, `ks`, `chi2`, `jsd`" in text
    assert "exactly one of builtin, url, s3, pvc, configMap, traffic must be set" in text
    assert "ModelVersion spec is immutable" in text


def properties(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from properties(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from properties(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from properties(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_every_crd_property_has_a_description(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        kind = crd["spec"]["names"]["kind"]
        missing = [
            p for p, sub in properties(root, kind) if p != f"{kind}.metadata" and not sub.get("description")
        ]
        assert not missing, (
            f"{path.name}: properties without a description (kubectl explain shows nothing): {missing}"
        )
