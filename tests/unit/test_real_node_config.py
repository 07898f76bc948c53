"""The real node's configuration (kubenode.py): what containerd, CNI, the kubelet, kube-proxy and
our iptables guard are told, checked without starting any of them."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from modelcycle.local import controlplane as cp
from modelcycle.local import incluster, kubenode, network

LAYOUT = kubenode.NodeLayout(Path("/var/tmp/mc/node"), Path("/var/cache/mc/containerd"))
OURS = ipaddress.ip_network(network.OUR_RANGE)


def test_every_address_of_the_plan_lies_in_our_range() -> None:
    for address in (network.NODE_IP, network.KUBERNETES_SERVICE_IP):
        assert ipaddress.ip_address(address) in OURS
    for cidr in (network.POD_CIDR, network.SERVICE_CIDR):
        assert ipaddress.ip_network(cidr).subnet_of(OURS)  # type: ignore[arg-type]
    assert not ipaddress.ip_network(network.POD_CIDR).overlaps(ipaddress.ip_network(network.SERVICE_CIDR))
    assert cp.SERVICE_CLUSTER_IP_RANGE == network.SERVICE_CIDR


def test_containerd_config_carries_the_settings_this_machine_needs() -> None:
    config = tomllib.loads(kubenode.containerd_config(LAYOUT, pause_image="localhost/modelcycle/pause:abc"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert config["version"] == 2
    assert config["root"] == str(LAYOUT.store)  # images: one store for every platform root
    assert config["state"].startswith(str(LAYOUT.root))
    assert config["grpc"]["address"] == str(LAYOUT.containerd_socket)
    assert cri["sandbox_image"] == "localhost/modelcycle/pause:abc"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(LAYOUT.cni_conf_dir)


def test_pods_get_addresses_and_routes_only_in_our_range() -> None:
    bridge = kubenode.cni_conflist(LAYOUT)["plugins"][0]
    assert bridge["bridge"] == network.POD_BRIDGE != network.NODE_BRIDGE
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": network.POD_CIDR}]]
    assert [r["dst"] for r in bridge["ipam"]["routes"]] == [network.OUR_RANGE]  # no default route
    assert bridge["ipam"]["dataDir"].startswith(str(LAYOUT.root))


def test_kubelet_authenticates_clients_by_certificate_and_serves_only_on_the_node_ip() -> None:
    config = kubenode.kubelet_config(LAYOUT, client_ca=Path("/ca.crt"))
    assert config["address"] == network.NODE_IP
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["x509"]["clientCAFile"] == "/ca.crt"
    assert config["authorization"]["mode"] == "Webhook"
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"
    assert config["resolvConf"] == ""
    assert config["imageGCHighThresholdPercent"] == 100  # images cannot be pulled again


def test_kube_proxy_opens_node_ports_only_on_the_node_ip_and_leaves_conntrack_sysctls_alone() -> None:
    config = kubenode.kube_proxy_config(LAYOUT, node_name="n1")
    assert config["mode"] == "iptables"
    assert config["nodePortAddresses"] == [f"{network.NODE_IP}/32"]
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["hostnameOverride"] == "n1"
    assert config["healthzBindAddress"].startswith(cp.LOOPBACK)


@pytest.mark.parametrize(
    ("port", "input_rules"),
    [(None, 0), (6443, 3)],
    ids=["before-the-api-server-port-is-known", "api-server-guarded"],
)
def test_guard_confines_pod_traffic_to_our_range(port: int | None, input_rules: int) -> None:
    rules = kubenode.guard_rules(apiserver_port=port)
    assert ["-s", network.OUR_RANGE, "!", "-d", network.OUR_RANGE, "-j", "DROP"] in rules["FORWARD"]
    assert ["!", "-s", network.OUR_RANGE, "-d", network.OUR_RANGE, "-j", "DROP"] in rules["FORWARD"]
    assert len(rules["INPUT"]) == input_rules
    if port is not None:
        assert rules["INPUT"][-1] == ["-p", "tcp", "--dport", str(port), "-j", "DROP"]


def test_api_server_advertises_the_node_ip_only_for_the_real_node(tmp_path: Path) -> None:
    layout = cp.StateLayout(tmp_path)
    ports = cp.Ports(1, 2, 3, 4, 5)
    loopback = cp.apiserver_args(layout, ports)
    node = cp.apiserver_args(layout, ports, node_address=network.NODE_IP)
    assert f"--advertise-address={cp.LOOPBACK}" in loopback and "--endpoint-reconciler-type=none" in loopback
    assert f"--advertise-address={network.NODE_IP}" in node and "--endpoint-reconciler-type=none" not in node
    assert network.NODE_IP in cp.APISERVER_IP_ADDRESSES


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "no images built yet"),
        ("PAUSE_IMAGE=p:1\n", "names no"),
        (
            "PAUSE_IMAGE=p:1\nPAUSE_ARCHIVE=/nope/p.tar\nOPERATOR_IMAGE=o:1\nOPERATOR_ARCHIVE=/nope/o.tar\n"
            "WORKLOAD_IMAGE=w:1\nWORKLOAD_ARCHIVE=/nope/w.tar\n",
            "image archives missing",
        ),
    ],
    ids=["never-built", "incomplete-env-file", "archives-deleted"],
)
def test_missing_images_name_the_setup_command(tmp_path: Path, content: str | None, complaint: str) -> None:
    env = tmp_path / "images.env"
    if content is not None:
        env.write_text(content)
    with pytest.raises(kubenode.NodeError, match=complaint) as raised:
        kubenode.Images.load(env)
    assert "make setup" in str(raised.value)


def test_chart_values_use_our_images_without_pulling_and_the_platform_claim() -> None:
    values = incluster.operator_values(
        operator_image="localhost/modelcycle/operator:aa",
        workload_image="localhost/modelcycle/workload:bb",
        workload_namespaces=["demo"],
        artifact_claim="claim",
        extra_args=["--resync-seconds", "10"],
    )
    assert values["operator"]["image"] == {
        "repository": "localhost/modelcycle/operator",
        "tag": "aa",
        "pullPolicy": "Never",
    }
    assert values["workload"]["image"] == {"repository": "localhost/modelcycle/workload", "tag": "bb"}
    assert values["artifacts"]["pvc"] == {"create": False, "claimName": "claim"}
    assert values["operator"]["monitorStatsAccess"] == "proxy"
    assert values["operator"]["extraArgs"] == ["--resync-seconds", "10"]


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        ("not-root", "root"),
        ("no-containerd", "containerd"),
        ("no-runc", "runc"),
    ],
    ids=["without-root", "without-containerd", "without-runc"],
)
def test_preflight_names_every_missing_piece_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch, break_it: str, named: str
) -> None:
    if break_it == "not-root":
        monkeypatch.setattr(kubenode.os, "geteuid", lambda: 1000)
    else:
        tool = named
        real_which = kubenode.shutil.which
        monkeypatch.setattr(kubenode.shutil, "which", lambda name: None if name == tool else real_which(name))
    with pytest.raises(kubenode.NodeError) as refused:
        kubenode.preflight()
    message = str(refused.value)
    assert message.startswith("the real node cannot start")
    assert named in message
    assert "root" in message if break_it == "not-root" else "make setup" in message
