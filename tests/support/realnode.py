"""The real node as the e2e tier uses it: `modelcycle local up --runtime containers`, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealNodePlatform:
    """A detached `modelcycle local up --runtime containers`: the real node, the operator in-cluster."""

    root: Path
    kubeconfig: Path
    up_output: str

    def local(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_local(*args, "--root", str(self.root), timeout=timeout)


def run_local(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`modelcycle local ...` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "modelcycle", "local", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
