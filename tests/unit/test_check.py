"""`modelcycle check`: offline validation of manifests with the API server's rules, for GitOps CI.

The malformed corpus (tests/support/malformed_cases.py) goes through the real command;
tests/integration/test_check_agreement.py holds the same verdicts against a real API server.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcycle import check, cli
from support import malformed_cases as cases


def _write(path: Path, objects: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


def _run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["check", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_examples_are_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run("-f", str(cases.EXAMPLES_DIR), capsys=capsys)
    assert (code, out) == (0, ""), out
    assert "checked 13 object(s): 0 finding(s)" in err


def test_every_malformed_object_is_a_finding_naming_its_field(tmp_path: Path) -> None:
    # One file for the whole corpus, checked by the real command in a subprocess.
    path = _write(tmp_path / "bad.yaml", [c.object for c in cases.MALFORMED])
    done = subprocess.run(
        [sys.executable, "-m", "modelcycle", "check", "-f", str(path), "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["objects"] == len(cases.MALFORMED)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    for case in cases.MALFORMED:
        name = case.object.get("metadata", {}).get("name")
        fields = [f["field"] for f in errors if f["kind"] == case.kind and f["name"] == name]
        assert case.field in fields, f"{case.id}: {fields}"


def test_valid_twins_are_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "good.yaml", [c.twin for c in cases.MALFORMED] + [c.object for c in cases.VALID])
    code, out, _ = _run("-f", str(path), capsys=capsys)
    assert code == 0, out


def test_finding_line_names_file_line_kind_name_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "# a comment\n"
        "apiVersion: modelcycle.io/v1alpha1\n"
        "kind: TrainingRun\n"
        "metadata:\n"
        "  name: iris-run\n"
        "spec:\n"
        "  datasetRef: {name: iris}\n"
        "  model: {name: iris}\n"
        "  estimator: {class: sklearn.svm.SVC}\n"
        "  resources:\n"
        "    limits:\n"
        "      memory: 512MB\n"
        "---\n"
        "apiVersion: modelcycle.io/v1alpha1\n"
        "kind: Dataset\n"
        "metadata: {name: iris}\n"
        "spec: {source: {builtin: {name: iris}}}\n"
    )
    code, out, _ = _run("-f", str(path), capsys=capsys)
    assert code == 1
    (line,) = out.splitlines()
    assert line.startswith(f"{path}:12: TrainingRun/iris-run: spec.resources.limits.memory: Invalid value: ")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("spec:\n  model: iris\n  model: wine\n", "spec.model"),
        ("spec:\n  model: iris\n  replica: 2\n", "spec.replica"),
    ],
    ids=["duplicate-field", "unknown-field"],
)
def test_strict_field_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        f"apiVersion: modelcycle.io/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: d}}\n{text}"
    )
    code, out, _ = _run("-f", str(path), capsys=capsys)
    assert code == 1 and f": ModelDeployment/d: {field}: " in out, out


def test_references_inside_the_set_pass_and_outside_are_notes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cases.with_changes(cases.BASES["TrainingRun"], "run", {"spec.datasetRef.name": "iris"})
    dataset = cases.with_changes(cases.BASES["Dataset"], "iris", {})
    monitor = cases.with_changes(cases.BASES["ModelMonitor"], "watch", {"spec.deploymentRef.name": "serve"})
    path = _write(tmp_path / "set.yaml", [run, dataset, monitor])
    code, out, _ = _run("-f", str(path), capsys=capsys)
    assert code == 0
    (note,) = out.splitlines()
    assert ": ModelMonitor/watch: spec.deploymentRef.name: external reference: ModelDeployment/serve" in note
    assert note.endswith("(note)")
    code, out, _ = _run("-f", str(path), "--require-refs", capsys=capsys)
    assert code == 1 and "ModelDeployment/serve" in out


def test_references_in_another_namespace_do_not_count(tmp_path: Path) -> None:
    run = cases.with_changes(cases.BASES["TrainingRun"], "run", {"metadata.namespace": "a"})
    dataset = cases.with_changes(cases.BASES["Dataset"], "iris", {"metadata.namespace": "b"})
    report = check.check([str(_write(tmp_path / "x.yaml", [run, dataset]))])
    assert [f.field for f in report.findings] == ["spec.datasetRef.name"]


def test_directory_and_stdin_other_kinds_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "ok.yml", [cases.BASES["Dataset"]])
    (tmp_path / "app.yaml").write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: x}\n"
    )
    (tmp_path / "notes.txt").write_text("not yaml: [")
    code, _, err = _run("-f", str(tmp_path), capsys=capsys)
    assert code == 0 and "checked 1 object(s)" in err
    report = check.check(["-"], stdin=io.StringIO(yaml.safe_dump(cases.BASES["ModelVersion"])))
    assert report.objects == 1 and report.findings == []


@pytest.mark.parametrize(
    "content",
    [b"kind: [\n", b"\xff\xfe not utf-8", None],
    ids=["bad-yaml", "not-utf8", "missing"],
)
def test_unreadable_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_bytes(content)
    code, _, err = _run("-f", str(path), capsys=capsys)
    assert code == 2 and str(path) in err


def test_wrong_version_and_unknown_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = {**cases.BASES["Dataset"], "apiVersion": "modelcycle.io/v1"}
    odd = {**cases.BASES["Dataset"], "kind": "Model", "metadata": {"name": "m"}}
    code, out, _ = _run("-f", str(_write(tmp_path / "v.yaml", [old, odd])), capsys=capsys)
    assert code == 1
    assert ": Dataset/base: apiVersion: modelcycle.io serves version v1alpha1" in out
    assert ": Model/m: kind: unknown kind" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = cases.MALFORMED[0]
    code, out, _ = _run("-f", str(_write(tmp_path / "j.yaml", [bad.object])), "-o", "json", capsys=capsys)
    report = json.loads(out)
    assert code == 1 and report["exitCode"] == 1 and report["objects"] == 1
    assert set(report["findings"][0]) == {"file", "line", "kind", "name", "field", "message", "severity"}
