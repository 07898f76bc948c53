"""The whole platform on this machine: `modelcycle local up | down | status`.

`up` brings up, in order, and waits for each to be healthy:

1. the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler; controlplane.py);
2. the real node (kubenode.py): containerd + runc, the kubelet and kube-proxy, CNI bridge
   networking in 198.18.0.0/15 (network.py), the images `make setup` built imported;
3. the namespace `modelcycle-demo`, labelled `pod-security.kubernetes.io/enforce=restricted`;
4. the artifact store: a `local` PersistentVolume on a directory of this machine, with node
   affinity to the node, pre-bound to the PersistentVolumeClaim `modelcycle-artifacts`;
5. the CRDs of the five kinds (generated from the models, as `modelcycle crds print` prints them);
6. the operator, installed in-cluster from charts/modelcycle by Helm (incluster.py).

Everything lives under one directory (default `~/.cache/modelcycle/local`):

    controlplane/   certificates, etcd data, kubeconfigs, logs (controlplane.py)
    node/           containerd's state, the kubelet's and kube-proxy's configuration (kubenode.py)
    artifacts/      the artifact PersistentVolume
    logs/           containerd.log, kubelet.log, kube-proxy.log
    platform.json   what `up` recorded: the control plane's start, the namespace, timings

The processes outlive `up` (each leads its own session); `down` drains the node (each pod gets
its graceful stop), stops them and removes everything of ours from the host; `up` twice reuses
what still runs and is healthy, and restarts only the node components that died.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelcycle.api import crdgen, kinds
from modelcycle.kubeclient import MERGE_PATCH, Kube, quote
from modelcycle.local import controlplane as cp
from modelcycle.local import incluster, kubenode, network, procfs
from modelcycle.local.processes import PlatformError, wait_until

NAMESPACE = "modelcycle-demo"
ARTIFACT_CLAIM = "modelcycle-artifacts"
NODE_NAME = "modelcycle-local"
POD_SECURITY_LABELS: dict[str, str] = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
ARTIFACT_CAPACITY = "20Gi"
FIELD_MANAGER = "modelcycle-local"
APPLY_PATCH = "application/apply-patch+yaml"
STATE_FILE = "platform.json"
OPERATOR = "operator"
WORKLOAD_UID = 10001
DRAIN_TIMEOUT = 60.0


# --------------------------------------------------------------------------- layout


def default_root(*, environ: Mapping[str, str] | None = None) -> Path:
    return cp.cache_dir(environ=environ) / "local"


@dataclass(frozen=True)
class PlatformLayout:
    root: Path

    @property
    def controlplane(self) -> Path:
        return self.root / "controlplane"

    @property
    def node(self) -> Path:
        return self.root / "node"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


@dataclass(frozen=True)
class PlatformOptions:
    namespace: str | None = NAMESPACE
    """The namespace to prepare (with the artifact claim); None: none (tests make their own)."""
    artifact_claim: str = ARTIFACT_CLAIM
    node_name: str = NODE_NAME
    bin_dir: Path | None = None
    binaries: Mapping[str, Path] | None = None
    timeout: float = 120.0
    """Seconds each component may take to become healthy."""
    operator_args: tuple[str, ...] = ()
    """Extra `modelcycle operator` flags (for example `--resync-seconds 10`)."""


# --------------------------------------------------------------------------- state


@dataclass
class PlatformState:
    root: str
    kubeconfig: str
    server: str
    controlplane_started_at: float
    namespace: str
    artifact_claim: str
    node_name: str
    started_at: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PlatformState:
        data = json.loads(text)
        # A state file of an older release may carry more fields: what `down` needs is here.
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_state(root: Path) -> PlatformState | None:
    path = PlatformLayout(Path(root)).state_file
    try:
        return PlatformState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise PlatformError(
            f"{path} is unreadable ({exc}); run `modelcycle local down` and up again"
        ) from exc


def _write_state(layout: PlatformLayout, state: PlatformState) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(layout.state_file)


# --------------------------------------------------------------------------- small helpers


def _descendants(pids: Sequence[int]) -> set[int]:
    """The processes and all their descendants (by parent pid in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = procfs.stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    seen: set[int] = set()
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
    return seen


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# --------------------------------------------------------------------------- cluster objects


def server_side_apply(
    kube: Kube, path: str, body: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER
) -> dict[str, Any]:
    return kube.request(
        "PATCH",
        path,
        params={"fieldManager": field_manager, "force": True},
        body=body,
        content_type=APPLY_PATCH,
    )


def ensure_namespace(
    kube: Kube, name: str, *, labels: Mapping[str, str] = POD_SECURITY_LABELS, timeout: float = 60
) -> None:
    """The namespace with its labels, and its `default` ServiceAccount (pods need it)."""
    server_side_apply(
        kube,
        f"/api/v1/namespaces/{quote(name)}",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}},
    )
    wait_until(
        lambda: kube.get_or_none(f"/api/v1/namespaces/{quote(name)}/serviceaccounts/default"),
        timeout=timeout,
        what=f"ServiceAccount {name}/default",
    )


