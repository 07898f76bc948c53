"""The real node: pods of our images in containers (containerd + runc) on a real kubelet, Services
routed by kube-proxy, the operator installed in-cluster by the Helm chart, runtime enforcement of
Pod Security `restricted`, and a second `local up` that reuses what runs.

All against the session's `modelcycle local up` (e2e_platform in conftest.py). The drills that
break the node's components are in test_restarts.py.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from modelcycle.kubeclient import ApiError, Kube
from modelcycle.local import incluster, kubenode, network, platform
from support.realnode import RealNodePlatform

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("healthy_platform")]

NODE_NAME = platform.NODE_NAME
RESTRICTED_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Run inside the workload container: what the runtime enforces, as the process sees it.
PROBE = """
import json, os, pathlib
def can_write(path):
    try:
        pathlib.Path(path).write_text("x")
        return True
    except OSError:
        return False
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\\t", 1) for line in lines if ":\\t" in line)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "root_writable": can_write("/usr/probe") or can_write("/probe"),
    "tmp_writable": can_write("/tmp/probe"),
    "cap_eff": status["CapEff"].strip(), "cap_prm": status["CapPrm"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
}))
"""


@pytest.fixture(scope="module")
def kube(e2e_platform: RealNodePlatform) -> Iterator[Kube]:
    client = Kube.from_kubeconfig(e2e_platform.kubeconfig, user_agent="modelcycle-e2e-real-node")
    yield client
    client.close()


@pytest.fixture(scope="module")
def images() -> kubenode.Images:
    return kubenode.Images.load(kubenode.images_env_file())


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"real-{secrets.token_hex(3)}"
    platform.ensure_namespace(kube, name)
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


def wait(check: Any, *, timeout: float = 180, what: str) -> Any:
    return platform.wait_until(check, timeout=timeout, what=what, interval=0.5)


def pod(name: str, image: str, args: list[str], *, port: int | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "command": ["python3"],
        "args": args,
        "securityContext": RESTRICTED_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if port is not None:
        container["ports"] = [{"name": "http", "containerPort": port}]
        container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
            "restartPolicy": "Never" if port is None else "Always",
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def get_pod(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def pod_phase(kube: Kube, namespace: str, name: str) -> str:
    return str((get_pod(kube, namespace, name).get("status") or {}).get("phase"))


def pod_ready(kube: Kube, namespace: str, name: str) -> bool:
    conditions = (get_pod(kube, namespace, name).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def container_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return dict((get_pod(kube, namespace, name)["status"]["containerStatuses"] or [{}])[0])


def http_server(kube: Kube, namespace: str, images: kubenode.Images, name: str = "web") -> dict[str, Any]:
    """A pod of the workload image serving /tmp over HTTP on 8080, and a Service for it."""
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods",
        pod(name, images.workload, ["-m", "http.server", "8080", "--directory", "/tmp"], port=8080),
    )
    kube.create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )
    wait(lambda: pod_ready(kube, namespace, name), what=f"pod {name} to be Ready")
    return get_pod(kube, namespace, name)


def http_get(url: str, *, timeout: float = 5) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return int(response.status)


# --------------------------------------------------------------------------- the node and the operator


def test_node_is_a_real_kubelet_with_containerd_and_an_address_in_our_range(kube: Kube) -> None:
    node = kube.get(f"/api/v1/nodes/{NODE_NAME}")
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert info["kubeletVersion"].startswith("v1.36")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == network.NODE_IP
    assert not node["spec"].get("unschedulable")


def test_operator_runs_in_cluster_from_the_image_built_here_installed_by_the_chart(
    kube: Kube, images: kubenode.Images
) -> None:
    assert incluster.operator_available(kube)
    pods = kube.get(
        f"/api/v1/namespaces/{incluster.NAMESPACE}/pods",
        labelSelector="app.kubernetes.io/component=operator",
    )["items"]
    assert len(pods) == 1
    spec, status = pods[0]["spec"], pods[0]["status"]
    assert spec["nodeName"] == NODE_NAME
    assert spec["containers"][0]["image"] == images.operator
    assert f"--workload-image={images.workload}" in spec["containers"][0]["args"]
    assert "--monitor-stats-access=proxy" in spec["containers"][0]["args"]
    assert spec["serviceAccountName"].endswith("operator")
    assert status["containerStatuses"][0]["containerID"].startswith("containerd://")
    assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(network.POD_CIDR)
    releases = kube.get(f"/api/v1/namespaces/{incluster.NAMESPACE}/secrets", labelSelector="owner=helm")
    assert [s["metadata"]["labels"]["name"] for s in releases["items"]] == [incluster.RELEASE]


def test_second_up_reuses_every_component(e2e_platform: RealNodePlatform) -> None:
    up = e2e_platform.local("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "already running" in up.stdout, up.stdout


def test_status_reports_every_component_healthy_with_its_memory(e2e_platform: RealNodePlatform) -> None:
    result = e2e_platform.local("status")
    assert result.returncode == 0, result.stdout + result.stderr
    for component in (*kubenode.COMPONENTS, "operator", "control plane"):
        assert component in result.stdout
    assert "memory (RSS)" in result.stdout


# --------------------------------------------------------------------------- runtime enforcement


def test_restricted_pod_runs_as_10001_with_a_read_only_root_no_capabilities_and_no_token(
    kube: Kube, namespace: str, images: kubenode.Images
) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod("probe", images.workload, ["-c", PROBE]))
    wait(
        lambda: pod_phase(kube, namespace, "probe") in ("Succeeded", "Failed"), what="the probe pod to finish"
    )
    log = kube.fetch("GET", f"/api/v1/namespaces/{namespace}/pods/probe/log").decode()
    assert pod_phase(kube, namespace, "probe") == "Succeeded", log
    seen = json.loads(log.strip().splitlines()[-1])
    assert (seen["uid"], seen["gid"]) == (10001, 10001)
    assert seen["root_writable"] is False
    assert seen["tmp_writable"] is True  # the emptyDir the workloads write to
    assert int(seen["cap_eff"], 16) == 0 and int(seen["cap_prm"], 16) == 0
    assert seen["no_new_privs"] == "1"
    assert seen["seccomp"] == "2"  # filter mode: the runtime's default profile
    assert seen["token"] is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"privileged": True, "allowPrivilegeEscalation": True}, "privileged"),
        ({"runAsNonRoot": False, "runAsUser": 0}, "runAsNonRoot"),
        ({"capabilities": {"add": ["NET_ADMIN"]}}, "capabilities"),
    ],
    ids=["privileged", "root", "added-capability"],
)
def test_restricted_namespace_refuses_a_pod_that_breaks_the_standard(
    kube: Kube, namespace: str, images: kubenode.Images, change: dict[str, Any], field: str
) -> None:
    manifest = pod("bad", images.workload, ["-c", "pass"])
    manifest["spec"]["containers"][0]["securityContext"] = {**RESTRICTED_SECURITY, **change}
    if change.get("runAsUser") == 0:
        manifest["spec"]["securityContext"] = {}
    with pytest.raises(ApiError) as refused:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
    assert refused.value.status == 403
    assert "violates PodSecurity" in str(refused.value) and field in str(refused.value)


# --------------------------------------------------------------------------- networking


def test_service_routes_through_kube_proxy_and_the_api_server_proxies_to_the_pod(
    kube: Kube, namespace: str, images: kubenode.Images
) -> None:
    served = http_server(kube, namespace, images)
    pod_ip = served["status"]["podIP"]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(network.POD_CIDR)
    service = kube.get(f"/api/v1/namespaces/{namespace}/services/web")
    cluster_ip = service["spec"]["clusterIP"]
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(network.SERVICE_CIDR)

    def slice_lists_the_pod() -> bool:
        slices = kube.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            labelSelector="kubernetes.io/service-name=web",
        )["items"]
        return any(pod_ip in e["addresses"] for s in slices for e in s.get("endpoints") or [])

    wait(slice_lists_the_pod, what="the EndpointSlice to list the pod")

    def cluster_ip_answers() -> bool:
        try:
            return http_get(f"http://{cluster_ip}/") == 200
        except OSError:
            return False

    wait(cluster_ip_answers, timeout=60, what=f"the Service's ClusterIP {cluster_ip} to answer")
    assert http_get(f"http://{pod_ip}:8080/") == 200
    listing = kube.fetch("GET", f"/api/v1/namespaces/{namespace}/pods/web:8080/proxy/").decode()
    assert "Directory listing" in listing
