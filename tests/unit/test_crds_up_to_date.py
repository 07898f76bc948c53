"""crds/*.yaml are exactly what the pydantic models generate, and `--check` notices when they are not."""

from __future__ import annotations

from pathlib import Path

from modelcycle import GROUP
from modelcycle.api import crdgen
from support.repo import run_modelcycle


def test_committed_crds_match_the_models() -> None:
    result = run_modelcycle("crds", "generate", "--check")
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_description_differs_from_the_models(tmp_path: Path) -> None:
    assert run_modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    assert run_modelcycle("crds", "generate", "--out", str(tmp_path), "--check").returncode == 0

    # What the file would say had a model's docstring been edited without regenerating.
    crd = tmp_path / f"{GROUP}_datasets.yaml"
    text = crd.read_text()
    old = "Name of the label column."
    assert old in text
    crd.write_text(text.replace(old, "Name of the label column (edited by hand)."))

    result = run_modelcycle("crds", "generate", "--out", str(tmp_path), "--check")
    assert result.returncode == 1
    assert f"stale: {crd.name}" in result.stderr
    assert "make crds" in result.stderr


def test_check_fails_on_a_crd_no_kind_generates(tmp_path: Path) -> None:
    assert run_modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    (tmp_path / f"{GROUP}_leftovers.yaml").write_text("kind: CustomResourceDefinition\n")

    result = run_modelcycle("crds", "generate", "--out", str(tmp_path), "--check")
    assert result.returncode == 1
    assert f"{GROUP}_leftovers.yaml" in result.stderr


def test_generate_restores_a_stale_directory(tmp_path: Path) -> None:
    assert run_modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    crd = tmp_path / f"{GROUP}_modelversions.yaml"
    crd.write_text("stale\n")

    assert run_modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    assert crd.read_text() == crdgen.rendered_files()[crd.name]
