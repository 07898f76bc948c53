"""The pure parts of the local control plane: binary lookup, PKI, kubeconfigs, arguments. No processes."""

from __future__ import annotations

import base64
import ipaddress
import re
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelcycle.cli import main as cli_main
from modelcycle.errors import UserError
from modelcycle.local import controlplane as cp

REPO_ROOT = Path(__file__).resolve().parents[2]
PORTS = cp.Ports(etcd_client=2001, etcd_peer=2002, apiserver=2003, controller_manager=2004, scheduler=2005)


def make_executables(directory: Path, *names: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> cp.StateLayout:
    state = cp.StateLayout(tmp_path_factory.mktemp("state"))
    cp.ensure_pki(state)
    return state


def flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args)


# --------------------------------------------------------------------------- binary lookup


def test_version_constant_matches_the_build_script() -> None:
    script = (REPO_ROOT / "tools" / "controlplane" / "build.sh").read_text()
    match = re.search(r'K8S_VERSION="\$\{K8S_VERSION:-([0-9.]+)\}"', script)

    assert match is not None
    assert match.group(1) == cp.K8S_VERSION


def test_default_bin_dir_is_the_versioned_cache_the_build_script_fills(tmp_path: Path) -> None:
    assert cp.default_bin_dir(environ={"MODELCYCLE_CACHE": str(tmp_path)}) == tmp_path / "bin" / "v1.36.3"


def test_explicit_bin_dir_wins_over_every_environment_variable(tmp_path: Path) -> None:
    names = cp.CONTROL_PLANE_BINARIES
    explicit = make_executables(tmp_path / "explicit", *names)
    env = {
        "MODELCYCLE_BIN_DIR": str(make_executables(tmp_path / "env", *names)),
        "KUBEBUILDER_ASSETS": str(make_executables(tmp_path / "envtest", *names)),
        "MODELCYCLE_CACHE": str(tmp_path / "cache"),
    }

    found = cp.find_binaries(bin_dir=explicit, environ=env)

    assert found == {n: explicit / n for n in names}


def test_modelcycle_bin_dir_wins_over_kubebuilder_assets(tmp_path: Path) -> None:
    env = {
        "MODELCYCLE_BIN_DIR": str(make_executables(tmp_path / "env", "etcd")),
        "KUBEBUILDER_ASSETS": str(make_executables(tmp_path / "envtest", "etcd")),
        "MODELCYCLE_CACHE": str(tmp_path / "cache"),
    }

    assert cp.find_binaries(["etcd"], environ=env)["etcd"] == tmp_path / "env" / "etcd"


def test_kubebuilder_assets_supply_envtest_binaries_and_the_cache_supplies_the_rest(tmp_path: Path) -> None:
    envtest = make_executables(tmp_path / "envtest", "etcd", "kube-apiserver", "kubectl")
    # Even if an envtest dir held a scheduler, it is not an envtest binary, so the cache is used.
    make_executables(envtest, "kube-scheduler")
    cache_bin = make_executables(
        tmp_path / "cache" / "bin" / f"v{cp.K8S_VERSION}", *cp.CONTROL_PLANE_BINARIES
    )
    env = {"KUBEBUILDER_ASSETS": str(envtest), "MODELCYCLE_CACHE": str(tmp_path / "cache")}

    found = cp.find_binaries(environ=env)

    assert found["etcd"] == envtest / "etcd"
    assert found["kube-apiserver"] == envtest / "kube-apiserver"
    assert found["kube-controller-manager"] == cache_bin / "kube-controller-manager"
    assert found["kube-scheduler"] == cache_bin / "kube-scheduler"


def test_a_file_that_is_not_executable_is_skipped(tmp_path: Path) -> None:
    not_executable = tmp_path / "env" / "etcd"
    not_executable.parent.mkdir()
    not_executable.write_text("")
    cache_bin = make_executables(tmp_path / "cache" / "bin" / f"v{cp.K8S_VERSION}", "etcd")
    env = {"MODELCYCLE_BIN_DIR": str(not_executable.parent), "MODELCYCLE_CACHE": str(tmp_path / "cache")}

    assert cp.find_binaries(["etcd"], environ=env)["etcd"] == cache_bin / "etcd"


