"""`modelcycle local`: run the platform on this machine.

Each subcommand is one entry in SUBCOMMANDS (help, configure, run); add one by adding an entry.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from modelcycle.local import controlplane as cp


@dataclass(frozen=True)
class Subcommand:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- local controlplane


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where certificates, etcd data, kubeconfigs and logs live (default {cp.default_state_dir()})",
    )


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).expanduser().resolve() if args.state_dir else cp.default_state_dir()


def _configure_controlplane(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="controlplane_action", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="start etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback",
        description="Start the control plane; it keeps running after this command unless --foreground.",
    )
    _add_state_dir(up)
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops everything")
    up.add_argument("--bin-dir", type=Path, default=None, help="take the binaries from this directory first")
    up.add_argument("--fresh", action="store_true", help="delete the previous data and certificates first")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health (default 120)")
    up.set_defaults(controlplane_run=_controlplane_up)

    down = actions.add_parser("down", help="stop the control plane started by `up`")
    _add_state_dir(down)
    down.add_argument("--purge", action="store_true", help="also delete its data, certificates and logs")
    down.set_defaults(controlplane_run=_controlplane_down)

    status = actions.add_parser("status", help="show whether each component runs and is healthy")
    _add_state_dir(status)
    status.set_defaults(controlplane_run=_controlplane_status)


def _run_controlplane(args: argparse.Namespace) -> int:
    run: Callable[[argparse.Namespace], int] = args.controlplane_run
    return run(args)


def _print_ready(plane: cp.ControlPlane) -> None:
    seconds = plane.startup_seconds or 0.0
    print(f"control plane v{cp.K8S_VERSION} ready at {plane.server} in {seconds:.1f}s")
    print(f"logs: {plane.layout.logs}")
    print(f"kubeconfig: {plane.kubeconfig}")
    print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)


def _controlplane_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    if args.fresh:
        cp.purge_state(state_dir)
    elif not args.foreground:
        running = cp.read_state(state_dir)
        if running is not None and all(p.is_running() for p in running.processes):
            print(f"control plane v{running.version} already running at {running.server}")
            print(f"kubeconfig: {running.kubeconfig}")
            print(f"export KUBECONFIG={running.kubeconfig}")
            return 0
    plane = cp.ControlPlane(
        state_dir=state_dir, bin_dir=args.bin_dir, detach=not args.foreground, start_timeout=args.timeout
    )
    if args.foreground:
        return _run_in_foreground(plane)
    plane.start()
    _print_ready(plane)
    print(f"stop it with: modelcycle local controlplane down --state-dir {state_dir}")
    return 0


def _run_in_foreground(plane: cp.ControlPlane) -> int:
    """Start, then run until Ctrl-C or SIGTERM; a component that dies takes the rest down with it."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Before the start: a signal sent as soon as the kubeconfig line appears must not be missed.
    # SIGINT too: a launcher started from a non-interactive shell inherits SIGINT ignored.
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        plane.start()
        _print_ready(plane)
        while True:
            failed = plane.failed_components()
            if failed:
                print(f"{', '.join(failed)} exited; see {plane.layout.logs}; stopping the rest")
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping the control plane")
        return 0
    finally:
        plane.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _controlplane_down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    state = cp.stop_detached(state_dir)
    print("control plane stopped" if state else f"no control plane recorded in {state_dir}")
    if args.purge:
        cp.purge_state(state_dir)
        print(f"deleted {state_dir}")
    return 0


def _controlplane_status(args: argparse.Namespace) -> int:
    """Exit 0 when everything is up and healthy, 1 when degraded, 3 when not running."""
    state_dir = _state_dir(args)
    state = cp.read_state(state_dir)
    if state is None:
        print(f"not running (nothing recorded in {state_dir})")
        return 3
    statuses = cp.component_statuses(state)
    mode = "detached" if state.detached else f"attached to pid {state.owner_pid}"
    print(f"control plane v{state.version} at {state.server} ({mode})")
    for s in statuses:
        health = "healthy" if s.healthy else ("unhealthy" if s.running else "not running")
        print(f"  {s.component:<24} pid {s.pid:<8} {health}")
    print(f"export KUBECONFIG={state.kubeconfig}")
    if all(s.healthy for s in statuses):
        return 0
    return 3 if not any(s.running for s in statuses) else 1


