"""The real node as the e2e tier uses it: `modelcycle local up`, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from modelcycle.local import controlplane as cp
from modelcycle.local import kubenode, platform


@dataclass(frozen=True)
class RealNodePlatform:
    """A detached `modelcycle local up`: the real node, the operator in-cluster."""

    root: Path
    kubeconfig: Path
    up_output: str

    def local(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_local(*args, "--root", str(self.root), timeout=timeout)

    def process(self, component: str) -> cp.ProcessRecord:
        """The recorded process of a node component (containerd, kubelet, kube-proxy)."""
        state = kubenode.NodeState.load(kubenode.NodeLayout(self.root / "node").state_file)
        assert state is not None, f"no node state under {self.root / 'node'}"
        return state.processes[component]

    def components_running(self) -> bool:
        return all(self.process(c).is_running() for c in kubenode.COMPONENTS)

    def signal(self, component: str, signum: signal.Signals) -> None:
        os.kill(self.process(component).pid, signum)

    def log_tail(self, component: str, lines: int) -> str:
        path = platform.PlatformLayout(self.root).log(component)
        if not path.exists():
            return f"(no log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_local(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`modelcycle local ...` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "modelcycle", "local", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