def test_missing_binaries_raise_a_user_error_that_says_how_to_build_them(tmp_path: Path) -> None:
    make_executables(tmp_path / "cache" / "bin" / f"v{cp.K8S_VERSION}", "etcd")

    with pytest.raises(UserError) as missing:
        cp.find_binaries(environ={"MODELCYCLE_CACHE": str(tmp_path / "cache")})

    message = str(missing.value)
    assert "make setup" in message and "tools/controlplane/build.sh" in message
    assert "kube-apiserver" in message and "kube-scheduler" in message
    assert "etcd (" not in message  # the one that was found is not reported


# --------------------------------------------------------------------------- PKI and kubeconfig


def load_cert(layout: cp.StateLayout, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(layout.cert(name).read_bytes())


def test_apiserver_certificate_names_loopback_the_kubernetes_service_and_the_node_ip(
    layout: cp.StateLayout,
) -> None:
    sans = (
        load_cert(layout, "apiserver").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )

    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("198.19.0.1"),
        ipaddress.ip_address("198.18.0.1"),
    }
    assert {
        "localhost",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    } <= set(sans.get_values_for_type(x509.DNSName))


def test_kubernetes_service_ip_is_the_first_address_of_the_service_range() -> None:
    service_range = ipaddress.ip_network(cp.SERVICE_CLUSTER_IP_RANGE)

    assert ipaddress.ip_address(cp.KUBERNETES_SERVICE_IP) == next(service_range.hosts())


def test_every_certificate_is_signed_by_its_ca(layout: cp.StateLayout) -> None:
    for name, (ca_name, _) in cp._LEAF_CERTIFICATES.items():
        load_cert(layout, name).verify_directly_issued_by(load_cert(layout, ca_name))


def test_etcd_trusts_a_separate_ca_from_the_cluster_clients(layout: cp.StateLayout) -> None:
    assert load_cert(layout, "etcd-ca").subject != load_cert(layout, "ca").subject
    with pytest.raises(ValueError):
        load_cert(layout, "admin").verify_directly_issued_by(load_cert(layout, "etcd-ca"))


def test_admin_certificate_is_a_system_masters_client(layout: cp.StateLayout) -> None:
    admin = load_cert(layout, "admin")
    usages = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_private_keys_are_readable_only_by_their_owner(layout: cp.StateLayout) -> None:
    assert layout.key("ca").stat().st_mode & 0o077 == 0
    assert layout.key(cp.SERVICE_ACCOUNT_KEY).stat().st_mode & 0o077 == 0


def test_existing_pki_is_kept(layout: cp.StateLayout) -> None:
    before = layout.cert("ca").read_bytes()

    assert cp.ensure_pki(layout) is False
    assert layout.cert("ca").read_bytes() == before


def test_admin_kubeconfig_embeds_the_ca_and_the_admin_certificate(
    layout: cp.StateLayout, tmp_path: Path
) -> None:
    path = tmp_path / "admin.kubeconfig"

    cp.write_kubeconfig(
        path=path, server="https://127.0.0.1:2003", layout=layout, client_cert="admin", user="me"
    )

    document = yaml.safe_load(path.read_text())
    cluster = document["clusters"][0]["cluster"]
    user = document["users"][0]["user"]
    assert cluster["server"] == "https://127.0.0.1:2003"
    assert base64.b64decode(cluster["certificate-authority-data"]) == layout.cert("ca").read_bytes()
    assert base64.b64decode(user["client-certificate-data"]) == layout.cert("admin").read_bytes()
    assert document["current-context"] == document["contexts"][0]["name"]
    assert path.stat().st_mode & 0o077 == 0


# --------------------------------------------------------------------------- arguments


