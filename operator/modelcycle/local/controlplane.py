"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The integration and e2e tests start one per session; `modelcycle local controlplane up` starts one
that outlives the command. Everything lives in one state directory: a private PKI, the etcd data,
kubeconfigs, a log file per component and a JSON record of the running processes.

No Kubernetes client is imported here: health checks are plain HTTPS, so the CLI stays light.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelcycle.errors import UserError
from modelcycle.local import network, procfs

# Keep in step with K8S_VERSION in tools/controlplane/build.sh (a unit test checks it).
K8S_VERSION = "1.36.3"

ETCD = "etcd"
KUBE_APISERVER = "kube-apiserver"
KUBE_CONTROLLER_MANAGER = "kube-controller-manager"
KUBE_SCHEDULER = "kube-scheduler"
KUBECTL = "kubectl"
HELM = "helm"
# Start order; stop runs in reverse.
CONTROL_PLANE_BINARIES: tuple[str, ...] = (ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER)
# What a controller-runtime envtest asset directory (KUBEBUILDER_ASSETS) holds.
ENVTEST_BINARIES = frozenset({ETCD, KUBE_APISERVER, KUBECTL})

LOOPBACK = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE = network.SERVICE_CIDR
KUBERNETES_SERVICE_IP = network.KUBERNETES_SERVICE_IP
CLUSTER_DOMAIN = "cluster.local"
SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"
CLUSTER_NAME = "modelcycle-local"
ADMIN_USER = "modelcycle-admin"

# Canonical names (k8s.io/kubernetes cmd/kube-controller-manager/names) so a rename fails loudly.
CONTROLLERS: tuple[str, ...] = (
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "disruption-controller",
    "horizontal-pod-autoscaler-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "resourcequota-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "service-cidr-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "ephemeral-volume-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "pod-garbage-collector-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
)
# Added to the default-on plugins; named so that the ones we rely on stay on whatever the default.
ADMISSION_PLUGINS: tuple[str, ...] = ("NodeRestriction", "PodSecurity", "ServiceAccount")

STATE_FILE_NAME = "controlplane.json"
# Every request at Metadata level (who, verb, resource, response code; no bodies), one JSON line
# each, so a test can check which permissions a ServiceAccount used and whether any was refused.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
AUDIT_LOG_MAX_SIZE_MB = 100
AUDIT_LOG_MAX_BACKUPS = 3
CERT_VALIDITY = datetime.timedelta(days=3650)


class ControlPlaneError(UserError):
    """The control plane could not start or stop; the message names the log to read."""


# --------------------------------------------------------------------------- locations


def cache_dir(*, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("MODELCYCLE_CACHE") or Path.home() / ".cache" / "modelcycle")


def default_bin_dir(*, environ: Mapping[str, str] | None = None) -> Path:
    """Where tools/controlplane/build.sh puts the binaries (its --print-dir)."""
    return cache_dir(environ=environ) / "bin" / f"v{K8S_VERSION}"


def default_state_dir(*, environ: Mapping[str, str] | None = None) -> Path:
    return cache_dir(environ=environ) / "local" / "controlplane"


