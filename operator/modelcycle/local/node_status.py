"""Pure builders of what the local node writes: pod status, the Node object and its Lease.

The shapes follow what the kubelet writes, so the Job, ReplicaSet, Deployment and node-lifecycle
controllers treat the local node like any other.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcycle import __version__

RUNTIME_NAME = "modelcycle-local"
MAX_TERMINATION_MESSAGE = 4096  # bytes of a termination-message file (the kubelet's limit)
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: the tail of the log, as the kubelet takes it
FALLBACK_LOG_BYTES = 2048
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
NODE_LABEL = "modelcycle.io/local-node"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: str | None
    finished_at: str
    message: str | None = None
    signal: int | None = None
    container_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": self.finished_at,
        }
        if self.started_at:
            state["startedAt"] = self.started_at
        if self.message:
            state["message"] = self.message
        if self.signal:
            state["signal"] = self.signal
        if self.container_id:
            state["containerID"] = self.container_id
        return state

    def to_json(self) -> dict[str, Any]:
        return {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "message": self.message,
            "signal": self.signal,
            "containerID": self.container_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Terminated:
        return cls(
            exit_code=int(data["exitCode"]),
            reason=str(data["reason"]),
            started_at=data.get("startedAt"),
            finished_at=str(data["finishedAt"]),
            message=data.get("message"),
            signal=data.get("signal"),
            container_id=data.get("containerID"),
        )


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


@dataclass(frozen=True)
class ContainerView:
    """One container as the status shows it."""

    name: str
    image: str
    image_id: str
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    waiting: tuple[str, str | None] | None = ("ContainerCreating", None)  # (reason, message)
    running_since: str | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    container_id: str | None = None

    @property
    def state_name(self) -> str:
        if self.terminated is not None:
            return "terminated"
        if self.running_since is not None:
            return "running"
        return "waiting"

    def to_api(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.terminated is not None:
            state = {"terminated": self.terminated.to_api()}
        elif self.running_since is not None:
            state = {"running": {"startedAt": self.running_since}}
        else:
            reason, message = self.waiting or ("ContainerCreating", None)
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": state,
            "lastState": {"terminated": self.last_terminated.to_api()} if self.last_terminated else {},
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def termination_message(
    file_text: str | None, *, exit_code: int, policy: str | None, log_tail: str | None
) -> str | None:
    """The kubelet's rule: the file's content (at most 4 KiB); with FallbackToLogsOnError, the
    log's tail when the file is empty and the container failed."""
    text = (file_text or "")[:MAX_TERMINATION_MESSAGE]
    if text.strip():
        return text
    if policy == "FallbackToLogsOnError" and exit_code != 0 and log_tail:
        return log_tail
    return None


def tail_text(data: bytes, *, lines: int = FALLBACK_LOG_LINES, max_bytes: int = FALLBACK_LOG_BYTES) -> str:
    """The last `lines` lines of `data`, at most `max_bytes` bytes (cut at the front)."""
    kept = b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:])
    return kept[-max_bytes:].decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- pod


POD_CONDITION_TYPES = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


@dataclass(frozen=True)
class PodView:
    """Everything the pod's status is computed from."""

    phase: str
    pod_ip: str | None
    host_ip: str
    start_time: str | None
    containers: Sequence[ContainerView]
    init_containers: Sequence[ContainerView] = ()
    sandbox_ready: bool = False
    initialized: bool = True
    reason: str | None = None
    message: str | None = None
    readiness_gates: Sequence[str] = ()
    observed_generation: int | None = None
    extra_fields: Mapping[str, Any] = field(default_factory=dict)


