"""Result reporting: compact JSON <= 4 KiB, always valid, in the termination log and on stdout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from modelcycle.workloads import results


def test_small_results_are_unchanged() -> None:
    doc = {"ok": True, "sha256": "a" * 64, "metrics": {"accuracy": 0.9}}
    assert json.loads(results.fit(doc)) == doc


def test_large_results_are_trimmed_to_valid_json() -> None:
    doc = {
        "ok": False,
        "reason": "ValidationFailed",
        "message": "x" * 10_000,
        "violations": [f"column {i} is wrong in a long and detailed way" for i in range(500)],
        "violationCount": 500,
        "params": {f"p{i}": list(range(50)) for i in range(100)},
    }
    text = results.fit(doc)
    assert len(text.encode()) <= results.MAX_BYTES
    parsed = json.loads(text)
    assert parsed["ok"] is False and parsed["reason"] == "ValidationFailed" and parsed["truncated"] is True
    assert (
        parsed["violationCount"] == 500
        and parsed["violations"][0] == "column 0 is wrong in a long and detailed way"
    )


def test_non_json_values_are_made_safe() -> None:
    import numpy as np

    doc = {
        "ok": True,
        "nan": float("nan"),
        "np": np.float64(1.5),
        "i": np.int64(3),
        "b": np.bool_(True),
        "o": object,
    }
    parsed = json.loads(results.fit(doc))
    assert parsed["nan"] is None and parsed["np"] == 1.5 and parsed["i"] == 3 and parsed["b"] is True
    assert parsed["o"] == repr(object)


def test_termination_log_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELCYCLE_TERMINATION_LOG", raising=False)
    assert results.termination_log_path(str(tmp_path / "a")) == tmp_path / "a"
    assert results.termination_log_path("-") is None
    monkeypatch.setenv("MODELCYCLE_TERMINATION_LOG", str(tmp_path / "env"))
    assert results.termination_log_path(None) == tmp_path / "env"
    assert results.termination_log_path(str(tmp_path / "flag")) == tmp_path / "flag"


def test_run_workload_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    args = argparse.Namespace(termination_log=str(log))

    def fail() -> dict[str, object]:
        raise results.WorkloadError("the thing broke", reason="ThingBroke", exit_code=3, details={"n": 1})

    assert results.run_workload(args, fail) == 3
    out = capsys.readouterr()
    expected = {"ok": False, "reason": "ThingBroke", "message": "the thing broke", "n": 1}
    assert json.loads(out.out.strip().splitlines()[-1]) == expected == json.loads(log.read_text())
    assert out.err.strip().splitlines()[-1] == "error: the thing broke"

    def crash() -> dict[str, object]:
        raise RuntimeError("boom")

    assert results.run_workload(args, crash) == 1
    parsed = json.loads(log.read_text())
    assert parsed == {
        "ok": False,
        "reason": "InternalError",
        "message": "unexpected error: RuntimeError: boom",
    }