def artifact_volume_name(namespace: str, claim: str) -> str:
    """PersistentVolumes are cluster-wide and bind one claim each: one per namespace."""
    name = f"{claim}-{namespace}"
    if len(name) <= 253:
        return name
    import hashlib

    return f"{name[:240]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def artifact_volume(*, name: str, path: Path, node_name: str, namespace: str, claim: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "modelcycle"}},
        "spec": {
            "capacity": {"storage": ARTIFACT_CAPACITY},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}
                            ]
                        }
                    ]
                }
            },
            # Pre-bound: this volume is for this claim only.
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": claim,
            },
        },
    }


def artifact_claim(
    *, namespace: str, claim: str, volume: str | None, capacity: str = ARTIFACT_CAPACITY
) -> dict[str, Any]:
    """The artifact claim: bound to our local `volume`, or (None) from the default StorageClass."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": capacity}},
    }
    if volume is not None:
        spec.update(storageClassName="", volumeName=volume)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "modelcycle"},
        },
        "spec": spec,
    }


def ensure_artifact_store(
    kube: Kube, *, namespace: str, claim: str, path: Path, node_name: str, timeout: float = 60
) -> str:
    """A local PersistentVolume at `path` bound to the claim `namespace/claim`; returns the PV name."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # Pods run as uid 10001 and a local volume gets no fsGroup: the directory must be theirs.
        os.chown(path, WORKLOAD_UID, WORKLOAD_UID)
    name = artifact_volume_name(namespace, claim)
    pv_path = f"/api/v1/persistentvolumes/{quote(name)}"
    existing = kube.get_or_none(pv_path)
    if existing is not None:
        local = ((existing.get("spec") or {}).get("local") or {}).get("path")
        if local != str(path):
            raise PlatformError(
                f"PersistentVolume {name} already points at {local}, not {path}; delete it first "
                f"(kubectl delete pv {name})"
            )
        ref = (existing.get("spec") or {}).get("claimRef") or {}
        if (existing.get("status") or {}).get("phase") == "Released" or (
            ref.get("uid") and not _claim_has_uid(kube, namespace, claim, str(ref["uid"]))
        ):
            # Its claim was deleted (a namespace recreated): make it available to the new claim.
            kube.patch(
                pv_path,
                {"spec": {"claimRef": {"uid": None, "resourceVersion": None}}},
                content_type=MERGE_PATCH,
            )
    else:
        kube.create(
            "/api/v1/persistentvolumes",
            artifact_volume(name=name, path=path, node_name=node_name, namespace=namespace, claim=claim),
        )
    pvc_path = f"/api/v1/namespaces/{quote(namespace)}/persistentvolumeclaims/{quote(claim)}"
    if kube.get_or_none(pvc_path) is None:
        kube.create(
            f"/api/v1/namespaces/{quote(namespace)}/persistentvolumeclaims",
            artifact_claim(namespace=namespace, claim=claim, volume=name),
        )

    def bound() -> bool:
        pvc = kube.get_or_none(pvc_path) or {}
        return (pvc.get("status") or {}).get("phase") == "Bound"

    wait_until(
        bound,
        timeout=timeout,
        what=f"PersistentVolumeClaim {namespace}/{claim} to be Bound to {name}",
        detail=lambda: json.dumps((kube.get_or_none(pvc_path) or {}).get("status")),
    )
    return name