def _condition(
    kind: str,
    ok: bool,
    previous: Mapping[str, Mapping[str, Any]],
    when: str,
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    transition = before.get("lastTransitionTime") if before and before.get("status") == status else None
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition or when,
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def pod_conditions(
    view: PodView, existing: Sequence[Mapping[str, Any]], *, when: str
) -> list[dict[str, Any]]:
    """The kubelet's conditions, keeping others' (PodScheduled, DisruptionTarget, readiness gates)."""
    previous = {str(c.get("type")): c for c in existing}
    terminal = view.phase in ("Succeeded", "Failed")
    completed = view.phase == "Succeeded"
    not_ready = [c.name for c in view.containers if not c.ready]
    pending_init = [c.name for c in view.init_containers if c.terminated is None or c.terminated.exit_code]
    containers_ready = not not_ready and not terminal
    gates_missing = [g for g in view.readiness_gates if (previous.get(g) or {}).get("status") != "True"]

    def make(kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
        return _condition(kind, ok, previous, when, None if ok else reason, None if ok else message)

    unready: tuple[str, str | None] = (
        ("PodCompleted", None)
        if completed
        else ("ContainersNotReady", f"containers with unready status: [{' '.join(not_ready)}]")
    )
    if containers_ready and gates_missing:
        unready = (
            "ReadinessGatesNotReady",
            f'corresponding condition of pod readiness gate "{gates_missing[0]}" does not exist.',
        )
    ours = [
        make("PodReadyToStartContainers", view.sandbox_ready and not terminal),
        make(
            "Initialized",
            view.initialized,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        make("ContainersReady", containers_ready, *unready if not containers_ready else (None, None)),
        make("Ready", containers_ready and not gates_missing, *unready),
    ]
    if completed and view.init_containers:
        ours[1]["reason"] = "PodCompleted"
    theirs = [dict(c) for c in existing if c.get("type") not in POD_CONDITION_TYPES]
    return theirs + ours


def pod_status(
    view: PodView, existing_conditions: Sequence[Mapping[str, Any]], *, when: str
) -> dict[str, Any]:
    """A full pod status, for a JSON merge patch of pods/status (lists are replaced whole)."""
    status: dict[str, Any] = {
        "phase": view.phase,
        "conditions": pod_conditions(view, existing_conditions, when=when),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "containerStatuses": [c.to_api() for c in view.containers],
        "reason": view.reason,
        "message": view.message,
    }
    if view.init_containers:
        status["initContainerStatuses"] = [c.to_api() for c in view.init_containers]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.start_time:
        status["startTime"] = view.start_time
    if view.observed_generation is not None:
        status["observedGeneration"] = view.observed_generation
    status.update(view.extra_fields)
    return status


def pod_phase(
    *,
    restart_policy: str,
    containers: Sequence[ContainerView],
    initialized: bool,
    init_failed: bool = False,
    terminal: bool = False,
) -> str:
    """The kubelet's phase rule.

    A container waiting to be restarted counts as stopped (by its last exit); one waiting that
    never ran keeps the pod Pending. `terminal` (the pod is being deleted or the node shuts down)
    applies the rule of restartPolicy Never, so the pod ends Succeeded or Failed.
    """
    if terminal:
        ends = [c.terminated or c.last_terminated for c in containers]
        exits = [end.exit_code if end is not None else 137 for end in ends]
        return "Succeeded" if initialized and exits and not any(exits) else "Failed"
    if init_failed and restart_policy == "Never":
        return "Failed"
    if not initialized:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for c in containers:
        last = c.terminated or (c.last_terminated if c.state_name == "waiting" else None)
        if c.state_name == "running":
            running += 1
        elif last is not None:
            stopped += 1
            succeeded += last.exit_code == 0
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not containers:
        return "Pending"
    if restart_policy == "Always":
        return "Running"
    if succeeded == stopped:
        return "Succeeded"
    return "Running" if restart_policy == "OnFailure" else "Failed"


# --------------------------------------------------------------------------- node and lease


@dataclass(frozen=True)
class MachineFacts:
    cpu: int
    memory_ki: int
    ephemeral_storage_ki: int
    hostname: str
    kernel: str
    os_image: str
    architecture: str
    machine_id: str
    boot_id: str


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def _memory_ki() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    except (ValueError, OSError):
        return 4 * 1024 * 1024


GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def machine_facts(state_dir: Path) -> MachineFacts:
    """The real figures of this machine, as a kubelet reports them."""
    try:
        cpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpu = os.cpu_count() or 1
    stat = os.statvfs(state_dir)
    return MachineFacts(
        cpu=cpu,
        memory_ki=_memory_ki(),
        ephemeral_storage_ki=stat.f_blocks * stat.f_frsize // 1024,
        hostname=platform.node() or "localhost",
        kernel=platform.release(),
        os_image=_os_image(),
        architecture=GO_ARCH.get(platform.machine(), platform.machine()),
        machine_id=_read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
    )


NODE_CONDITIONS: tuple[tuple[str, str, str, str], ...] = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "modelcycle local node is posting ready status"),
)


def node_resources(
    facts: MachineFacts, *, cpu: str | None, memory: str | None, max_pods: int
) -> dict[str, str]:
    return {
        "cpu": cpu or str(facts.cpu),
        "memory": memory or f"{facts.memory_ki}Ki",
        "ephemeral-storage": f"{facts.ephemeral_storage_ki}Ki",
        "pods": str(max_pods),
    }


def node_status(
    facts: MachineFacts,
    *,
    resources: Mapping[str, str],
    kubelet_version: str,
    when: datetime.datetime,
    previous: Sequence[Mapping[str, Any]] = (),
    kubelet_port: int = 0,
) -> dict[str, Any]:
    stamp = rfc3339(when)
    before = {str(c.get("type")): c for c in previous}
    conditions = []
    for kind, status, reason, message in NODE_CONDITIONS:
        old = before.get(kind)
        transition = old.get("lastTransitionTime") if old and old.get("status") == status else None
        conditions.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": transition or stamp,
            }
        )
    return {
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": facts.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": facts.machine_id,
            "systemUUID": facts.machine_id,
            "bootID": facts.boot_id,
            "kernelVersion": facts.kernel,
            "osImage": facts.os_image,
            "containerRuntimeVersion": f"{RUNTIME_NAME}://{__version__}",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": facts.architecture,
        },
    }


def node_object(name: str, facts: MachineFacts, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Node to create (status is written separately through nodes/status)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": facts.architecture,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": facts.architecture,
                NODE_LABEL: "true",
                **(labels or {}),
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
    }


def lease_object(node_name: str, node_uid: str | None, *, when: datetime.datetime) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": node_name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}
        ]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": micro_time(when),
        },
    }


# Taints the node-lifecycle controller puts on a node it has not heard from; ours to clear at start.
NOT_READY_TAINT_KEYS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
