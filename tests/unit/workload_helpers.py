"""Shared helpers of the workload tests (test_workload_*.py): objects, CLI runners, store checks."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelcycle import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
API_VERSION = "modelcycle.io/v1alpha1"


def dataset(source: dict[str, Any], name: str = "ds", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"source": source, **spec},
    }


def builtin(name: str, **spec: Any) -> dict[str, Any]:
    return dataset({"builtin": {"name": name}}, name=name.replace("_", "-"), **spec)


def training_run(
    estimator: str,
    params: dict[str, Any] | None = None,
    *,
    name: str = "run-1",
    model: str = "m",
    **spec: Any,
) -> dict[str, Any]:
    est: dict[str, Any] = {"class": estimator}
    if params is not None:
        est["params"] = params
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"datasetRef": {"name": "ds"}, "model": {"name": model}, "estimator": est, **spec},
    }


def model_version(
    train_result: dict[str, Any],
    data_result: dict[str, Any],
    *,
    model: str = "m",
    version: int = 1,
    gates: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": model,
        "version": version,
        "artifact": {
            "uri": train_result["artifact"]["uri"],
            "sha256": sha256 or train_result["artifact"]["sha256"],
            "format": "skops",
        },
        "lineage": {
            "datasetUri": data_result["uri"],
            "datasetSha256": data_result["sha256"],
            "split": split or train_result.get("split") or {},
        },
        "metrics": train_result["metrics"],
    }
    if gates is not None:
        spec["gates"] = gates
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": f"{model}-v{version}", "namespace": "ml"},
        "spec": spec,
    }


def train_args(obj: dict[str, Any], data_result: dict[str, Any]) -> list[str]:
    return [
        "train",
        "--spec-json",
        json.dumps(obj),
        "--dataset-uri",
        data_result["uri"],
        "--dataset-sha256",
        data_result["sha256"],
    ]


def last_json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output on stdout"
    doc = json.loads(lines[-1])
    assert isinstance(doc, dict)
    return doc


class Outcome:
    def __init__(self, code: int, stdout: str, stderr: str, log: Path | None) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.result = last_json(stdout)
        self.log_text = log.read_text() if log is not None and log.exists() else None

    def __repr__(self) -> str:
        return f"Outcome(code={self.code}, result={self.result}, stderr={self.stderr[-2000:]!r})"


def run_cli(
    args: list[str],
    *,
    store: Path | str,
    tmp: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> Outcome:
    """`python -m modelcycle ARGS --store STORE --termination-log TMP/...` in a subprocess."""
    log = tmp / f"termination-{os.urandom(4).hex()}.json"
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "modelcycle", *args, "--store", str(store), "--termination-log", str(log)],
        cwd=tmp,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr, log)


@contextlib.contextmanager
def _captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def run_inproc(args: list[str], *, store: Path | str) -> Outcome:
    """The same command through `modelcycle.cli.main` in this process (fast, same code path)."""
    with _captured() as (out, err):
        code = cli.main([*args, "--store", str(store), "--termination-log", "-"])
    return Outcome(code, out.getvalue(), err.getvalue(), None)


def store_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_store_clean(root: Path) -> None:
    """No temporary files, and every snapshot and run directory is complete."""
    files = store_files(root)
    assert not [f for f in files if "/.tmp-" in f or f.startswith(".tmp-")], files
    for path in root.rglob("*") if root.exists() else []:
        if path.is_dir() and path.parent.name == "sha256":
            assert sorted(p.name for p in path.iterdir()) == ["data.parquet", "profile.json"], path
        if (
            path.is_dir()
            and (path.parent.name == "runs" or path.name.startswith("v"))
            and "models" in path.parts
        ):
            names = sorted(p.name for p in path.iterdir())
            if path.parent.name == "runs" or path.name[1:].isdigit():
                assert names == ["metadata.json", "model.skops"], (path, names)


def snapshot_inproc(obj: dict[str, Any], store: Path) -> dict[str, Any]:
    outcome = run_inproc(["data", "--spec-json", json.dumps(obj)], store=store)
    assert outcome.code == 0, outcome
    return outcome.result


def train_inproc(obj: dict[str, Any], data_result: dict[str, Any], store: Path) -> dict[str, Any]:
    outcome = run_inproc(train_args(obj, data_result), store=store)
    assert outcome.code == 0, outcome
    return outcome.result