def _claim_has_uid(kube: Kube, namespace: str, claim: str, uid: str) -> bool:
    pvc = kube.get_or_none(f"/api/v1/namespaces/{quote(namespace)}/persistentvolumeclaims/{quote(claim)}")
    return pvc is not None and pvc["metadata"].get("uid") == uid


def crd_manifests() -> list[dict[str, Any]]:
    """The CRDs as `modelcycle crds print` prints them (generated from the models)."""
    return [crdgen.crd(kind) for kind in kinds.ALL]


def install_crds(kube: Kube, *, timeout: float = 60) -> list[str]:
    names = []
    for manifest in crd_manifests():
        name = manifest["metadata"]["name"]
        server_side_apply(
            kube,
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{quote(name)}",
            manifest,
        )
        names.append(name)

    def established(name: str) -> bool:
        crd = kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{quote(name)}") or {}
        conds = {c.get("type"): c.get("status") for c in (crd.get("status") or {}).get("conditions") or []}
        return conds.get("Established") == "True" and conds.get("NamesAccepted") == "True"

    for name in names:
        wait_until(
            functools.partial(established, name), timeout=timeout, what=f"CRD {name} to be Established"
        )
    return names


def node_ready(kube: Kube, name: str) -> bool:
    node = kube.get_or_none(f"/api/v1/nodes/{quote(name)}")
    if node is None:
        return False
    conds = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    taints = {t.get("key") for t in (node.get("spec") or {}).get("taints") or []}
    return conds.get("Ready") == "True" and not (
        taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    )


# --------------------------------------------------------------------------- the platform


StepReporter = Callable[[str, str, float], None]
"""Called as each step finishes: (step, what happened, seconds)."""


def _quiet(step: str, message: str, seconds: float) -> None:
    del step, message, seconds


class Platform:
    """Control plane + real node + namespace + artifact store + CRDs + the operator in-cluster.

    Its processes outlive this Python process (each leads its own session) and are found again
    through the state files: controlplane/, node/node.json and platform.json.
    """

    def __init__(
        self,
        root: Path | None = None,
        options: PlatformOptions | None = None,
        *,
        report: StepReporter = _quiet,
    ) -> None:
        self.layout = PlatformLayout(Path(root or default_root()).expanduser().resolve())
        self.options = options or PlatformOptions()
        self.report = report
        self.controlplane: cp.ControlPlane | None = None
        self.cp_state: cp.ControlPlaneState | None = None
        self.timings: dict[str, float] = {}
        self._kube: Kube | None = None
        self._node_images: kubenode.Images | None = None

    # ------------------------------------------------------------------ accessors

    @property
    def kubeconfig(self) -> Path:
        return cp.StateLayout(self.layout.controlplane).admin_kubeconfig

    @property
    def server(self) -> str:
        if self.cp_state is not None:
            return self.cp_state.server
        if self.controlplane is not None:
            return self.controlplane.server
        raise PlatformError("the control plane is not started")

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube.from_kubeconfig(self.kubeconfig, user_agent="modelcycle-local-platform")
        return self._kube

    # ------------------------------------------------------------------ up

    def start(self) -> PlatformState:
        """Start (or reuse) every component, waiting for each to be healthy. Idempotent."""
        began = time.monotonic()
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.layout.logs.mkdir(exist_ok=True)
        previous = read_state(self.layout.root)
        # Checked before anything starts: no half-started platform.
        self._node_images = kubenode.preflight()[1]
        restarted = self._start_controlplane(previous)
        self._save()
        self._step_kubenode(restarted)
        self._save()
        if self.options.namespace:
            self._step("namespace", self._ensure_namespace)
            self._step("artifact store", self._ensure_artifacts)
        self._step("CRDs", self._install_crds)
        self._step("operator", self._install_operator)
        self.timings["total"] = time.monotonic() - began
        return self._save()

    def _save(self) -> PlatformState:
        """Record what runs now, so that `down` finds it even after a failed `up`."""
        state = self.state()
        _write_state(self.layout, state)
        return state

    def state(self) -> PlatformState:
        return PlatformState(
            root=str(self.layout.root),
            kubeconfig=str(self.kubeconfig),
            server=self.server,
            controlplane_started_at=self.cp_state.started_at if self.cp_state else 0.0,
            namespace=self.options.namespace or "",
            artifact_claim=self.options.artifact_claim,
            node_name=self.options.node_name,
            started_at=time.time(),
            timings=dict(self.timings),
        )

    def _step(self, name: str, action: Callable[[], str]) -> None:
        began = time.monotonic()
        message = action()
        self.timings[name] = time.monotonic() - began
        self.report(name, message, self.timings[name])

    def _start_controlplane(self, previous: PlatformState | None) -> bool:
        """True when the control plane was (re)started rather than reused."""
        began = time.monotonic()
        state = cp.read_state(self.layout.controlplane)
        if state is not None and all(s.healthy for s in cp.component_statuses(state)):
            self.cp_state = state
            self.timings["control plane"] = time.monotonic() - began
            self.report("control plane", f"v{state.version} already running at {state.server}", 0.0)
            return previous is None or previous.controlplane_started_at != state.started_at
        if state is not None:
            cp.stop_detached(self.layout.controlplane)  # half of it died: start all of it again
        plane = cp.ControlPlane(
            state_dir=self.layout.controlplane,
            binaries=self.options.binaries,
            bin_dir=self.options.bin_dir,
            detach=True,
            start_timeout=self.options.timeout,
            node_address=network.NODE_IP,
        )
        plane.start()
        self.controlplane = plane
        self.cp_state = cp.read_state(self.layout.controlplane)
        if self.cp_state is None:
            raise PlatformError(f"the control plane wrote no state in {self.layout.controlplane}")
        self.timings["control plane"] = time.monotonic() - began
        self.report(
            "control plane", f"v{cp.K8S_VERSION} ready at {plane.server}", self.timings["control plane"]
        )
        return True

    def kubenode(self) -> kubenode.KubeNode:
        """The real node of this platform."""
        return kubenode.KubeNode(
            self.layout.node,
            controlplane=cp.StateLayout(self.layout.controlplane),
            server=self.server if self.cp_state is not None or self.controlplane is not None else "",
            node_name=self.options.node_name,
            logs=self.layout.logs,
            timeout=self.options.timeout,
            node_ready=lambda: node_ready(self.kube, self.options.node_name),
        )

    def _step_kubenode(self, restarted: bool) -> None:
        assert self.cp_state is not None
        self.kubenode().ensure(
            apiserver_port=self.cp_state.ports["apiserver"], fresh=restarted, report=self.report
        )
        # `down` cordoned it (the Node object outlives the node in etcd).
        self.kube.patch(
            f"/api/v1/nodes/{quote(self.options.node_name)}",
            {"spec": {"unschedulable": None}},
            content_type=MERGE_PATCH,
        )

    def _install_operator(self) -> str:
        images = self._node_images
        assert images is not None, "start() ran the preflight"
        values = incluster.operator_values(
            operator_image=images.operator,
            workload_image=images.workload,
            workload_namespaces=[self.options.namespace] if self.options.namespace else [],
            artifact_claim=self.options.artifact_claim,
            extra_args=self.options.operator_args,
        )
        incluster.helm_install(
            helm=cp.find_binary("helm"),
            kubeconfig=self.kubeconfig,
            values=values,
            timeout=self.options.timeout,
        )
        return (
            f"{incluster.NAMESPACE}/{incluster.DEPLOYMENT} Available ({images.operator}), installed by Helm"
        )

    def _drain(self) -> int:
        """Cordon the node and delete its pods, so each container gets its graceful stop."""
        name = self.options.node_name
        try:
            self.kube.patch(
                f"/api/v1/nodes/{quote(name)}", {"spec": {"unschedulable": True}}, content_type=MERGE_PATCH
            )
            pods = self.kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={name}")["items"]
        except Exception:
            return 0
        for pod in pods:
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{quote(meta['namespace'])}/pods/{quote(meta['name'])}"
            with contextlib.suppress(Exception):
                self.kube.delete(path)

        def gone() -> bool:
            left = self.kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={name}")["items"]
            return not [p for p in left if p["metadata"]["uid"] in {q["metadata"]["uid"] for q in pods}]

        with contextlib.suppress(PlatformError):
            wait_until(gone, timeout=DRAIN_TIMEOUT, what="the node's pods to stop", interval=0.5)
        return len(pods)

    def _ensure_namespace(self) -> str:
        namespace = str(self.options.namespace)
        ensure_namespace(self.kube, namespace, timeout=self.options.timeout)
        return f"{namespace} (pod security: restricted)"

    def _ensure_artifacts(self) -> str:
        volume = ensure_artifact_store(
            self.kube,
            namespace=str(self.options.namespace),
            claim=self.options.artifact_claim,
            path=self.layout.artifacts,
            node_name=self.options.node_name,
            timeout=self.options.timeout,
        )
        return f"PVC {self.options.artifact_claim} Bound to PV {volume} ({self.layout.artifacts})"

    def _install_crds(self) -> str:
        names = install_crds(self.kube, timeout=self.options.timeout)
        return f"{len(names)} CRDs Established"

    # ------------------------------------------------------------------ down

    def stop(self) -> int:
        """Cordon and drain the node (every pod gets its graceful stop), stop kube-proxy and the
        kubelet, remove what containers are left, stop containerd, remove every mount, network
        namespace, bridge, iptables chain and cgroup of ours from the host, then stop the control
        plane. Returns the number of pods drained. Safe to call twice."""
        self.cp_state = self.cp_state or cp.read_state(self.layout.controlplane)
        stopped = 0
        if kubenode.NodeLayout(self.layout.node).state_file.exists():
            stopped = self._drain() if self.cp_state is not None else 0
            self.kubenode().stop()
        if self._kube is not None:
            self._kube.close()
            self._kube = None
        cp.stop_detached(self.layout.controlplane)
        self.controlplane = None
        self.cp_state = None
        self.layout.state_file.unlink(missing_ok=True)
        return stopped


