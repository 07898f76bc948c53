"""The real local node: containerd + runc, the kubelet and kube-proxy, pods in containers.

Everything upstream, nothing stands in: the kubelet (built from k8s.io/kubernetes/cmd/kubelet)
runs the pods the scheduler binds to it through containerd's CRI plugin and runc, with CNI
`bridge` + `host-local` networking in 198.18.0.0/15 (network.py); kube-proxy programs the
host's iptables so Services and their ClusterIPs work; images are the ones tools/images/build.sh
built here (no registry: they are imported into containerd).

The pure functions at the top build the configuration of each component (unit-tested); `KubeNode`
starts, checks and stops the processes; `clean_host` removes everything of ours from the host
(mounts, network namespaces, bridges, iptables chains, cgroups), which `down` runs and `up`
runs first when a previous run was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelcycle.errors import UserError
from modelcycle.local import controlplane as cp
from modelcycle.local import network
from modelcycle.local.processes import PlatformError, http_ok, launch, log_tail, stop_process, wait_until

CONTAINERD = "containerd"
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
COMPONENTS = (CONTAINERD, KUBELET, KUBE_PROXY)
KUBELET_PORT = 10350
KUBELET_HEALTHZ_PORT = 10358
KUBE_PROXY_HEALTHZ_PORT = 10356
KUBE_PROXY_METRICS_PORT = 10349
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip", "mount", "umount")
CRI_NAMESPACE = "k8s.io"
CGROUP_ROOTS = ("kubepods", "k8s.io")
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}
OWNER_FILE = Path("/run/modelcycle/real-node")
"""Which root's node owns this machine's host-wide state (there is one real node per machine)."""
SETUP_HINT = "run `make setup` (it installs containerd, runc, the CNI plugins and builds the images)"


class NodeError(PlatformError):
    """The real node cannot start here; the message names what is missing and what to do."""


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class NodeLayout:
    root: Path
    store: Path = field(default_factory=lambda: cp.cache_dir() / "containerd")
    """containerd's root: images and snapshots. Shared by every platform root of this machine
    (there is one real node at a time), so images are imported once, not on every `up`."""

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_root(self) -> Path:
        return self.kubelet / "root"

    @property
    def kube_proxy(self) -> Path:
        return self.root / "kube-proxy"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def state_file(self) -> Path:
        return self.root / "node.json"

    def kubeconfig(self, component: str) -> Path:
        return self.root / component / "kubeconfig"

    def config(self, component: str) -> Path:
        return self.root / component / "config.yaml"


@dataclass(frozen=True)
class Images:
    """What tools/images/build.sh built (its images.env): image references and OCI archives."""

    pause: str
    operator: str
    workload: str
    archives: dict[str, Path]

    @classmethod
    def load(cls, env_file: Path) -> Images:
        try:
            text = env_file.read_text()
        except FileNotFoundError:
            raise NodeError(f"no images built yet ({env_file} is missing): {SETUP_HINT}") from None
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        try:
            archives = {
                name: Path(values[f"{name.upper()}_ARCHIVE"]) for name in ("pause", "operator", "workload")
            }
            images = cls(values["PAUSE_IMAGE"], values["OPERATOR_IMAGE"], values["WORKLOAD_IMAGE"], archives)
        except KeyError as exc:
            raise NodeError(f"{env_file} names no {exc.args[0]}: {SETUP_HINT}") from None
        missing = [str(p) for p in archives.values() if not p.is_file()]
        if missing:
            raise NodeError(f"image archives missing: {', '.join(missing)}: {SETUP_HINT}")
        return images

    def refs(self) -> dict[str, str]:
        return {"pause": self.pause, "operator": self.operator, "workload": self.workload}


def images_env_file(*, environ: Mapping[str, str] | None = None) -> Path:
    return cp.cache_dir(environ=environ) / "images" / "images.env"


# --------------------------------------------------------------------------- configuration (pure)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _toml(table: Mapping[str, Any], prefix: str = "") -> str:
    """TOML for nested string-keyed tables of scalars and lists (all containerd's config needs)."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, Mapping)]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for key, value in table.items():
        if isinstance(value, Mapping):
            name = f'{prefix}."{key}"' if "." in key else f"{prefix}.{key}" if prefix else key
            out.append(_toml(value, name))
    return "\n".join(line for line in out if line)


def containerd_config(layout: NodeLayout, *, pause_image: str) -> str:
    cri = {
        "sandbox_image": pause_image,
        # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails in runc
        # ("can't get final child's PID from pipe: EOF").
        "restrict_oom_score_adj": True,
        "disable_hugetlb_controller": True,
        # Pod network namespaces under our state directory, not /run/netns where `ip netns` users
        # bind-mount and can hide them.
        "netns_mounts_under_state_dir": True,
        "enable_selinux": False,
        "containerd": {
            "snapshotter": "overlayfs",
            "default_runtime_name": "runc",
            "runtimes": {
                "runc": {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": False}}
            },
        },
        "cni": {"bin_dir": str(CNI_BIN_DIR), "conf_dir": str(layout.cni_conf_dir), "max_conf_num": 1},
    }
    document = {
        "version": 2,
        "root": str(layout.store),
        "state": str(layout.containerd / "state"),
        "disabled_plugins": [
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.tracing.processor.v1.otlp",
        ],
        "grpc": {"address": str(layout.containerd_socket)},
        "ttrpc": {"address": f"{layout.containerd_socket}.ttrpc"},
        "plugins": {
            "io.containerd.grpc.v1.cri": cri,
            "io.containerd.internal.v1.opt": {"path": str(layout.containerd / "opt")},
        },
    }
    return _toml(document) + "\n"


def cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """One bridge for the pods; routes only to our range (no default route: pods reach nothing else)."""
    return {
        "cniVersion": "0.4.0",
        "name": "modelcycle",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.POD_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.POD_CIDR}]],
                    "routes": [{"dst": network.OUR_RANGE}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            }
        ],
    }


