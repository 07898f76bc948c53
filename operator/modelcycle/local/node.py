"""The local node: a kubelet stand-in that runs the pods bound to it as local processes.

    modelcycle local node --kubeconfig K [--name N] [--state-dir D]

It registers a Node (real CPU and memory figures, Ready, a Lease renewed every 10 s), watches the
pods the real kube-scheduler binds to it, and runs each container's `command` + `args` as a
process of this machine's ModelCycle installation (the image is ignored), with the pod's
environment, its volumes as local directories, and a loopback address of its own (127.1.x.y).
It reports pod status as the kubelet does, so Jobs complete and Deployments become available.
See docs/local-node.md for the exact rules.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from modelcycle.errors import UserError
from modelcycle.kubeclient import MERGE_PATCH, ApiError, Conflict, Kube, NotFound, WatchExpired, quote
from modelcycle.local import controlplane as cp
from modelcycle.local.node_env import DEFAULT_POD_NETWORK, HOST_IP, allocate_ip
from modelcycle.local.node_logs import LogServer
from modelcycle.local.node_pod import PodWorker, pod_key
from modelcycle.local.node_process import Run
from modelcycle.local.node_status import (
    LEASE_NAMESPACE,
    NOT_READY_TAINT_KEYS,
    lease_object,
    machine_facts,
    micro_time,
    node_object,
    node_resources,
    node_status,
    now,
    rfc3339,
)

log = logging.getLogger("modelcycle.local.node")

DEFAULT_NODE_NAME = "modelcycle-local"
COMPONENT = "modelcycle-local-node"


def default_state_dir(*, environ: Mapping[str, str] | None = None) -> Path:
    return cp.cache_dir(environ=environ) / "local" / "node"


@dataclass(frozen=True)
class NodeOptions:
    name: str = DEFAULT_NODE_NAME
    state_dir: Path = Path()
    pod_network: str = DEFAULT_POD_NETWORK
    cpu: str | None = None
    memory: str | None = None
    max_pods: int = 110
    lease_seconds: float = 10.0
    status_seconds: float = 60.0
    watch_seconds: int = 60
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    tick: float = 0.5
    stop_pods_on_exit: bool = False
    kubelet_port: int = 0
    """Port of the container-logs endpoint (`kubectl logs`); 0: any free port; -1: none."""


@dataclass(frozen=True)
class NodeLayout:
    root: Path

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock_file(self) -> Path:
        return self.root / "agent.lock"

    def pod_dir(self, uid: str) -> Path:
        return self.pods / uid

    def pod_log_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.logs / f"{namespace}_{name}_{uid}"


def _in_network(ip: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(network)
    except ValueError:
        return False


def pod_path(pod: Mapping[str, Any], suffix: str = "") -> str:
    meta = pod["metadata"]
    return f"/api/v1/namespaces/{quote(meta['namespace'])}/pods/{quote(meta['name'])}{suffix}"


class NodeAgent:
    def __init__(self, kube: Kube, options: NodeOptions) -> None:
        self.kube = kube
        self.options = options
        self.layout = NodeLayout(Path(options.state_dir).expanduser().resolve())
        self.stopping = threading.Event()
        self.host_ip = HOST_IP
        self.facts = machine_facts(self._ensure_root())
        self.resources = node_resources(
            self.facts, cpu=options.cpu, memory=options.memory, max_pods=options.max_pods
        )
        self.allocatable = dict(self.resources)
        self.node_uid: str | None = None
        self._ips: dict[str, str] = {}
        self._ips_lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._workers_lock = threading.Lock()
        self._lock_handle: IO[str] | None = None
        self._last_node_status = 0.0
        self.logs_server: LogServer | None = None

    def _ensure_root(self) -> Path:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.layout.pods.mkdir(exist_ok=True)
        self.layout.logs.mkdir(exist_ok=True)
        return self.layout.root

    # ------------------------------------------------------------------ lifecycle

    def acquire_lock(self) -> None:
        """One agent per state directory: a second one would start every pod twice."""
        handle = self.layout.lock_file.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise UserError(
                f"another local node agent (pid {holder or '?'}) uses {self.layout.root}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def run(self) -> None:
        """Register, then watch and run pods until `stopping` is set."""
        self.acquire_lock()
        if self.options.kubelet_port >= 0:
            self.logs_server = LogServer(
                logs_root=self.layout.logs,
                pods_root=self.layout.pods,
                tls_dir=self.layout.root / "tls",
                client_ca=self.kube.configuration.ssl_ca_cert,
                port=self.options.kubelet_port,
            )
            self.logs_server.start()
        self.register()
        log.info(
            "node %s registered (cpu %s, memory %s, pods %s); state %s; pod logs under %s%s",
            self.options.name,
            self.resources["cpu"],
            self.resources["memory"],
            self.resources["pods"],
            self.layout.root,
            self.layout.logs,
            f"; `kubectl logs` served on 127.0.0.1:{self.logs_server.port}" if self.logs_server else "",
        )
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        watcher = threading.Thread(target=self._watch_loop, name="watch", daemon=True)
        watcher.start()
        try:
            while not self.stopping.wait(1.0):
                self._reap_workers()
        finally:
            self.stopping.set()
            self.shutdown()

    def shutdown(self) -> None:
        """Let every worker finish (they stop their processes only with stop_pods_on_exit)."""
        with self._workers_lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.update(worker.pod)  # wake it up
        for worker in workers:
            worker.join(timeout=20)
        if self.logs_server is not None:
            self.logs_server.stop()
            self.logs_server = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # ------------------------------------------------------------------ node and lease

    def register(self) -> None:
        name = self.options.name
        body = node_object(name, self.facts)
        try:
            node = self.kube.create("/api/v1/nodes", body)
        except Conflict:
            node = self.kube.patch(
                f"/api/v1/nodes/{quote(name)}",
                {"metadata": {"labels": body["metadata"]["labels"]}},
            )
        self.node_uid = str(node["metadata"]["uid"])
        self.post_node_status(node)
        self.renew_lease()
        self.clear_not_ready_taints()

    def post_node_status(self, node: Mapping[str, Any] | None = None) -> None:
        name = self.options.name
        if node is None:
            node = self.kube.get(f"/api/v1/nodes/{quote(name)}")
        status = node_status(
            self.facts,
            resources=self.resources,
            kubelet_version=f"v{cp.K8S_VERSION}",
            when=now(),
            previous=(node.get("status") or {}).get("conditions") or [],
            kubelet_port=self.logs_server.port if self.logs_server else 0,
        )
        self.kube.patch(f"/api/v1/nodes/{quote(name)}/status", {"status": status})
        self._last_node_status = time.monotonic()

    def clear_not_ready_taints(self) -> None:
        """The API server taints a new node not-ready until the node-lifecycle controller sees it
        Ready; our status says Ready, so drop those taints now instead of after its next pass."""
        path = f"/api/v1/nodes/{quote(self.options.name)}"
        node = self.kube.get(path)
        taints = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in NOT_READY_TAINT_KEYS]
        if len(kept) == len(taints):
            return
        patch = {
            "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
            "spec": {"taints": kept or None},
        }
        with contextlib.suppress(ApiError):  # a conflict: the controller got there first
            self.kube.patch(path, patch)

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{quote(self.options.name)}"
        body = {"spec": {"holderIdentity": self.options.name, "renewTime": micro_time(now())}}
        try:
            self.kube.patch(path, body)
        except NotFound:
            self.kube.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                lease_object(self.options.name, self.node_uid, when=now()),
            )

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.options.lease_seconds):
            try:
                self.renew_lease()
                if time.monotonic() - self._last_node_status >= self.options.status_seconds:
                    self.post_node_status()
                    self.clear_not_ready_taints()
            except ApiError as exc:
                if exc.status == 404:
                    log.warning("node %s is gone from the API; registering again", self.options.name)
                    with contextlib.suppress(Exception):
                        self.register()
                else:
                    log.warning("heartbeat failed: %s", exc)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    # ------------------------------------------------------------------ pods

    def _watch_loop(self) -> None:
        """List the node's pods, watch until the watch ends, list again: level-triggered."""
        selector = f"spec.nodeName={self.options.name}"
        first = True
        while not self.stopping.is_set():
            try:
                listed = self.kube.get("/api/v1/pods", fieldSelector=selector)
                pods = listed.get("items") or []
                self._sync_all(pods, first=first)
                first = False
                version = listed["metadata"]["resourceVersion"]
                timeout = self.options.watch_seconds + random.randint(
                    0, max(1, self.options.watch_seconds // 5)
                )
                for event in self.kube.watch(
                    "/api/v1/pods", timeout_seconds=timeout, fieldSelector=selector, resourceVersion=version
                ):
                    if self.stopping.is_set():
                        return
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind in ("ADDED", "MODIFIED"):
                        self.dispatch(obj)
                    elif kind == "DELETED":
                        self.forget(obj)
            except WatchExpired:
                continue
            except Exception as exc:
                if self.stopping.is_set():
                    return
                log.warning("watching pods failed (%s); listing again in 2s", exc)
                self.stopping.wait(2.0)

    def _sync_all(self, pods: Sequence[dict[str, Any]], *, first: bool) -> None:
        uids = {str(p["metadata"]["uid"]) for p in pods}
        for pod in pods:
            self.dispatch(pod)
        with self._workers_lock:
            gone = [w for uid, w in self._workers.items() if uid not in uids]
        for worker in gone:
            worker.update(None)
        if first:
            self.clean_orphans(uids)

    def dispatch(self, pod: dict[str, Any]) -> None:
        uid = str(pod["metadata"]["uid"])
        with self._workers_lock:
            worker = self._workers.get(uid)
            if worker is not None and worker.is_alive():
                worker.update(pod)
                return
            if worker is not None:
                del self._workers[uid]
            phase = (pod.get("status") or {}).get("phase")
            terminal = phase in ("Succeeded", "Failed")
            if pod["metadata"].get("deletionTimestamp") and (
                terminal or not self.layout.pod_dir(uid).exists()
            ):
                # Nothing runs: finish the deletion as the kubelet does.
                self.delete_pod(pod)
                self._remove_pod_dir(uid)
                return
            if terminal and not self._has_live_runs(uid):
                return  # done and reported; keep the directory until the pod is deleted
            worker = PodWorker(self, pod)
            self._workers[uid] = worker
        worker.start()

    def forget(self, pod: Mapping[str, Any]) -> None:
        uid = str(pod["metadata"]["uid"])
        with self._workers_lock:
            worker = self._workers.get(uid)
        if worker is not None and worker.is_alive():
            worker.update(None)
        else:
            self._remove_pod_dir(uid)

    def _reap_workers(self) -> None:
        with self._workers_lock:
            for uid in [u for u, w in self._workers.items() if not w.is_alive()]:
                del self._workers[uid]

    def _has_live_runs(self, uid: str) -> bool:
        for run_json in self.layout.pod_dir(uid).glob("containers/*/runs/*/run.json"):
            run = Run.load(run_json.parent)
            if run is not None and run.wrapper_alive():
                return True
        return False

    def _remove_pod_dir(self, uid: str) -> None:
        self.release_ip(uid)
        shutil.rmtree(self.layout.pod_dir(uid), ignore_errors=True)

    def clean_orphans(self, known: set[str]) -> None:
        """Pods deleted while the agent was away: stop what they left running, drop their state."""
        for directory in sorted(self.layout.pods.glob("*")):
            if directory.name in known or not directory.is_dir():
                continue
            for run_json in directory.glob("containers/*/runs/*/run.json"):
                run = Run.load(run_json.parent)
                if run is None or not run.wrapper_alive():
                    continue
                log.info(
                    "stopping pid %s left by pod %s, which no longer exists", run.wrapper_pid, directory.name
                )
                run.signal(signal.SIGTERM)
                deadline = time.monotonic() + 5.0
                while run.wrapper_alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                run.kill()
            self._remove_pod_dir(directory.name)

    # ------------------------------------------------------------------ services for workers

    def claim_ip(self, uid: str, preferred: str | None, pod: Mapping[str, Any]) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self.host_ip
        with self._ips_lock:
            taken = {ip for u, ip in self._ips.items() if u != uid}
            in_network = bool(preferred) and _in_network(str(preferred), self.options.pod_network)
            ip = preferred if preferred and in_network and preferred not in taken else None
            ip = ip or allocate_ip(uid, taken | self._ips_on_disk(exclude=uid), self.options.pod_network)
            self._ips[uid] = ip
            return ip

    def _ips_on_disk(self, *, exclude: str) -> set[str]:
        found = set()
        for pod_json in self.layout.pods.glob("*/pod.json"):
            if pod_json.parent.name == exclude:
                continue
            with contextlib.suppress(OSError, ValueError):
                ip = json.loads(pod_json.read_text()).get("podIP")
                if ip:
                    found.add(str(ip))
        return found

    def release_ip(self, uid: str) -> None:
        with self._ips_lock:
            self._ips.pop(uid, None)

    def patch_pod_status(self, pod: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        try:
            self.kube.patch(pod_path(pod, "/status"), {"status": status}, content_type=MERGE_PATCH)
            return True
        except ApiError as exc:
            if exc.status != 404:
                log.warning("pod %s: writing status failed: %s", pod_key(pod), exc)
            return False
        except Exception as exc:
            log.warning("pod %s: writing status failed: %s", pod_key(pod), exc)
            return False

    def delete_pod(self, pod: Mapping[str, Any]) -> None:
        """The kubelet's last word on a pod: delete it for good, now that nothing of it runs."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}}
        try:
            self.kube.delete(pod_path(pod), body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s: deleting failed: %s", pod_key(pod), exc)
        except Exception as exc:
            log.warning("pod %s: deleting failed: %s", pod_key(pod), exc)

    def emit_event(self, pod: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        stamp = rfc3339(now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT, "host": self.options.name},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.options.name,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.kube.create(f"/api/v1/namespaces/{quote(meta['namespace'])}/events", event)
        except Exception as exc:  # events are best effort
            log.debug("event for pod %s not recorded: %s", pod_key(pod), exc)


# --------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", type=Path, default=None, help="kubeconfig of the cluster (default $KUBECONFIG)"
    )
    parser.add_argument("--name", default=DEFAULT_NODE_NAME, help=f"Node name (default {DEFAULT_NODE_NAME})")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"pod directories, process records and logs (default {default_state_dir()})",
    )
    parser.add_argument(
        "--pod-network",
        default=DEFAULT_POD_NETWORK,
        help=f"loopback range pod IPs come from (default {DEFAULT_POD_NETWORK})",
    )
    parser.add_argument("--cpu", default=None, help="CPU to advertise (default: this machine's)")
    parser.add_argument(
        "--memory", default=None, help="memory to advertise, e.g. 16Gi (default: this machine's)"
    )
    parser.add_argument("--max-pods", type=int, default=110, help="pods the node accepts (default 110)")
    parser.add_argument(
        "--stop-pods-on-exit",
        action="store_true",
        help="stop every pod's processes when the agent stops (default: leave them running; "
        "the next agent re-attaches to them)",
    )
    parser.add_argument(
        "--kubelet-port",
        type=int,
        default=0,
        help="port of the container-logs endpoint behind `kubectl logs` (default: any free port; -1: off)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def options_from_args(args: argparse.Namespace) -> NodeOptions:
    state_dir = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
    return NodeOptions(
        name=args.name,
        state_dir=state_dir,
        pod_network=args.pod_network,
        cpu=args.cpu,
        memory=args.memory,
        max_pods=args.max_pods,
        stop_pods_on_exit=args.stop_pods_on_exit,
        kubelet_port=args.kubelet_port,
    )


def _kubeconfig(args: argparse.Namespace) -> Path:
    if args.kubeconfig:
        return Path(args.kubeconfig).expanduser()
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if env:
        return Path(env).expanduser()
    state = cp.read_state(cp.default_state_dir())
    if state is not None:
        return Path(state.kubeconfig)
    raise UserError(
        "no kubeconfig: pass --kubeconfig, set KUBECONFIG, or start `modelcycle local controlplane up`"
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    kubeconfig = _kubeconfig(args)
    if not kubeconfig.is_file():
        raise UserError(f"kubeconfig {kubeconfig} does not exist")
    if not sys.platform.startswith("linux"):
        raise UserError(
            "the local node needs Linux (it gives each pod an address in 127.0.0.0/8 and reads /proc)"
        )
    options = options_from_args(args)
    kube = Kube.from_kubeconfig(kubeconfig)
    agent = NodeAgent(kube, options)

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"local node {options.name}: state {agent.layout.root}", flush=True)
    print(f"pod logs: {agent.layout.logs}/<namespace>_<pod>_<uid>/<container>/<restarts>.log", flush=True)
    try:
        agent.run()
    except ApiError as exc:
        raise UserError(f"the API server refused: {exc}") from exc
    finally:
        kube.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelcycle.local.node", description=__doc__.splitlines()[0]
    )
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