def memory_usage(layout: PlatformLayout, cp_state: cp.ControlPlaneState | None) -> dict[str, int]:
    """RSS in bytes of each part of the platform, each process counted once: the control plane,
    each node component, containerd's shims, and the containers (the operator's included)."""
    groups: dict[str, set[int]] = {
        "control plane": _descendants(
            [p.pid for p in (cp_state.processes if cp_state else []) if p.is_running()]
        )
    }
    node_state = kubenode.NodeState.load(kubenode.NodeLayout(layout.node).state_file)
    if node_state is not None:
        containers = set(kubenode.container_pids(layout.node))
        components = {c: {r.pid} for c, r in node_state.processes.items() if r.is_running()}
        groups.update(components)
        groups["shims"] = (
            set(kubenode.processes_using(layout.node)) - containers - set().union(*components.values())
        )
        groups["pods"] = containers
    return {name: sum(rss_bytes(pid) for pid in pids) for name, pids in groups.items()}


def format_memory(usage: Mapping[str, int]) -> str:
    mib = {k: v / 2**20 for k, v in usage.items()}
    parts = ", ".join(f"{k} {v:.0f}" for k, v in mib.items())
    return f"{sum(mib.values()):.0f} MiB ({parts})"


# --------------------------------------------------------------------------- detached commands


def up(
    root: Path | None = None, options: PlatformOptions | None = None, *, report: StepReporter = _quiet
) -> Platform:
    platform = Platform(root, options, report=report)
    platform.start()
    return platform


