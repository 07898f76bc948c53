"""The operator's dict-in, dict-out Kubernetes client: kind-based paths over `modelcycle.kubeclient`.

Controllers deal in plain manifests (what the builders return), so this wraps the few verbs they
need instead of the generated per-type classes. Requests, timeouts and errors are the shared
client's; `ApiError`, `NotFound` and `Conflict` are re-exported for the controllers to catch.
"""

from __future__ import annotations

import contextlib
from typing import Any, Unpack

import kubernetes

from modelcycle import API_VERSION
from modelcycle.kubeclient import MERGE_PATCH, ApiError, Conflict, Kube, NotFound, RequestOptions

__all__ = ["DEFAULT_API_VERSION", "ApiError", "Client", "Conflict", "NotFound", "load_configuration", "path"]

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
RETRIES = 3  # urllib3's default Retry(3), which the operator's requests have always had

_PLURALS: dict[str, str] = {
    "Pod": "pods",
    "Service": "services",
    "Event": "events",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PersistentVolume": "persistentvolumes",
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "Node": "nodes",
    "Job": "jobs",
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "EndpointSlice": "endpointslices",
    "Dataset": "datasets",
    "TrainingRun": "trainingruns",
    "ModelVersion": "modelversions",
    "ModelDeployment": "modeldeployments",
    "ModelMonitor": "modelmonitors",
}
DEFAULT_API_VERSION = {
    "Job": "batch/v1",
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "EndpointSlice": "discovery.k8s.io/v1",
    **{k: API_VERSION for k in ("Dataset", "TrainingRun", "ModelVersion", "ModelDeployment", "ModelMonitor")},
}
_CLUSTER_SCOPED = {"Namespace", "Node", "PersistentVolume"}


def path(
    *,
    kind: str,
    api_version: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    api_version = api_version or DEFAULT_API_VERSION.get(kind, "v1")
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [root]
    if namespace and kind not in _CLUSTER_SCOPED:
        parts.append(f"namespaces/{namespace}")
    parts.append(_PLURALS[kind])
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Client:
    """Verbs on plain dict manifests. Thread-safe (the underlying urllib3 pool is)."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.kube = Kube(
            configuration,
            user_agent="modelcycle-operator",
            connect_timeout=CONNECT_TIMEOUT,
            retries=RETRIES,
        )

    def _call(self, method: str, url: str, **options: Unpack[RequestOptions]) -> dict[str, Any]:
        options.setdefault("timeout", READ_TIMEOUT)
        return self.kube.request(method, url, **options)

    def get(
        self, *, kind: str, namespace: str | None, name: str, api_version: str | None = None
    ) -> dict[str, Any]:
        return self._call("GET", path(kind=kind, api_version=api_version, namespace=namespace, name=name))

    def get_or_none(
        self, *, kind: str, namespace: str | None, name: str, api_version: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return self.get(kind=kind, namespace=namespace, name=name, api_version=api_version)
        except NotFound:
            return None

    def list(
        self,
        *,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
        api_version: str | None = None,
    ) -> list[dict[str, Any]]:
        result = self._call(
            "GET",
            path(kind=kind, api_version=api_version, namespace=namespace),
            params={"labelSelector": label_selector},
        )
        return list(result.get("items", []))

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create; raises Conflict when an object of that name exists."""
        meta = manifest["metadata"]
        url = path(
            kind=manifest["kind"], api_version=manifest.get("apiVersion"), namespace=meta.get("namespace")
        )
        return self._call("POST", url, body=manifest)

    def patch(
        self,
        *,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        api_version: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        url = path(
            kind=kind, api_version=api_version, namespace=namespace, name=name, subresource=subresource
        )
        return self._call("PATCH", url, body=patch, content_type=MERGE_PATCH)

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        url = path(
            kind=manifest["kind"],
            api_version=manifest.get("apiVersion"),
            namespace=meta.get("namespace"),
            name=meta["name"],
        )
        return self._call("PUT", url, body=manifest)

    def delete(
        self,
        *,
        kind: str,
        namespace: str | None,
        name: str,
        api_version: str | None = None,
        propagation: str = "Background",
    ) -> None:
        url = path(kind=kind, api_version=api_version, namespace=namespace, name=name)
        with contextlib.suppress(NotFound):
            self._call("DELETE", url, body={"propagationPolicy": propagation})

    def proxy_get(self, *, namespace: str, pod: str, port: int, url_path: str) -> bytes:
        """GET through the API server's pod proxy (works when the operator runs outside the cluster)."""
        url = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{url_path.lstrip('/')}"
        return self.kube.fetch("GET", url, accept="*/*", timeout=READ_TIMEOUT)


def load_configuration(*, kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod, else the given (or default) kubeconfig."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration
