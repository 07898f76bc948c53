"""A small JSON REST client for the local node: plain dicts in and out, watch as a stream of events.

The kubeconfig is read by the official client's loader (client certificates, tokens, exec
plugins all work); requests go through its TLS-configured connection pool, without its models.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import urllib3


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            message = body
        super().__init__(f"{status} {reason}: {message}")


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class Kube:
    def __init__(self, kubeconfig: Path, *, user_agent: str = "modelcycle-local-node") -> None:
        from kubernetes import client, config  # imported here: `modelcycle local --help` stays fast

        configuration = client.Configuration()
        configuration.connection_pool_maxsize = 64  # one watch plus a worker thread per pod
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.configuration = configuration
        self.api_client = client.ApiClient(configuration)
        self.server = configuration.host.rstrip("/")
        self.user_agent = user_agent

    def close(self) -> None:
        self.api_client.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        token = self.configuration.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        return headers

    def _url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        encoded = urllib.parse.urlencode(
            {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()}
        )
        return f"{self.server}{path}" + (f"?{encoded}" if encoded else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        pool = self.api_client.rest_client.pool_manager
        payload = None if body is None else json.dumps(body).encode()
        headers = self._headers(content_type or ("application/json" if payload is not None else None))
        response = pool.request(
            method,
            self._url(path, params),
            body=payload,
            headers=headers,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
            preload_content=True,
            retries=False,
        )
        text = response.data.decode("utf-8", errors="replace")
        if response.status >= 400:
            raise ApiError(response.status, response.reason or "", text)
        return dict(json.loads(text)) if text else {}

    def raw(self, method: str, path: str, *, body: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        """One request with the kubeconfig's credentials; the status and body whatever they are
        (for the API server's proxy subresources, whose answers are the proxied server's)."""
        pool = self.api_client.rest_client.pool_manager
        payload = None if body is None else json.dumps(body).encode()
        response = pool.request(
            method,
            self._url(path),
            body=payload,
            headers=self._headers("application/json" if payload is not None else None),
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
            preload_content=True,
            retries=False,
        )
        return int(response.status), bytes(response.data)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body=body)

    def put(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Any, *, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.request("DELETE", path, body=body)

    def watch(self, path: str, *, timeout_seconds: int, **params: Any) -> Iterator[dict[str, Any]]:
        """Watch events ({type, object}) until the server ends the watch after `timeout_seconds`."""
        pool = self.api_client.rest_client.pool_manager
        query = {**params, "watch": True, "timeoutSeconds": timeout_seconds, "allowWatchBookmarks": True}
        response = pool.request(
            "GET",
            self._url(path, query),
            headers=self._headers(),
            timeout=urllib3.Timeout(connect=10.0, read=timeout_seconds + 30.0),
            preload_content=False,
            retries=False,
        )
        try:
            if response.status >= 400:
                body = response.read().decode("utf-8", errors="replace")
                if response.status == 410:
                    raise WatchExpired(body)
                raise ApiError(response.status, response.reason or "", body)
            buffer = b""
            for chunk in response.stream(64 * 1024, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise WatchExpired(str(status.get("message")))
                        raise ApiError(
                            int(status.get("code") or 500), str(status.get("reason")), json.dumps(status)
                        )
                    yield event
        finally:
            response.release_conn()
