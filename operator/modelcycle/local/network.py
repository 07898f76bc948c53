"""The address plan of the real local node: every address of ours lies in 198.18.0.0/15.

198.18.0.0/15 is the benchmarking range (RFC 2544): nothing on a real network uses it, so pods
and Services here never shadow an address this machine needs. There is one real node per machine
(kube-proxy owns the host's KUBE-* iptables chains, the kubelet its `kubepods` cgroups), so the
plan is fixed.
"""

from __future__ import annotations

import ipaddress

OUR_RANGE = "198.18.0.0/15"
NODE_BRIDGE = "mcnode0"
"""A bridge with no ports that carries the node IP (a node IP cannot be loopback, and this kernel
has no dummy links)."""
NODE_IP = "198.18.0.1"
POD_BRIDGE = "mcpods0"
"""The CNI `bridge` plugin's bridge; its gateway address is the first of POD_CIDR."""
POD_CIDR = "198.18.1.0/24"
SERVICE_CIDR = "198.19.0.0/24"
KUBERNETES_SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
IPTABLES_CHAIN_PREFIX = "MODELCYCLE-"