# --------------------------------------------------------------------------- local up, down, status, demo
# The work is in platform.py and demo.py; these only parse and print.


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help=f"where the platform keeps its state, logs and artifacts (default {cp.cache_dir() / 'local'})",
    )


def _configure_up(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    parser.add_argument(
        "--bin-dir", type=Path, default=None, help="take the Kubernetes binaries from here first"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per component (default 120)")
    parser.add_argument("--fresh", action="store_true", help="stop and delete a previous platform first")
    parser.add_argument("--node-name", default="modelcycle-local", help="the Node's name")


def _print_step(step: str, message: str, seconds: float) -> None:
    print(f"  {step + ' ':.<18} {message} ({seconds:.1f}s)", flush=True)


def _up(args: argparse.Namespace) -> int:
    from modelcycle.local import platform

    if args.fresh:
        platform.down(args.root, purge=True)
    options = platform.PlatformOptions(
        bin_dir=args.bin_dir,
        timeout=args.timeout,
        node_name=args.node_name,
    )
    print("starting the local platform", flush=True)
    started = platform.up(args.root, options, report=_print_step)
    print(f"platform up in {started.timings['total']:.1f}s; logs in {started.layout.logs}")
    print(f"namespace {started.options.namespace}; stop everything with `modelcycle local down`")
    print(f"export KUBECONFIG={started.kubeconfig}", flush=True)
    return 0


def _preflight(args: argparse.Namespace) -> int:
    """Exit 0 when this machine can run the real node, else 1 naming every missing piece."""
    from modelcycle.local import kubenode

    try:
        binaries, images = kubenode.preflight()
    except kubenode.NodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    refs = ", ".join(images.refs().values())
    print(f"the real node can run here: kubelet {binaries['kubelet']}, images {refs}")
    return 0


def _configure_down(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    parser.add_argument("--purge", action="store_true", help="also delete the state, logs and artifacts")


def _down(args: argparse.Namespace) -> int:
    from modelcycle.local import platform

    recorded, pods = platform.down(args.root, purge=args.purge)
    if not recorded:
        print("nothing was running")
    else:
        print(f"drained the node ({pods} pod(s), the operator's included), stopped it and the control plane")
    if args.purge:
        print(f"deleted {platform.PlatformLayout(args.root or platform.default_root()).root}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Exit 0 when everything runs and is healthy, 1 when degraded, 3 when nothing runs."""
    from modelcycle.local import platform

    state, reports = platform.status(args.root)
    for r in reports:
        health = "healthy" if r.healthy else ("UNHEALTHY" if r.running else "not running")
        pids = ",".join(str(p) for p in r.pids) or "-"
        print(f"  {r.component:<14} {health:<12} pid {pids:<28} {r.detail}")
    if any(r.running for r in reports):
        print(f"  memory (RSS)   {platform.format_memory(platform.status_memory(args.root))}")
    if state is not None:
        print(f"export KUBECONFIG={state.kubeconfig}")
    if all(r.healthy for r in reports):
        return 0
    return 3 if not any(r.running for r in reports) else 1


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds each step may take (default 300)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the objects of a previous demo run instead of starting afresh",
    )
    parser.add_argument(
        "--examples", type=Path, default=None, help="example directory (default examples/iris)"
    )


def _demo(args: argparse.Namespace) -> int:
    from modelcycle.local import demo

    return demo.run(args)


# --------------------------------------------------------------------------- entry points

SUBCOMMANDS: dict[str, Subcommand] = {
    "controlplane": Subcommand(
        "run only the Kubernetes control plane (up, down, status)", _configure_controlplane, _run_controlplane
    ),
    "up": Subcommand(
        "start the control plane, the real node (containerd, kubelet, kube-proxy) and the operator "
        "in-cluster (needs root and `make setup`)",
        _configure_up,
        _up,
    ),
    "down": Subcommand("stop everything `local up` started", _configure_down, _down),
    "preflight": Subcommand(
        "check that this machine can run the real node (root, containerd, runc, CNI, kubelet, images)",
        lambda parser: None,
        _preflight,
    ),
    "status": Subcommand("show what runs locally", _add_root, _status),
    "demo": Subcommand("run the whole ML loop end to end on this machine", _configure_demo, _demo),
}


def configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="local_command", metavar="COMMAND", required=True)
    for name, subcommand in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=subcommand.help, description=subcommand.help)
        subcommand.configure(sub)
        sub.set_defaults(local_run=subcommand.run)


def run(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = args.local_run
    return handler(args)
