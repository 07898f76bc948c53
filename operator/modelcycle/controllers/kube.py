"""A thin dict-in, dict-out Kubernetes REST client over the official client's ApiClient.

Controllers deal in plain manifests (what the builders return), so this wraps the few verbs they
need instead of the generated per-type classes. Every call has a request timeout.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import kubernetes

from modelcycle import API_VERSION

TIMEOUT = (5, 30)  # connect, read seconds

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


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        message = body
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(body).get("message", body)
        self.message = message
        super().__init__(f"{status} {reason}: {message}")


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: AlreadyExists on create, or a resourceVersion conflict on update."""


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

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        query: dict[str, Any] | None = None,
    ) -> bytes:
        query_params = [(k, v) for k, v in (query or {}).items() if v is not None]
        method, full_url, headers, body, _ = self.api_client.param_serialize(
            method,
            url,
            query_params=query_params,
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method, full_url, header_params=headers, body=body, _request_timeout=TIMEOUT
        )
        data = response.read() or b""
        if response.status >= 400:
            text = data.decode("utf-8", "replace")
            error_type = {404: NotFound, 409: Conflict}.get(response.status, ApiError)
            raise error_type(response.status, response.reason or "", text)
        return bytes(data)

    def _call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = self._request(method, url, body=body, content_type=content_type, query=query)
        return json.loads(data) if data else {}

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
            query={"labelSelector": label_selector},
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
        return self._call("PATCH", url, body=patch, content_type="application/merge-patch+json")

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
        return self._request("GET", url, accept="*/*")


def load_api_client(*, kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster config when running in a pod, else the given (or default) kubeconfig."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return kubernetes.client.ApiClient(configuration)
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)