def kubelet_config(layout: NodeLayout, *, client_ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": cp.LOOPBACK,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(layout.pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(layout.pki / "kubelet-serving.key"),
        # This VM mounts cgroup v1 hierarchies; kubelet 1.35+ refuses v1 unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "imageServiceEndpoint": f"unix://{layout.containerd_socket}",
        # No DNS for pods: nothing of ours resolves names, and the host's resolver is not ours.
        "resolvConf": "",
        "clusterDomain": cp.CLUSTER_DOMAIN,
        # Low thresholds: a busy 2-core VM must not evict the demo.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        # Our images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        "volumePluginDir": str(layout.kubelet / "volume-plugins"),
        "containerLogMaxSize": "10Mi",
        "containerLogMaxFiles": 3,
    }


def kube_proxy_config(layout: NodeLayout, *, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig(KUBE_PROXY))},
        "mode": "iptables",
        "hostnameOverride": node_name,
        "bindAddress": network.NODE_IP,
        "clusterCIDR": network.POD_CIDR,
        "healthzBindAddress": f"{cp.LOOPBACK}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"{cp.LOOPBACK}:{KUBE_PROXY_METRICS_PORT}",
        # NodePorts only on the node IP, never on this machine's other addresses.
        "nodePortAddresses": [f"{network.NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False},
        # 0: leave the host's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def kubelet_argv(binary: Path, layout: NodeLayout, *, node_name: str) -> list[str]:
    return [
        str(binary),
        f"--config={layout.config(KUBELET)}",
        f"--kubeconfig={layout.kubeconfig(KUBELET)}",
        f"--root-dir={layout.kubelet_root}",
        f"--hostname-override={node_name}",
        f"--node-ip={network.NODE_IP}",
        "--v=1",
    ]


def kube_proxy_argv(binary: Path, layout: NodeLayout) -> list[str]:
    return [str(binary), f"--config={layout.config(KUBE_PROXY)}", "--v=1"]


def containerd_argv(binary: Path, layout: NodeLayout) -> list[str]:
    return [str(binary), f"--config={layout.containerd_config}", "--log-level=warn"]


def guard_rules(*, apiserver_port: int | None) -> dict[str, list[list[str]]]:
    """Our iptables chains: pods reach only our range (and our range only them), and the API
    server, which listens on every address for the pods' sake, answers only loopback and the node IP."""
    ours = network.OUR_RANGE
    rules = {
        "FORWARD": [
            ["-s", ours, "!", "-d", ours, "-j", "DROP"],
            ["!", "-s", ours, "-d", ours, "-j", "DROP"],
        ],
        "INPUT": [],
    }
    if apiserver_port is not None:
        port = ["-p", "tcp", "--dport", str(apiserver_port)]
        rules["INPUT"] = [
            [*port, "-i", "lo", "-j", "RETURN"],
            [*port, "-d", ours, "-j", "RETURN"],
            [*port, "-j", "DROP"],
        ]
    return rules


# --------------------------------------------------------------------------- host checks


def preflight(*, environ: Mapping[str, str] | None = None) -> tuple[dict[str, Path], Images]:
    """Everything the real node needs, or one NodeError naming all that is missing."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(
            "root: the real node runs containerd, the kubelet and kube-proxy, which need root "
            "(mounts, network namespaces, iptables, cgroups); run as root"
        )
    missing_tools = [t for t in HOST_TOOLS if shutil.which(t) is None]
    missing_tools += [f"CNI plugin {p}" for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).is_file()]
    if missing_tools:
        problems.append(f"{', '.join(missing_tools)} not installed: {SETUP_HINT}")
    filesystems = Path("/proc/filesystems").read_text() if Path("/proc/filesystems").exists() else ""
    if "overlay" not in filesystems:
        problems.append(
            "the kernel has no overlay filesystem, which containerd's snapshotter needs: `modprobe overlay`"
        )
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append("no cgroup hierarchy with the memory controller under /sys/fs/cgroup")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        problems.append(
            "the kernel's br_netfilter (bridge-nf-call-iptables) is not available: "
            "load it with `modprobe br_netfilter`"
        )
    binaries: dict[str, Path] = {}
    try:
        binaries = cp.find_binaries([KUBELET, KUBE_PROXY, "helm"], environ=environ)
    except UserError as exc:
        problems.append(str(exc))
    images: Images | None = None
    try:
        images = Images.load(images_env_file(environ=environ))
    except NodeError as exc:
        problems.append(str(exc))
    if problems or images is None:
        raise NodeError("the real node cannot start:\n  - " + "\n  - ".join(problems))
    for tool in ("containerd", "ctr"):
        binaries[tool] = Path(str(shutil.which(tool)))
    return binaries, images


# --------------------------------------------------------------------------- host state


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise NodeError(
            f"`{' '.join(argv)}` failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def ensure_node_bridge() -> None:
    if not link_exists(network.NODE_BRIDGE):
        run(["ip", "link", "add", network.NODE_BRIDGE, "type", "bridge"])
    addresses = run(["ip", "-o", "-4", "addr", "show", "dev", network.NODE_BRIDGE]).stdout
    if f" {network.NODE_IP}/" not in addresses:
        run(["ip", "addr", "add", f"{network.NODE_IP}/32", "dev", network.NODE_BRIDGE])
    run(["ip", "link", "set", network.NODE_BRIDGE, "up"])


def set_sysctls(values: Mapping[str, str]) -> dict[str, str]:
    """Set each /proc/sys value; return the previous ones (restored by `down`)."""
    previous = {}
    for key, value in values.items():
        path = Path("/proc/sys") / key
        previous[key] = path.read_text().strip()
        if previous[key] != value:
            path.write_text(value)
    return previous


def _chain(hook: str) -> str:
    return f"{network.IPTABLES_CHAIN_PREFIX}{hook}"


def install_guard(*, apiserver_port: int | None) -> None:
    """(Re)create our chains and hook each first in its built-in chain."""
    for hook, rules in guard_rules(apiserver_port=apiserver_port).items():
        chain = _chain(hook)
        if run(["iptables", "-w", "-N", chain], check=False).returncode != 0:
            run(["iptables", "-w", "-F", chain])
        for rule in rules:
            run(["iptables", "-w", "-A", chain, *rule])
        if run(["iptables", "-w", "-C", hook, "-j", chain], check=False).returncode != 0:
            run(["iptables", "-w", "-I", hook, "1", "-j", chain])


def remove_iptables(kube_proxy: Path | None) -> None:
    """kube-proxy's own cleanup, then every KUBE-* chain left (the kubelet's canaries) and ours."""
    if kube_proxy is not None and kube_proxy.is_file():
        run([str(kube_proxy), "--cleanup", "--v=0"], check=False, timeout=60)
    for table in ("filter", "nat", "mangle"):
        listing = run(["iptables", "-w", "-t", table, "-S"], check=False).stdout.splitlines()
        ours = [
            line.split()[1]
            for line in listing
            if line.startswith("-N ") and line.split()[1].startswith(("KUBE-", network.IPTABLES_CHAIN_PREFIX))
        ]
        for line in listing:  # jumps from built-in chains into ours
            parts = line.split()
            if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] in ours:
                run(["iptables", "-w", "-t", table, "-D", *parts[1:]], check=False)
        for chain in ours:
            run(["iptables", "-w", "-t", table, "-F", chain], check=False)
        for chain in ours:
            run(["iptables", "-w", "-t", table, "-X", chain], check=False)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under `root` (deepest first), from /proc/self/mountinfo."""
    prefix = str(root).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: Path) -> int:
    count = 0
    for _ in range(5):  # a mount can hide another at the same point
        points = mounts_under(root)
        if not points:
            break
        for point in points:
            if run(["umount", "-l", point], check=False).returncode == 0:
                count += 1
    return count