def binary_search_path(
    name: str, *, bin_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """The directories searched for `name`, first match wins.

    An explicit directory, then $MODELCYCLE_BIN_DIR, then $KUBEBUILDER_ASSETS (which only holds
    etcd, kube-apiserver and kubectl), then the cache that build.sh fills.
    """
    env = os.environ if environ is None else environ
    dirs: list[Path] = []
    if bin_dir is not None:
        dirs.append(Path(bin_dir))
    if env.get("MODELCYCLE_BIN_DIR"):
        dirs.append(Path(env["MODELCYCLE_BIN_DIR"]))
    if env.get("KUBEBUILDER_ASSETS") and name in ENVTEST_BINARIES:
        dirs.append(Path(env["KUBEBUILDER_ASSETS"]))
    dirs.append(default_bin_dir(environ=env))
    return dirs


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binaries(
    names: Iterable[str] = CONTROL_PLANE_BINARIES,
    *,
    explicit: Mapping[str, Path] | None = None,
    bin_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Resolve each binary to an executable path, or raise UserError naming what is missing."""
    found: dict[str, Path] = {}
    missing: dict[str, list[Path]] = {}
    for name in names:
        if explicit and name in explicit:
            candidates = [Path(explicit[name])]
        else:
            candidates = [d / name for d in binary_search_path(name, bin_dir=bin_dir, environ=environ)]
        hit = next((c for c in candidates if _is_executable(c)), None)
        if hit is None:
            missing[name] = candidates
        else:
            found[name] = hit
    if missing:
        looked = "; ".join(f"{n} (looked at {', '.join(str(c) for c in cs)})" for n, cs in missing.items())
        raise UserError(
            f"Kubernetes binaries not found: {looked}. Build them with `make setup` "
            f"(or `bash tools/controlplane/build.sh`), or point MODELCYCLE_BIN_DIR or "
            f"KUBEBUILDER_ASSETS at a directory that has them."
        )
    return found


def find_binary(name: str, *, environ: Mapping[str, str] | None = None) -> Path:
    return find_binaries([name], environ=environ)[name]


# --------------------------------------------------------------------------- layout and ports


@dataclass(frozen=True)
class StateLayout:
    """Where everything of one control plane lives."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE_NAME

    @property
    def audit_policy(self) -> Path:
        return self.root / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    def kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def cert(self, name: str) -> Path:
        return self.pki / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.pki / f"{name}.key"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


def pick_free_ports(count: int) -> list[int]:
    """Ports free on loopback right now: all sockets are held open together so none repeats."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def pick_ports() -> Ports:
    return Ports(*pick_free_ports(5))


def apiserver_url(ports: Ports) -> str:
    return f"https://{LOOPBACK}:{ports.apiserver}"


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Certificate:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    now: datetime.datetime | None = None,
) -> x509.CertificateBuilder:
    """What every certificate here starts from: names, public key, a random serial, and
    CERT_VALIDITY from five minutes ago (slack for a clock a little behind)."""
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CERT_VALIDITY)
    )


def _with_usage(builder: x509.CertificateBuilder, *, ca: bool) -> x509.CertificateBuilder:
    """Only a CA's key may sign certificates and CRLs; every key signs its TLS handshakes."""
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True).add_extension(
        usage, critical=True
    )


def new_ca(common_name: str, *, now: datetime.datetime | None = None) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _with_usage(certificate_builder(name, name, key, now=now), ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Certificate(cert, key)


def issue_certificate(
    ca: Certificate,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    now: datetime.datetime | None = None,
) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    builder = (
        _with_usage(
            certificate_builder(_name(common_name, organizations), ca.cert.subject, key, now=now), ca=False
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if dns_names or ip_addresses:
        alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return Certificate(builder.sign(ca.key, hashes.SHA256()), key)


APISERVER_DNS_NAMES: tuple[str, ...] = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
)
# The node IP too: pods of the real node reach the API server there (through the `kubernetes` Service).
APISERVER_IP_ADDRESSES: tuple[str, ...] = (LOOPBACK, KUBERNETES_SERVICE_IP, network.NODE_IP)

# name -> (issuing CA, how to issue). CAs: "ca" (cluster), "etcd-ca", "front-proxy-ca".
_LEAF_CERTIFICATES: dict[str, tuple[str, dict[str, Any]]] = {
    "apiserver": (
        "ca",
        {
            "common_name": "kube-apiserver",
            "dns_names": APISERVER_DNS_NAMES,
            "ip_addresses": APISERVER_IP_ADDRESSES,
            "server": True,
        },
    ),
    # kube-controller-manager and kube-scheduler serve /healthz with this, so probes can verify it.
    "loopback-serving": (
        "ca",
        {
            "common_name": "loopback-serving",
            "dns_names": ("localhost",),
            "ip_addresses": (LOOPBACK,),
            "server": True,
        },
    ),
    "admin": ("ca", {"common_name": ADMIN_USER, "organizations": ("system:masters",), "client": True}),
    # The identities kubeadm uses: the bootstrap RBAC policy already grants them what they need.
    KUBE_CONTROLLER_MANAGER: ("ca", {"common_name": "system:kube-controller-manager", "client": True}),
    KUBE_SCHEDULER: ("ca", {"common_name": "system:kube-scheduler", "client": True}),
    "apiserver-kubelet-client": (
        "ca",
        {
            "common_name": "kube-apiserver-kubelet-client",
            "organizations": ("system:masters",),
            "client": True,
        },
    ),
    # etcd has its own CA so that no cluster client certificate opens the datastore.
    "etcd-server": (
        "etcd-ca",
        {
            "common_name": "etcd",
            "dns_names": ("localhost",),
            "ip_addresses": (LOOPBACK,),
            "server": True,
            "client": True,
        },
    ),
    "apiserver-etcd-client": ("etcd-ca", {"common_name": "kube-apiserver-etcd-client", "client": True}),
    # For aggregated API servers (metrics-server and the like).
    "front-proxy-client": ("front-proxy-ca", {"common_name": "front-proxy-client", "client": True}),
}
_CAS = ("ca", "etcd-ca", "front-proxy-ca")
SERVICE_ACCOUNT_KEY = "sa"


def pki_files(layout: StateLayout) -> list[Path]:
    names = [*_CAS, *_LEAF_CERTIFICATES]
    files = [p for n in names for p in (layout.cert(n), layout.key(n))]
    return [*files, layout.key(SERVICE_ACCOUNT_KEY), layout.pki / f"{SERVICE_ACCOUNT_KEY}.pub"]


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_certificate(layout: StateLayout, name: str) -> Certificate:
    cert = x509.load_pem_x509_certificate(layout.cert(name).read_bytes())
    key = serialization.load_pem_private_key(layout.key(name).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ControlPlaneError(f"{layout.key(name)} is not an EC key; delete {layout.pki} to regenerate")
    return Certificate(cert, key)


def ensure_pki(layout: StateLayout) -> bool:
    """Create the CAs, certificates and service-account key unless all exist. True if created."""
    if all(p.is_file() for p in pki_files(layout)):
        return False
    layout.pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    cas = {name: new_ca(f"modelcycle-{name}") for name in _CAS}
    issued = {name: issue_certificate(cas[ca], **spec) for name, (ca, spec) in _LEAF_CERTIFICATES.items()}
    for name, certificate in {**cas, **issued}.items():
        layout.cert(name).write_bytes(certificate.cert_pem)
        write_private(layout.key(name), certificate.key_pem)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    write_private(
        layout.key(SERVICE_ACCOUNT_KEY),
        sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    (layout.pki / f"{SERVICE_ACCOUNT_KEY}.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return True


# --------------------------------------------------------------------------- kubeconfig


def kubeconfig_document(*, server: str, ca_pem: bytes, client: Certificate, user: str) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert_pem),
                    "client-key-data": b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }


def write_audit_policy(layout: StateLayout) -> None:
    layout.audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))


def write_kubeconfig(*, path: Path, server: str, layout: StateLayout, client_cert: str, user: str) -> None:
    document = kubeconfig_document(
        server=server,
        ca_pem=layout.cert("ca").read_bytes(),
        client=load_certificate(layout, client_cert),
        user=user,
    )
    write_private(path, yaml.safe_dump(document, sort_keys=False).encode())


# --------------------------------------------------------------------------- arguments


def etcd_args(layout: StateLayout, ports: Ports) -> list[str]:
    client_url = f"https://{LOOPBACK}:{ports.etcd_client}"
    peer_url = f"https://{LOOPBACK}:{ports.etcd_peer}"
    server_cert, server_key, etcd_ca = (
        layout.cert("etcd-server"),
        layout.key("etcd-server"),
        layout.cert("etcd-ca"),
    )
    return [
        "--name=modelcycle",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=modelcycle={peer_url}",
        "--initial-cluster-state=new",
        f"--cert-file={server_cert}",
        f"--key-file={server_key}",
        f"--trusted-ca-file={etcd_ca}",
        "--client-cert-auth=true",
        f"--peer-cert-file={server_cert}",
        f"--peer-key-file={server_key}",
        f"--peer-trusted-ca-file={etcd_ca}",
        "--peer-client-cert-auth=true",
    ]


def apiserver_args(layout: StateLayout, ports: Ports, *, node_address: str | None = None) -> list[str]:
    """node_address: the IP pods reach the API server at (a real node's pods cannot reach loopback).
    The server then listens on every address and advertises that one in the `kubernetes` Service;
    the node's guard rules drop connections to it that arrive on any other address."""
    pki = layout.pki
    if node_address is None:
        # Endpoints may not hold a loopback address, so the `kubernetes` Service cannot point at us;
        # without this the reconciler logs a rejected write every 10s. No pod here calls the API.
        addresses = [
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            "--endpoint-reconciler-type=none",
        ]
    else:
        addresses = ["--bind-address=0.0.0.0", f"--advertise-address={node_address}"]
    return [
        *addresses,
        f"--secure-port={ports.apiserver}",
        f"--etcd-servers=https://{LOOPBACK}:{ports.etcd_client}",
        f"--etcd-cafile={layout.cert('etcd-ca')}",
        f"--etcd-certfile={layout.cert('apiserver-etcd-client')}",
        f"--etcd-keyfile={layout.key('apiserver-etcd-client')}",
        f"--tls-cert-file={layout.cert('apiserver')}",
        f"--tls-private-key-file={layout.key('apiserver')}",
        f"--client-ca-file={layout.cert('ca')}",
        "--authorization-mode=Node,RBAC",
        f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / f'{SERVICE_ACCOUNT_KEY}.pub'}",
        f"--service-account-signing-key-file={layout.key(SERVICE_ACCOUNT_KEY)}",
        f"--kubelet-client-certificate={layout.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={layout.key('apiserver-kubelet-client')}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--requestheader-client-ca-file={layout.cert('front-proxy-ca')}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={layout.cert('front-proxy-client')}",
        f"--proxy-client-key-file={layout.key('front-proxy-client')}",
        "--profiling=false",
        f"--audit-policy-file={layout.audit_policy}",
        f"--audit-log-path={layout.audit_log}",
        "--audit-log-format=json",
        f"--audit-log-maxsize={AUDIT_LOG_MAX_SIZE_MB}",
        f"--audit-log-maxbackup={AUDIT_LOG_MAX_BACKUPS}",
    ]


def _component_serving_args(layout: StateLayout, component: str, port: int) -> list[str]:
    kubeconfig = layout.kubeconfig(component)
    return [
        f"--bind-address={LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={layout.cert('loopback-serving')}",
        f"--tls-private-key-file={layout.key('loopback-serving')}",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_args(layout: StateLayout, ports: Ports) -> list[str]:
    return [
        *_component_serving_args(layout, KUBE_CONTROLLER_MANAGER, ports.controller_manager),
        f"--client-ca-file={layout.cert('ca')}",
        f"--requestheader-client-ca-file={layout.cert('front-proxy-ca')}",
        f"--root-ca-file={layout.cert('ca')}",
        f"--service-account-private-key-file={layout.key(SERVICE_ACCOUNT_KEY)}",
        f"--cluster-signing-cert-file={layout.cert('ca')}",
        f"--cluster-signing-key-file={layout.key('ca')}",
        "--use-service-account-credentials=true",
        f"--controllers={','.join(CONTROLLERS)}",
    ]


def scheduler_args(layout: StateLayout, ports: Ports) -> list[str]:
    return _component_serving_args(layout, KUBE_SCHEDULER, ports.scheduler)


ARGUMENT_BUILDERS: dict[str, Callable[[StateLayout, Ports], list[str]]] = {
    ETCD: etcd_args,
    KUBE_APISERVER: apiserver_args,
    KUBE_CONTROLLER_MANAGER: controller_manager_args,
    KUBE_SCHEDULER: scheduler_args,
}


def health_url(component: str, ports: Ports) -> str:
    return {
        ETCD: f"https://{LOOPBACK}:{ports.etcd_client}/health",
        KUBE_APISERVER: f"https://{LOOPBACK}:{ports.apiserver}/readyz",
        KUBE_CONTROLLER_MANAGER: f"https://{LOOPBACK}:{ports.controller_manager}/healthz",
        KUBE_SCHEDULER: f"https://{LOOPBACK}:{ports.scheduler}/healthz",
    }[component]


def health_context(component: str, layout: StateLayout) -> ssl.SSLContext:
    """TLS for a probe: verify the serving cert against our CA, present a client cert where asked."""
    context = ssl.create_default_context(
        cafile=str(layout.cert("etcd-ca" if component == ETCD else "ca")),
    )
    if component == ETCD:
        context.load_cert_chain(layout.cert("apiserver-etcd-client"), layout.key("apiserver-etcd-client"))
    elif component == KUBE_APISERVER:
        context.load_cert_chain(layout.cert("admin"), layout.key("admin"))
    return context


def is_healthy(url: str, *, context: ssl.SSLContext, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


# --------------------------------------------------------------------------- process records


@dataclass(frozen=True)
class ProcessRecord:
    """Enough to find a process again from another command, and not mistake a reused pid for it."""

    component: str
    pid: int
    binary: str
    start_ticks: int | None

    def is_running(self) -> bool:
        return process_matches(self.pid, binary=self.binary, start_ticks=self.start_ticks)


@dataclass(frozen=True)
class ControlPlaneState:
    version: str
    state_dir: str
    server: str
    kubeconfig: str
    ports: dict[str, int]
    processes: list[ProcessRecord]
    detached: bool
    owner_pid: int
    started_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ControlPlaneState:
        data = json.loads(text)
        data["processes"] = [ProcessRecord(**p) for p in data["processes"]]
        return cls(**data)


def read_state(state_dir: Path) -> ControlPlaneState | None:
    path = StateLayout(Path(state_dir)).state_file
    try:
        return ControlPlaneState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise ControlPlaneError(f"{path} is unreadable ({exc}); delete it if nothing is running") from exc


def process_matches(pid: int, *, binary: str, start_ticks: int | None) -> bool:
    """True while `pid` is alive and still the process we started (not a zombie, not a reused pid)."""
    fields = procfs.stat_fields(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False  # Linux: no /proc entry means gone
        try:  # no procfs (macOS): best effort
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    if start_ticks is not None and int(fields[19]) != start_ticks:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return True
    return os.path.basename(exe.removesuffix(" (deleted)")) == os.path.basename(binary)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _reap(pid: int) -> None:
    """Collect our own exited child so it stops showing as a zombie; not ours is fine too."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate_processes(records: Sequence[ProcessRecord], *, timeout: float) -> None:
    """SIGTERM each process group (in the given order), SIGKILL whatever outlives `timeout`."""
    for record in records:
        if not record.is_running():
            _reap(record.pid)
            continue
        # Each component leads its own session (start_new_session), so its group id is its pid.
        _signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(record.pid)
            if not record.is_running():
                break
            time.sleep(0.05)
        else:
            _signal_group(record.pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5
            while record.is_running() and time.monotonic() < kill_deadline:
                _reap(record.pid)
                time.sleep(0.05)


# --------------------------------------------------------------------------- cleanup on exit


# Re-entrant: the signal handler runs on the main thread, possibly while it holds the lock.
_live_lock = threading.RLock()
_live: list[ControlPlane] = []
_handlers_installed = False
_previous_handlers: dict[int, Any] = {}
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop_all_live() -> None:
    with _live_lock:
        planes = list(_live)
    for plane in planes:
        plane.stop_from_exit_hook()


def _on_cleanup_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all_live()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        # Die of the same signal, as if we had never caught it.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_exit_hooks() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_stop_all_live)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still covers us
    for signum in _CLEANUP_SIGNALS:
        _previous_handlers[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_cleanup_signal)


def die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGKILL the child when this (thread of the) parent dies.

    The last line of defence when the launcher is SIGKILLed and no Python cleanup runs. SIGKILL,
    not SIGTERM: all components get it at once, and an API server shutting down gracefully while
    etcd vanishes hangs forever; etcd's WAL makes a kill safe. Only from the main thread: the kernel
    ties the signal to the thread that forked, not to the process.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl  # looked up here, not in the child, which must not import or allocate much
    pr_set_pdeathsig = 1
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        if os.getppid() != parent_pid:  # the parent died before the prctl took effect
            os._exit(1)

    return hook


# --------------------------------------------------------------------------- the control plane


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Running:
    component: str
    popen: subprocess.Popen[bytes]
    record: ProcessRecord


@dataclass(eq=False)  # identity equality: instances sit in the registry of live control planes
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on loopback.

    Use as a context manager, or call start() and stop(). With detach=True the processes outlive
    this Python process; stop them with `stop_detached(state_dir)` (the CLI's `down`).
    """

    state_dir: Path = field(default_factory=default_state_dir)
    binaries: Mapping[str, Path] | None = None
    bin_dir: Path | None = None
    detach: bool = False
    start_timeout: float = 120.0
    stop_timeout: float = 10.0
    node_address: str | None = None
    """Where pods reach the API server (the real node's IP); None: loopback only."""

    layout: StateLayout = field(init=False)
    ports: Ports | None = field(init=False, default=None)
    startup_seconds: float | None = field(init=False, default=None)
    # Seconds from the first launch until each component answered its health check.
    healthy_after: dict[str, float] = field(init=False, default_factory=dict)
    _running: list[_Running] = field(init=False, default_factory=list)
    _owner_pid: int = field(init=False, default_factory=os.getpid)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).expanduser().resolve()
        self.layout = StateLayout(self.state_dir)

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (O=system:masters)."""
        return self.layout.admin_kubeconfig

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON line per request (rotated copies sit beside it)."""
        return self.layout.audit_log

    @property
    def server(self) -> str:
        if self.ports is None:
            raise ControlPlaneError("the control plane is not started")
        return apiserver_url(self.ports)

    @property
    def processes(self) -> list[ProcessRecord]:
        return [r.record for r in self._running]

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._running:
            raise ControlPlaneError("this control plane is already started")
        binaries = find_binaries(CONTROL_PLANE_BINARIES, explicit=self.binaries, bin_dir=self.bin_dir)
        self._refuse_if_running()
        self.layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.layout.logs.mkdir(exist_ok=True)
        ensure_pki(self.layout)
        write_audit_policy(self.layout)
        self.ports = ports = pick_ports()
        for component, cert in (
            (KUBE_CONTROLLER_MANAGER, KUBE_CONTROLLER_MANAGER),
            (KUBE_SCHEDULER, KUBE_SCHEDULER),
        ):
            write_kubeconfig(
                path=self.layout.kubeconfig(component),
                server=apiserver_url(ports),
                layout=self.layout,
                client_cert=cert,
                user=component,
            )
        if not self.detach:
            _install_exit_hooks()
            with _live_lock:
                _live.append(self)
        began = time.monotonic()
        deadline = began + self.start_timeout
        try:
            # etcd and the API server in turn; the two controllers only need the API server.
            for group in ((ETCD,), (KUBE_APISERVER,), (KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER)):
                for component in group:
                    self._launch(component, binaries[component], ports)
                for component in group:
                    self._wait_healthy(component, deadline=deadline)
                    self.healthy_after[component] = time.monotonic() - began
            self.startup_seconds = time.monotonic() - began
            write_kubeconfig(
                path=self.layout.admin_kubeconfig,
                server=apiserver_url(ports),
                layout=self.layout,
                client_cert="admin",
                user=ADMIN_USER,
            )
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _refuse_if_running(self) -> None:
        state = read_state(self.state_dir)
        if state is None:
            return
        alive = [p for p in state.processes if p.is_running()]
        if alive:
            raise ControlPlaneError(
                f"a control plane is already running in {self.state_dir} "
                f"(pids {', '.join(str(p.pid) for p in alive)}); "
                f"stop it with `modelcycle local controlplane down --state-dir {self.state_dir}`"
            )
        self.layout.state_file.unlink(missing_ok=True)  # left by a launcher that was killed

    def _launch(self, component: str, binary: Path, ports: Ports) -> None:
        if component == KUBE_APISERVER:
            args = apiserver_args(self.layout, ports, node_address=self.node_address)
        else:
            args = ARGUMENT_BUILDERS[component](self.layout, ports)
        argv = [str(binary), *args]
        log_path = self.layout.log(component)
        with log_path.open("ab") as log:
            log.write(f"\n=== {datetime.datetime.now().isoformat()} {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.layout.root,
                start_new_session=True,  # own process group: signals reach it and nothing else
                preexec_fn=None if self.detach else die_with_parent_hook(),
            )
        record = ProcessRecord(component, popen.pid, str(binary), procfs.start_ticks(popen.pid))
        self._running.append(_Running(component, popen, record))

    def _wait_healthy(self, component: str, *, deadline: float) -> None:
        assert self.ports is not None
        url = health_url(component, self.ports)
        context = health_context(component, self.layout)
        running = next(r for r in self._running if r.component == component)
        while True:
            exit_code = running.popen.poll()
            if exit_code is not None:
                raise ControlPlaneError(
                    f"{component} exited with code {exit_code} during start; "
                    f"log {self.layout.log(component)}:\n{_log_tail(self.layout.log(component))}"
                )
            if is_healthy(url, context=context):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{component} was not healthy at {url} within {self.start_timeout:.0f}s; "
                    f"log {self.layout.log(component)}:\n{_log_tail(self.layout.log(component))}"
                )
            time.sleep(0.1)

    def _write_state(self) -> None:
        assert self.ports is not None
        state = ControlPlaneState(
            version=K8S_VERSION,
            state_dir=str(self.state_dir),
            server=apiserver_url(self.ports),
            kubeconfig=str(self.kubeconfig),
            ports=asdict(self.ports),
            processes=self.processes,
            detached=self.detach,
            owner_pid=os.getpid(),
            started_at=time.time(),
        )
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.layout.state_file)

    def failed_components(self) -> list[str]:
        return [r.component for r in self._running if r.popen.poll() is not None]

    def stop(self) -> None:
        """Stop every component (reverse start order); safe to call twice and from any exit path."""
        with _live_lock:
            if self in _live:
                _live.remove(self)
        running, self._running = self._running, []
        if not running:
            return
        terminate_processes([r.record for r in reversed(running)], timeout=self.stop_timeout)
        for r in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.popen.wait(timeout=1)
        self.layout.state_file.unlink(missing_ok=True)

    def stop_from_exit_hook(self) -> None:
        # A forked child inherits the hooks and the registry; only the launcher may stop things.
        if os.getpid() == self._owner_pid:
            self.stop()


def stop_detached(state_dir: Path, *, timeout: float = 10.0) -> ControlPlaneState | None:
    """Stop the control plane recorded in `state_dir`. Returns its state, or None if none was recorded."""
    state = read_state(state_dir)
    if state is None:
        return None
    terminate_processes(list(reversed(state.processes)), timeout=timeout)
    still = [p for p in state.processes if p.is_running()]
    if still:
        raise ControlPlaneError(f"could not stop {', '.join(f'{p.component} ({p.pid})' for p in still)}")
    StateLayout(Path(state_dir)).state_file.unlink(missing_ok=True)
    return state


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    pid: int
    running: bool
    healthy: bool


def component_statuses(state: ControlPlaneState) -> list[ComponentStatus]:
    layout = StateLayout(Path(state.state_dir))
    ports = Ports(**state.ports)
    statuses = []
    for record in state.processes:
        running = record.is_running()
        healthy = running and is_healthy(
            health_url(record.component, ports), context=health_context(record.component, layout)
        )
        statuses.append(ComponentStatus(record.component, record.pid, running, healthy))
    return statuses


def purge_state(state_dir: Path) -> None:
    """Delete a stopped control plane's data, certificates and logs."""
    state = read_state(state_dir)
    if state is not None and any(p.is_running() for p in state.processes):
        raise ControlPlaneError(f"a control plane is still running in {state_dir}; stop it first")
    shutil.rmtree(state_dir, ignore_errors=True)
