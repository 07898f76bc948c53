"""Test hosts of our own: a network namespace joined to this one by a veth pair.

The API server's pod proxy refuses loopback pod IPs ("address not allowed"), and test traffic may
only go to loopback or to addresses in network namespaces the tests make themselves. So a pod
whose IP the proxy must dial gets an address inside such a namespace, and its process runs there
(`ip netns exec`). The namespace and its veth pair are deleted when the test process exits.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess

# RFC 2544 benchmarking range: used only inside the namespace we create, never routed elsewhere.
_SUBNET_PREFIX = "198.18"
_NAME_PREFIX = "mcpods"


class PodNetwork:
    """A network namespace with `size` addresses the root namespace reaches over a veth pair."""

    def __init__(self, *, size: int = 8, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        tag = pid % 100000
        self.name = f"{_NAME_PREFIX}{pid}"
        self.host_link = f"mch{tag}"
        self.pod_link = f"mcp{tag}"
        self.third_octet = tag % 250 + 1
        self.addresses = [f"{_SUBNET_PREFIX}.{self.third_octet}.{i}" for i in range(10, 10 + size)]

    def _ip(self, *args: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", self.name] if inside else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, timeout=10)

    def create(self) -> None:
        self.delete()
        subnet = f"{_SUBNET_PREFIX}.{self.third_octet}"
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.pod_link)
        self._ip("link", "set", self.pod_link, "netns", self.name)
        self._ip("addr", "add", f"{subnet}.1/24", "dev", self.host_link)
        self._ip("link", "set", self.host_link, "up")
        for address in self.addresses:
            self._ip("addr", "add", f"{address}/24", "dev", self.pod_link, inside=True)
        self._ip("link", "set", self.pod_link, "up", inside=True)
        self._ip("link", "set", "lo", "up", inside=True)

    def delete(self) -> None:
        for args in (["netns", "delete", self.name], ["link", "delete", self.host_link]):
            subprocess.run(["ip", *args], capture_output=True, timeout=10, check=False)

    def exec_prefix(self, address: str) -> list[str]:
        """Prefix that runs a command inside the namespace when `address` is one of ours."""
        return ["ip", "netns", "exec", self.name] if address in self.addresses else []


_shared: PodNetwork | None = None
_unavailable = False


def shared() -> PodNetwork | None:
    """The test process's pod network, made on first use; None where it cannot be made (no root)."""
    global _shared, _unavailable
    if _shared is None and not _unavailable:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            _unavailable = True
            return None
        _remove_stale()
        network = PodNetwork()
        try:
            network.create()
        except (subprocess.CalledProcessError, OSError):
            network.delete()
            _unavailable = True
            return None
        atexit.register(network.delete)
        _shared = network
    return _shared


def _remove_stale() -> None:
    """Delete namespaces left by test processes that died without cleaning up (SIGKILL): their
    host-side routes would shadow a subnet this process may pick."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
    for name in re.findall(rf"^{_NAME_PREFIX}(\d+)", listing.stdout, re.MULTILINE):
        if not os.path.exists(f"/proc/{name}"):
            PodNetwork(pid=int(name)).delete()


def exec_prefix(address: str) -> list[str]:
    return _shared.exec_prefix(address) if _shared is not None else []