def our_cgroups() -> list[Path]:
    """`kubepods` and `k8s.io` in each cgroup hierarchy (v1: one per controller; or the v2 root)."""
    base = Path("/sys/fs/cgroup")
    hierarchies = [base, *sorted(p for p in base.iterdir() if p.is_dir())] if base.is_dir() else []
    return [h / name for h in hierarchies for name in CGROUP_ROOTS if (h / name).is_dir()]


def remove_cgroups() -> int:
    """Our cgroups, deepest first (a cgroup directory is removed with rmdir once it is empty)."""
    removed = 0
    for top in our_cgroups():
        # rglob would list the control files too; cgroup directories are all that rmdir takes.
        directories = sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        )
        for directory in [*directories, top]:
            with contextlib.suppress(OSError):
                directory.rmdir()
                removed += 1
    return removed


def processes_using(root: Path, *, exclude: Iterable[int] = ()) -> list[int]:
    """Pids whose command line names a path under `root` (our containerd, kubelet, shims...)."""
    needle = str(root).encode()
    skip = {os.getpid(), *exclude}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def container_pids(root: Path) -> list[int]:
    """Processes of our pods: members of the cgroups under `kubepods` (they survive their shims)."""
    pids: set[int] = set()
    for hierarchy in ("memory", "pids", "cpu"):
        top = Path("/sys/fs/cgroup") / hierarchy / "kubepods"
        for procs in top.rglob("cgroup.procs") if top.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return sorted(pids)


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def clean_host(
    layout: NodeLayout, *, kube_proxy: Path | None, restore_sysctls: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Remove everything of the real node from this machine. Safe when nothing is there."""
    report: dict[str, int] = {}
    stray = processes_using(layout.root)
    kill_pids(stray)
    kill_pids(container_pids(layout.root))
    report["processes"] = len(stray)
    time.sleep(0.2 if stray else 0)
    report["mounts"] = unmount_all(layout.root)
    remove_iptables(kube_proxy)
    for bridge in (network.POD_BRIDGE, network.NODE_BRIDGE):
        if link_exists(bridge):
            run(["ip", "link", "del", bridge], check=False)
    report["cgroups"] = remove_cgroups()
    for key, value in (restore_sysctls or {}).items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)
    # CNI's IP allocations and containerd's state describe containers that no longer exist.
    for stale in (layout.cni_ipam_dir, layout.containerd / "state"):
        shutil.rmtree(stale, ignore_errors=True)
    return report


# --------------------------------------------------------------------------- the node


@dataclass
class NodeState:
    """node.json: the processes (pid + start time) and the sysctls to restore."""

    processes: dict[str, cp.ProcessRecord]
    sysctls: dict[str, str]
    images: dict[str, str]

    def to_json(self) -> str:
        return json.dumps(
            {
                "processes": {k: vars(v) for k, v in self.processes.items()},
                "sysctls": self.sysctls,
                "images": self.images,
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path) -> NodeState | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                {k: cp.ProcessRecord(**v) for k, v in data["processes"].items()},
                dict(data["sysctls"]),
                dict(data.get("images", {})),
            )
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            return None


class KubeNode:
    """containerd, the kubelet and kube-proxy of one real node, under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        controlplane: cp.StateLayout,
        server: str,
        node_name: str,
        logs: Path,
        timeout: float = 120.0,
        node_ready: Callable[[], bool],
    ) -> None:
        self.layout = NodeLayout(Path(root))
        self.controlplane = controlplane
        self.server = server
        self.node_name = node_name
        self.logs = logs
        self.timeout = timeout
        self.node_ready = node_ready
        self.popens: dict[str, subprocess.Popen[bytes]] = {}
        self.state = NodeState.load(self.layout.state_file) or NodeState({}, {}, {})
        self.binaries: dict[str, Path] = {}
        self.images: Images | None = None

    # ------------------------------------------------------------------ state

    def _save(self) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(self.state.to_json())
        tmp.replace(self.layout.state_file)

    def running(self, component: str) -> bool:
        record = self.state.processes.get(component)
        return record is not None and record.is_running()

    def healthy(self) -> bool:
        return all(self.running(c) for c in COMPONENTS) and self.node_ready() and self._proxy_healthy()

    def _proxy_healthy(self) -> bool:
        return http_ok(f"http://{cp.LOOPBACK}:{KUBE_PROXY_HEALTHZ_PORT}/healthz")

    def records(self) -> list[cp.ProcessRecord]:
        return list(self.state.processes.values())

    # ------------------------------------------------------------------ start

    def ensure(self, *, apiserver_port: int, fresh: bool, report: Callable[[str, str, float], None]) -> None:
        """Reuse what runs, and restart only the components that died (containerd, the kubelet,
        kube-proxy): the containers keep running under their shims. A `fresh` control plane (it
        was started anew) or no previous node: start the whole node from a clean host."""
        if not fresh and self.layout.state_file.exists() and self.layout.containerd_config.exists():
            self.binaries, self.images = preflight()
            install_guard(apiserver_port=apiserver_port)
            dead = [c for c in COMPONENTS if not self.running(c)]
            for component in dead:
                began = time.monotonic()
                self.restart(component)
                report(component, "restarted; the containers kept running", time.monotonic() - began)
            if self.healthy():
                if not dead:
                    report("real node", f"{self.node_name} already running and Ready", 0.0)
                return
        self.start(apiserver_port=apiserver_port, report=report)

    def claim_machine(self) -> None:
        """Refuse to start beside another root's real node that still runs; else record ours."""
        with contextlib.suppress(OSError):
            other = Path(OWNER_FILE.read_text().strip())
            if other != self.layout.root:
                state = NodeState.load(NodeLayout(other).state_file)
                if state is not None and any(r.is_running() for r in state.processes.values()):
                    platform_root = other.parent
                    raise NodeError(
                        f"a real node already runs on this machine (root {platform_root}); there can be "
                        f"only one: stop it with `modelcycle local down --root {platform_root}`"
                    )
        OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
        OWNER_FILE.write_text(str(self.layout.root))

    def start(self, *, apiserver_port: int, report: Callable[[str, str, float], None]) -> None:
        """Clean whatever a killed run left, then containerd, images, kubelet, kube-proxy."""
        self.binaries, self.images = preflight()
        self.claim_machine()
        self.stop_processes()
        began = time.monotonic()
        cleaned = clean_host(self.layout, kube_proxy=self.binaries.get(KUBE_PROXY))
        if any(cleaned.values()):
            report(
                "node cleanup",
                ", ".join(f"{v} {k}" for k, v in cleaned.items() if v),
                time.monotonic() - began,
            )
        began = time.monotonic()
        ensure_node_bridge()
        previous = set_sysctls(SYSCTLS)
        self.state.sysctls = {**previous, **self.state.sysctls}
        install_guard(apiserver_port=apiserver_port)
        self._write_configs()
        self._save()
        report(
            "node network",
            f"node IP {network.NODE_IP} on {network.NODE_BRIDGE}, pods in {network.POD_CIDR}, "
            f"Services in {network.SERVICE_CIDR}",
            time.monotonic() - began,
        )
        began = time.monotonic()
        self.start_containerd()
        report("containerd", f"running (runc; CNI bridge {network.POD_BRIDGE})", time.monotonic() - began)
        began = time.monotonic()
        imported = self.import_images()
        report("images", ", ".join(imported), time.monotonic() - began)
        began = time.monotonic()
        self.start_kubelet()
        report("kubelet", f"Node {self.node_name} Ready", time.monotonic() - began)
        began = time.monotonic()
        self.start_kube_proxy()
        report("kube-proxy", "Services routed (iptables)", time.monotonic() - began)

    def _write_configs(self) -> None:
        layout = self.layout
        for directory in (
            layout.containerd,
            layout.cni_conf_dir,
            layout.cni_ipam_dir,
            layout.kubelet_root,
            layout.kube_proxy,
            layout.pki,
            self.logs,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        assert self.images is not None
        layout.containerd_config.write_text(containerd_config(layout, pause_image=self.images.pause))
        (layout.cni_conf_dir / "10-modelcycle.conflist").write_text(
            json.dumps(cni_conflist(layout), indent=2)
        )
        ca = cp.load_certificate(self.controlplane, "ca")
        # The identities the Node authorizer and the bootstrap RBAC (system:node-proxier) expect.
        identities: dict[str, tuple[str, tuple[str, ...]]] = {
            KUBELET: (f"system:node:{self.node_name}", ("system:nodes",)),
            KUBE_PROXY: ("system:kube-proxy", ()),
        }
        for component, (user, groups) in identities.items():
            client = cp.issue_certificate(ca, common_name=user, organizations=groups, client=True)
            document = cp.kubeconfig_document(
                server=self.server, ca_pem=ca.cert_pem, client=client, user=user
            )
            cp.write_private(layout.kubeconfig(component), yaml.safe_dump(document).encode())
        serving = cp.issue_certificate(
            ca,
            common_name=self.node_name,
            dns_names=(self.node_name,),
            ip_addresses=(network.NODE_IP,),
            server=True,
        )
        (layout.pki / "kubelet-serving.crt").write_bytes(serving.cert_pem)
        cp.write_private(layout.pki / "kubelet-serving.key", serving.key_pem)
        layout.config(KUBELET).write_text(
            yaml.safe_dump(kubelet_config(layout, client_ca=self.controlplane.cert("ca")))
        )
        layout.config(KUBE_PROXY).write_text(
            yaml.safe_dump(kube_proxy_config(layout, node_name=self.node_name))
        )

    def _launch(self, component: str, argv: list[str], ready: Callable[[], bool], what: str) -> None:
        log = self.logs / f"{component}.log"
        popen, record = launch(component, argv, log=log, detach=True)
        self.popens[component] = popen
        self.state.processes[component] = record
        self._save()

        def check() -> bool:
            if popen.poll() is not None:
                raise NodeError(
                    f"{component} exited with code {popen.returncode}; log {log}:\n{log_tail(log)}"
                )
            return ready()

        wait_until(
            check,
            timeout=self.timeout,
            what=what,
            interval=0.25,
            detail=lambda: f"log {log}:\n{log_tail(log)}",
        )

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", str(self.layout.containerd_socket), "-n", CRI_NAMESPACE, *args]
        return run(argv, check=check, timeout=timeout)

    def start_containerd(self) -> None:
        def answers() -> bool:
            return self.layout.containerd_socket.exists() and self.ctr_ok()

        self._launch(
            CONTAINERD, containerd_argv(self.binaries["containerd"], self.layout), answers, "containerd"
        )

    def ctr_ok(self) -> bool:
        try:
            return (
                run(
                    ["ctr", "--address", str(self.layout.containerd_socket), "version"],
                    check=False,
                    timeout=10,
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def import_images(self) -> list[str]:
        assert self.images is not None
        present = set(self.ctr("images", "ls", "-q").stdout.split())
        done = []
        for name, ref in self.images.refs().items():
            if ref not in present:
                base = ref.rsplit(":", 1)[0]
                self.ctr(
                    "images",
                    "import",
                    "--base-name",
                    base,
                    "--no-unpack=false",
                    str(self.images.archives[name]),
                )
                done.append(f"{ref} (imported)")
            else:
                done.append(ref)
        self.state.images = self.images.refs()
        self._save()
        return done

    def start_kubelet(self) -> None:
        argv = kubelet_argv(self.binaries[KUBELET], self.layout, node_name=self.node_name)
        self._launch(KUBELET, argv, self.node_ready, f"Node {self.node_name} to be Ready")

    def start_kube_proxy(self) -> None:
        self._launch(
            KUBE_PROXY,
            kube_proxy_argv(self.binaries[KUBE_PROXY], self.layout),
            self._proxy_healthy,
            "kube-proxy's /healthz",
        )

    # ------------------------------------------------------------------ drills

    def kill(self, component: str) -> None:
        """SIGKILL one component (a crash): its containers keep running under their shims."""
        record = self.state.processes.pop(component, None)
        if record is not None:
            stop_process(record, timeout=0, kill=True)
        popen = self.popens.pop(component, None)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)
        self._save()

    def restart(self, component: str) -> None:
        self.kill(component)
        {CONTAINERD: self.start_containerd, KUBELET: self.start_kubelet, KUBE_PROXY: self.start_kube_proxy}[
            component
        ]()

    # ------------------------------------------------------------------ stop

    def stop_processes(self) -> None:
        for component in reversed(COMPONENTS):
            record = self.state.processes.pop(component, None)
            if record is not None:
                stop_process(record, timeout=20)
            popen = self.popens.pop(component, None)
            if popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=5)

    def remove_containers(self) -> int:
        """Every container and sandbox containerd still runs (after the kubelet stopped)."""
        if not self.running(CONTAINERD):
            return 0
        tasks = [
            line.split()[0]
            for line in self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
            if line.split()
        ]
        for task in tasks:
            self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, check=False)
        for task in tasks:
            self.ctr("tasks", "delete", "-f", task, check=False)
        containers = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        if containers:
            self.ctr("containers", "delete", *containers, check=False)
        return len(tasks)

    def stop(self) -> dict[str, int]:
        """Stop kube-proxy and the kubelet, remove the containers, stop containerd, clean the host."""
        kube_proxy = self.binaries.get(KUBE_PROXY) or _find(KUBE_PROXY)
        for component in (KUBE_PROXY, KUBELET):
            record = self.state.processes.pop(component, None)
            if record is not None:
                stop_process(record, timeout=20)
        removed = self.remove_containers()
        self.stop_processes()
        report = clean_host(self.layout, kube_proxy=kube_proxy, restore_sysctls=self.state.sysctls)
        report["containers"] = removed
        self.state = NodeState({}, {}, {})
        self.layout.state_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if Path(OWNER_FILE.read_text().strip()) == self.layout.root:
                OWNER_FILE.unlink()
                OWNER_FILE.parent.rmdir()
        return report


def _find(name: str) -> Path | None:
    try:
        return cp.find_binary(name)
    except UserError:
        return None


def leftovers(root: Path) -> dict[str, list[str]]:
    """What of ours is still on this machine (for `status` and the tests)."""
    found: dict[str, list[str]] = {
        "mounts": mounts_under(root),
        "links": [b for b in (network.NODE_BRIDGE, network.POD_BRIDGE) if link_exists(b)],
        "processes": [str(p) for p in processes_using(root)],
        "cgroups": [str(p) for p in our_cgroups()],
    }
    chains = (
        run(["iptables", "-w", "-S"], check=False).stdout
        + run(["iptables", "-w", "-t", "nat", "-S"], check=False).stdout
    )
    found["iptables"] = sorted(
        {
            m
            for m in re.findall(r"^-N (\S+)", chains, re.M)
            if m.startswith(("KUBE-", network.IPTABLES_CHAIN_PREFIX))
        }
    )
    return {k: v for k, v in found.items() if v}
