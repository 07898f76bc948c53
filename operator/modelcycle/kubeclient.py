"""The one Kubernetes REST client: plain JSON dicts in and out, watch as a stream of events.

Credentials come from a `kubernetes.client.Configuration` (the official loaders fill it from a
kubeconfig or the in-cluster service account: client certificates, tokens, exec plugins, token
refresh all work); requests go through the official client's TLS-configured connection pool,
without its generated models. Every request has a connect and a read timeout.

The operator's kind-based client (`modelcycle.controllers.kube.Client`) and the local platform
(platform, traffic, demo) both send through `Kube`.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import urllib3

if TYPE_CHECKING:
    from kubernetes.client import Configuration


class ApiError(Exception):
    """The API server answered with an error status; `message` is its Status message if it sent one."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            message = body
        self.message: str = message
        super().__init__(f"{status} {reason}: {message}")


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409: AlreadyExists on create, or a resourceVersion conflict on update."""


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def api_error(status: int, reason: str, body: str) -> ApiError:
    """The ApiError for an error status: NotFound and Conflict for the two that callers act on."""
    error_type = {404: NotFound, 409: Conflict}.get(status, ApiError)
    return error_type(status, reason, body)


def quote(value: str) -> str:
    """One path segment (a name or namespace) for a request path."""
    return urllib.parse.quote(value, safe="")


def authorization(configuration: Configuration) -> str | None:
    """The Authorization header for the configuration's token (None without one), after its refresh
    hook has renewed an expiring token. The official loaders store it as "BearerToken";
    "authorization" is that key's alias in the official client."""
    return configuration.get_api_key_with_prefix("BearerToken", alias="authorization")


MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class RequestOptions(TypedDict, total=False):
    """What a request may carry besides its method and path; all optional."""

    params: Mapping[str, Any] | None  # the query; None values are left out
    body: Any  # sent as JSON
    content_type: str | None  # application/json when there is a body and no other is given
    accept: str  # application/json unless given
    timeout: float  # the read timeout in seconds: 30 unless given


class Kube:
    """Requests with a configuration's credentials. Thread-safe (the urllib3 pool is).

    `retries` goes to urllib3: False fails fast (callers loop themselves); an int n is its Retry(n),
    which retries connection errors, and read errors of idempotent methods."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        user_agent: str,
        connect_timeout: float = 10.0,
        retries: bool | int = False,
    ) -> None:
        from kubernetes.client import rest  # imported here: `modelcycle local --help` stays fast

        self.configuration = configuration
        self.rest_client = rest.RESTClientObject(configuration)
        self.server = configuration.host.rstrip("/")
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.retries = retries

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, *, user_agent: str = "modelcycle") -> Kube:
        from kubernetes import client, config

        configuration = client.Configuration()
        configuration.connection_pool_maxsize = 64  # one watch plus a worker thread per pod
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        return cls(configuration, user_agent=user_agent)

    def close(self) -> None:
        self.rest_client.close()

    def _url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        encoded = urllib.parse.urlencode(
            {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()}
        )
        return f"{self.server}{path}" + (f"?{encoded}" if encoded else "")

    def _send(
        self, method: str, path: str, *, stream: bool = False, **options: Unpack[RequestOptions]
    ) -> urllib3.BaseHTTPResponse:
        """Every request goes out here: the credentials, the timeouts, the retry policy."""
        body = options.get("body")
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": options.get("accept", "application/json"), "User-Agent": self.user_agent}
        content_type = options.get("content_type") or ("application/json" if payload is not None else None)
        if content_type:
            headers["Content-Type"] = content_type
        token = authorization(self.configuration)  # per request: the refresh hook renews expiring tokens
        if token:
            headers["Authorization"] = token
        return self.rest_client.pool_manager.request(
            method,
            self._url(path, options.get("params")),
            body=payload,
            headers=headers,
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=options.get("timeout", 30.0)),
            preload_content=not stream,
            retries=self.retries,
        )

    def fetch(self, method: str, path: str, **options: Unpack[RequestOptions]) -> bytes:
        """The response body; an error status raises its ApiError."""
        response = self._send(method, path, **options)
        if response.status >= 400:
            raise api_error(response.status, response.reason or "", response.data.decode("utf-8", "replace"))
        return bytes(response.data)

    def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> dict[str, Any]:
        data = self.fetch(method, path, **options)
        return dict(json.loads(data)) if data else {}

    def raw(self, method: str, path: str, *, body: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        """One request with the configuration's credentials; the status and body whatever they are
        (for the API server's proxy subresources, whose answers are the proxied server's)."""
        response = self._send(method, path, body=body, timeout=timeout)
        return int(response.status), bytes(response.data)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.get(path)
        except NotFound:
            return None

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
        query = {**params, "watch": True, "timeoutSeconds": timeout_seconds, "allowWatchBookmarks": True}
        response = self._send("GET", path, params=query, timeout=timeout_seconds + 30.0, stream=True)
        try:
            if response.status >= 400:
                body = response.read().decode("utf-8", errors="replace")
                if response.status == 410:
                    raise WatchExpired(body)
                raise api_error(response.status, response.reason or "", body)
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
                        raise api_error(
                            int(status.get("code") or 500), str(status.get("reason")), json.dumps(status)
                        )
                    yield event
        finally:
            response.release_conn()