def test_apiserver_listens_on_loopback_with_rbac_and_pod_security(layout: cp.StateLayout) -> None:
    args = flags(cp.apiserver_args(layout, PORTS))

    assert args["bind-address"] == args["advertise-address"] == "127.0.0.1"
    assert args["secure-port"] == "2003"
    assert args["etcd-servers"] == "https://127.0.0.1:2001"
    assert args["authorization-mode"] == "Node,RBAC"
    assert {"PodSecurity", "ServiceAccount"} <= set(args["enable-admission-plugins"].split(","))
    assert args["service-cluster-ip-range"] == "198.19.0.0/24"
    assert args["service-account-issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert Path(args["service-account-key-file"]).is_file()
    assert Path(args["service-account-signing-key-file"]).is_file()


def test_apiserver_audits_every_request_at_metadata_level_as_json_lines(layout: cp.StateLayout) -> None:
    cp.write_audit_policy(layout)
    args = flags(cp.apiserver_args(layout, PORTS))

    assert args["audit-policy-file"] == str(layout.audit_policy)
    assert args["audit-log-path"] == str(layout.logs / "audit.log") == str(layout.audit_log)
    assert args["audit-log-format"] == "json"
    assert int(args["audit-log-maxsize"]) > 0 and int(args["audit-log-maxbackup"]) > 0
    policy = yaml.safe_load(layout.audit_policy.read_text())
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"
    assert policy["omitStages"] == ["RequestReceived"]
    # One catch-all rule: nothing (in particular no ServiceAccount) is left out or logged at None.
    assert policy["rules"] == [{"level": "Metadata"}]


def test_controller_manager_runs_the_controllers_the_operator_relies_on(layout: cp.StateLayout) -> None:
    args = flags(cp.controller_manager_args(layout, PORTS))

    controllers = set(args["controllers"].split(","))
    assert {
        "job-controller",
        "deployment-controller",
        "replicaset-controller",
        "garbage-collector-controller",
        "namespace-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "endpointslice-controller",
        "persistentvolume-binder-controller",
        "horizontal-pod-autoscaler-controller",
        "ttl-after-finished-controller",
    } <= controllers
    assert args["use-service-account-credentials"] == "true"
    assert args["root-ca-file"] == str(layout.cert("ca"))
    assert args["service-account-private-key-file"] == str(layout.key(cp.SERVICE_ACCOUNT_KEY))
    assert args["kubeconfig"] == str(layout.kubeconfig("kube-controller-manager"))


def test_every_component_binds_only_to_loopback(layout: cp.StateLayout) -> None:
    for component, build in cp.ARGUMENT_BUILDERS.items():
        urls_and_addresses = [
            value
            for name, value in flags(build(layout, PORTS)).items()
            if name.endswith(("address", "-urls", "servers")) and name != "kubelet-preferred-address-types"
        ]
        assert urls_and_addresses, component
        for value in urls_and_addresses:
            assert "127.0.0.1" in value, (component, value)


def test_every_component_has_its_own_port() -> None:
    ports = cp.pick_ports()

    assert len(set(vars(ports).values())) == 5


def test_state_record_survives_a_json_round_trip(tmp_path: Path) -> None:
    state = cp.ControlPlaneState(
        version=cp.K8S_VERSION,
        state_dir=str(tmp_path),
        server="https://127.0.0.1:2003",
        kubeconfig=str(tmp_path / "admin.kubeconfig"),
        ports=vars(PORTS),
        processes=[cp.ProcessRecord("etcd", 123, "/bin/etcd", 42)],
        detached=True,
        owner_pid=1,
        started_at=0.0,
    )
    cp.StateLayout(tmp_path).state_file.write_text(state.to_json())

    assert cp.read_state(tmp_path) == state


def test_a_recorded_process_that_no_longer_exists_is_not_running() -> None:
    gone = cp.ProcessRecord("etcd", 2**22 + 1, "/bin/etcd", None)  # above the kernel's pid_max

    assert not gone.is_running()


# --------------------------------------------------------------------------- CLI


def test_controlplane_status_without_a_control_plane_says_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["local", "controlplane", "status", "--state-dir", str(tmp_path)])

    assert code == 3
    assert "not running" in capsys.readouterr().out


def test_controlplane_up_without_binaries_fails_with_a_one_line_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELCYCLE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("MODELCYCLE_BIN_DIR", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)

    code = cli_main(["local", "controlplane", "up", "--state-dir", str(tmp_path / "state")])

    assert code == 2
    assert "make setup" in capsys.readouterr().err