def down(root: Path | None = None, *, purge: bool = False) -> tuple[bool, int]:
    """Stop what `up` started. Returns (something was recorded, pods drained)."""
    platform = Platform(root)
    state = read_state(platform.layout.root)
    if state is not None:
        platform.options = PlatformOptions(node_name=state.node_name, namespace=state.namespace)
    recorded = (
        state is not None
        or cp.read_state(platform.layout.controlplane) is not None
        or kubenode.NodeLayout(platform.layout.node).state_file.exists()
    )
    stopped = platform.stop()
    if purge:
        shutil.rmtree(platform.layout.root, ignore_errors=True)
    return recorded, stopped


@dataclass(frozen=True)
class ComponentReport:
    component: str
    pids: list[int]
    healthy: bool
    running: bool
    detail: str


def status(root: Path | None = None) -> tuple[PlatformState | None, list[ComponentReport]]:
    layout = PlatformLayout(Path(root or default_root()).expanduser().resolve())
    state = read_state(layout.root)
    reports: list[ComponentReport] = []
    cp_state = cp.read_state(layout.controlplane)
    if cp_state is None:
        reports.append(ComponentReport("control plane", [], False, False, "not running"))
    else:
        statuses = cp.component_statuses(cp_state)
        unhealthy = [s.component for s in statuses if not s.healthy]
        reports.append(
            ComponentReport(
                "control plane",
                [s.pid for s in statuses],
                not unhealthy,
                any(s.running for s in statuses),
                f"v{cp_state.version} at {cp_state.server}"
                + (f"; not healthy: {', '.join(unhealthy)}" if unhealthy else ""),
            )
        )
    kube: Kube | None = None
    if cp_state is not None and reports[0].healthy:
        kube = Kube.from_kubeconfig(
            cp.StateLayout(layout.controlplane).admin_kubeconfig, user_agent="modelcycle-local-status"
        )
    try:
        reports.extend(_node_reports(layout, state.node_name if state else NODE_NAME, kube))
        if kube is not None and state is not None:
            reports.append(_namespace_report(kube, state))
    finally:
        if kube is not None:
            kube.close()
    return state, reports


def _node_reports(layout: PlatformLayout, node_name: str, kube: Kube | None) -> list[ComponentReport]:
    node_state = kubenode.NodeState.load(kubenode.NodeLayout(layout.node).state_file)
    records = node_state.processes if node_state else {}
    reports = []
    for component in kubenode.COMPONENTS:
        record = records.get(component)
        running = record is not None and record.is_running()
        detail = "running" if running else "not running"
        if component == kubenode.KUBELET and running:
            ready = kube is not None and node_ready(kube, node_name)
            detail = f"Node {node_name} {'Ready' if ready else 'not Ready'}"
            running = running and ready
        reports.append(ComponentReport(component, [record.pid] if record else [], running, running, detail))
    available = kube is not None and incluster.operator_available(kube)
    deployment = f"Deployment {incluster.NAMESPACE}/{incluster.DEPLOYMENT}"
    detail = f"{deployment} {'Available' if available else 'not Available'}"
    reports.append(ComponentReport(OPERATOR, [], available, available, detail))
    return reports


def status_memory(root: Path | None = None) -> dict[str, int]:
    layout = PlatformLayout(Path(root or default_root()).expanduser().resolve())
    return memory_usage(layout, cp.read_state(layout.controlplane))


def _namespace_report(kube: Kube, state: PlatformState) -> ComponentReport:
    ns = kube.get_or_none(f"/api/v1/namespaces/{quote(state.namespace)}")
    pvc = kube.get_or_none(
        f"/api/v1/namespaces/{quote(state.namespace)}/persistentvolumeclaims/{quote(state.artifact_claim)}"
    )
    phase = ((pvc or {}).get("status") or {}).get("phase") or "missing"
    ok = ns is not None and phase == "Bound"
    return ComponentReport(
        "namespace",
        [],
        ok,
        ns is not None,
        f"{state.namespace}: {'present' if ns else 'missing'}; PVC {state.artifact_claim} {phase}",
    )
