"""crds/*.yaml are exactly what the pydantic models generate, and `--check` notices when they are not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelcycle import GROUP
from modelcycle.api import crdgen

REPO_ROOT = Path(__file__).resolve().parents[2]


def _modelcycle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_committed_crds_match_the_models() -> None:
    result = _modelcycle("crds", "generate", "--check")
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_description_differs_from_the_models(tmp_path: Path) -> None:
    assert _modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    assert _modelcycle("crds", "generate", "--out", str(tmp_path), "--check").returncode == 0

    # What the file would say had a model's docstring been edited without regenerating.
    crd = tmp_path / f"{GROUP}_datasets.yaml"
    text = crd.read_text()
    old = "Name of the label column."
    assert old in text
    crd.write_text(text.replace(old, "Name of the label column (edited by hand)."))

    result = _modelcycle("crds", "generate", "--out", str(tmp_path), "--check")
    assert result.returncode == 1
    assert f"stale: {crd.name}" in result.stderr
    assert "make crds" in result.stderr


def test_check_fails_on_a_crd_no_kind_generates(tmp_path: Path) -> None:
    assert _modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    (tmp_path / f"{GROUP}_leftovers.yaml").write_text("kind: CustomResourceDefinition\n")

    result = _modelcycle("crds", "generate", "--out", str(tmp_path), "--check")
    assert result.returncode == 1
    assert f"{GROUP}_leftovers.yaml" in result.stderr


def test_generate_restores_a_stale_directory(tmp_path: Path) -> None:
    assert _modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    crd = tmp_path / f"{GROUP}_modelversions.yaml"
    crd.write_text("stale\n")

    assert _modelcycle("crds", "generate", "--out", str(tmp_path)).returncode == 0
    assert crd.read_text() == crdgen.rendered_files()[crd.name]
