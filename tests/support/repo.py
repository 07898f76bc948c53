"""The repository's own commands as tests run them: `python -m modelcycle` from the repository root,
and tools/deploy/sync.py (a script, not a package) loaded as a module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_modelcycle(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m modelcycle ARGS` from the repository root, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "modelcycle", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@cache
def deploy_sync() -> ModuleType:
    """tools/deploy/sync.py, loaded once."""
    spec = importlib.util.spec_from_file_location("deploy_sync", REPO_ROOT / "tools" / "deploy" / "sync.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
