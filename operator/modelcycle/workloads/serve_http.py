"""A small HTTP/1.1 server on asyncio (uvloop when available) and httptools, for the model server.

Why not a framework: the protocol work per request is tens of microseconds, so the transport's own
overhead decides throughput; a raw `asyncio.Protocol` with the httptools parser does no per-request
task, dict-of-scope or middleware work (see benchmarks/README.md for the measurements).

What it does: keep-alive and pipelining (responses in request order), chunked request bodies,
`Expect: 100-continue`, limits (`Limits`: the request target, each header, all headers together
and their count, the body), 400 on malformed HTTP, and graceful shutdown: stop accepting, answer
every request already received (with `Connection: close`), close idle connections, then return.

A refused request gets a JSON error (`{"error": ...}`) as soon as the limit is crossed, without
reading the rest: the server stops parsing, shuts down its sending side, discards what still
arrives for at most `LINGER_SECONDS` (so the client reads the answer rather than a reset), then
closes. The head of a request is fed to the parser in slices no larger than what is left of its
budget, so neither the URL nor a header can grow past its limit in memory, and both are gathered
in linear time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools

log = logging.getLogger(__name__)

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
MAX_PIPELINE = 32
"""Requests queued on one connection before reading from it pauses."""
LINGER_SECONDS = 1.0
"""How long a refused connection keeps discarding input before it closes."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold; each is a `modelcycle serve` flag (docs/serving.md)."""

    max_request_line_bytes: int = 8 << 10
    """Longest request target (path and query): longer gets 414."""
    max_header_bytes: int = 8 << 10
    """Longest single header, name and value together: longer gets 431."""
    max_headers_total_bytes: int = 32 << 10
    """Most bytes of all headers together: more gets 431."""
    max_headers: int = 100
    """Most header fields: more gets 431."""
    max_body_bytes: int = 16 << 20
    """Largest body, declared or received (after decompression too): larger gets 413."""

    @property
    def head_bytes(self) -> int:
        """Budget of a whole request head: request line and headers with their separators."""
        return self.max_request_line_bytes + self.max_headers_total_bytes + 4 * self.max_headers + 64


class HttpResponse(Protocol):
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]


Handler = Callable[[str, str, str, Mapping[str, str], bytes], "HttpResponse | asyncio.Future[Any]"]


def _head(status: int, content_type: str, length: int, extra: Mapping[str, str], close: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n",
        f"content-type: {content_type}\r\ncontent-length: {length}\r\n",
    ]
    for key, value in extra.items():
        lines.append(f"{key}: {value}\r\n")
    if close:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _error(status: int, message: str) -> bytes:
    import orjson

    body = orjson.dumps({"error": message})
    return _head(status, "application/json", len(body), {}, True) + body


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[Any, bool]] = deque()
        self.url: list[bytes] = []
        self.url_size = 0
        self.headers: dict[str, str] = {}
        self.header_count = 0
        self.header_size = 0
        self.in_head = True
        """Between the start of a request (or of the connection) and the end of its headers."""
        self.head_size = 0
        self.body: list[bytes] = []
        self.size = 0
        self.rejected = False
        self.closing = False
        self.paused = False
        self.receiving = False
        self.last_active = time.monotonic()
        self.request_started = 0.0

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        for item, _ in self.pending:
            if isinstance(item, asyncio.Future) and not item.done():
                item.remove_done_callback(self._flush)
        self.pending.clear()
        self.server.notify_idle()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.rejected:
            return  # lingering after a refusal: discard
        limits = self.server.limits
        view = memoryview(data)
        try:
            while view and not self.rejected:
                if self.in_head:
                    # Never hand the parser more of a head than its budget (plus one byte to
                    # notice the overflow): httptools gathers a header by concatenation.
                    piece = view[: max(1, limits.head_bytes - self.head_size + 1)]
                    self.head_size += len(piece)
                else:
                    piece = view
                view = view[len(piece) :]
                self.parser.feed_data(piece)
                if self.in_head and self.head_size > limits.head_bytes and not self.rejected:
                    self._reject(431, f"the request head exceeds {limits.head_bytes} bytes")
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.rejected:
                self._reject(400, f"malformed HTTP request: {exc}")

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.receiving = True
        self.request_started = self.last_active
        self.url = []
        self.url_size = 0
        self.headers = {}
        self.header_count = 0
        self.header_size = 0
        self.body = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        if self.rejected:
            return
        self.url_size += len(url)
        limit = self.server.limits.max_request_line_bytes
        if self.url_size > limit:
            self._reject(414, f"the request target exceeds the limit of {limit} bytes")
            return
        self.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.rejected:
            return
        limits = self.server.limits
        self.header_count += 1
        size = len(name) + len(value)
        self.header_size += size
        if self.header_count > limits.max_headers:
            self._reject(431, f"more than {limits.max_headers} header fields")
        elif size > limits.max_header_bytes:
            shown = name[:64].decode("latin-1")
            self._reject(431, f"header {shown!r} exceeds the limit of {limits.max_header_bytes} bytes")
        elif self.header_size > limits.max_headers_total_bytes:
            self._reject(431, f"the headers exceed the limit of {limits.max_headers_total_bytes} bytes")
        else:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.rejected:
            return
        length = self.headers.get("content-length")
        limit = self.server.limits.max_body_bytes
        if length is not None:
            try:
                too_large = int(length) > limit
            except ValueError:
                self._reject(400, "Content-Length is not a number")
                return
            if too_large:
                self._reject(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
                return
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.server.limits.max_body_bytes:
            self._reject(413, f"request body exceeds the limit of {self.server.limits.max_body_bytes} bytes")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        self.in_head = True
        self.head_size = 0
        self.last_active = time.monotonic()
        self.request_started = 0.0
        if self.rejected or self.closing or self.transport is None:
            return
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        target = b"".join(self.url).decode("latin-1")
        path, _, query = target.partition("?")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.server.requests += 1
        try:
            result = self.server.handler(method, path, query, self.headers, body)
        except Exception as exc:  # the handler catches its own errors; this is the last resort
            log.exception("handler failed")
            self._reject(500, f"internal error: {exc}")
            return
        if not self.pending and not isinstance(result, asyncio.Future):
            self._write(result, keep_alive)
            return
        self.pending.append((result, keep_alive))
        if isinstance(result, asyncio.Future):
            result.add_done_callback(self._flush)
        if len(self.pending) >= MAX_PIPELINE and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._flush(None)

    # ------------------------------------------------------------------ responses

    def _flush(self, _: Any) -> None:
        while self.pending and self.transport is not None:
            item, keep_alive = self.pending[0]
            if isinstance(item, asyncio.Future):
                if not item.done():
                    return
                try:
                    response = item.result()
                except BaseException as exc:  # cancelled or failed future: answer anyway
                    self.pending.popleft()
                    self._reject(500, f"internal error: {exc!r}")
                    return
            else:
                response = item
            self.pending.popleft()
            self._write(response, keep_alive)
        if self.paused and self.transport is not None and len(self.pending) < MAX_PIPELINE // 2:
            self.paused = False
            self.transport.resume_reading()

    def _write(self, response: HttpResponse, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        close = not keep_alive or (self.server.shutting_down and not self.pending)
        body = response.body
        head = _head(response.status, response.content_type, len(body), response.headers, close)
        transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            transport.write(body)
        self.server.responses += 1
        if close:
            self._close()
        else:
            self.server.notify_idle()

    def _reject(self, status: int, message: str) -> None:
        """Answer an unusable request and close the connection (the stream can't be trusted).

        The rest of the request is not read: sending stops at once, input is discarded for at
        most LINGER_SECONDS so the client gets the answer rather than a connection reset.
        """
        if self.rejected:
            return
        self.rejected = True
        self.server.refused(status)
        transport = self.transport
        if transport is None:
            return
        transport.write(_error(status, message))
        self.closing = True
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, self._close)
        else:
            self._close()

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        """Nothing received and unanswered, and no request half received."""
        return not self.pending and not self.receiving

    def close_if_idle(self) -> None:
        if (self.idle or self.rejected) and self.transport is not None:
            self.transport.close()


class HttpServer:
    """Serves `handler(method, path, query, headers, body)` over HTTP/1.1."""

    def __init__(
        self,
        handler: Handler,
        *,
        limits: Limits | None = None,
        keepalive_timeout: float = 75.0,
        request_timeout: float = 60.0,
        on_refused: Callable[[int], None] | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.on_refused = on_refused
        """Told the status of every request the transport refuses (for the request counters)."""
        self.keepalive_timeout = keepalive_timeout
        """Idle keep-alive connections are closed after this many seconds."""
        self.request_timeout = request_timeout
        """A request still incomplete this many seconds after its first byte gets 408."""
        self._sweeper: asyncio.Task[None] | None = None
        self.connections: set[_Connection] = set()
        self.shutting_down = False
        self.requests = 0
        self.responses = 0
        self._server: asyncio.Server | None = None
        self._idle: asyncio.Event | None = None

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._server = await loop.create_server(
            lambda: _Connection(self), host=host, port=port, backlog=backlog, reuse_address=True
        )
        sockets: list[Any] = list(self._server.sockets or [])
        self._sweeper = loop.create_task(self._sweep(), name="http-idle-sweeper")
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def _sweep(self) -> None:
        """Close idle keep-alive connections and time out requests that never finish arriving."""
        interval = max(0.05, min(5.0, self.keepalive_timeout / 3, self.request_timeout / 3))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.receiving and now - conn.request_started > self.request_timeout:
                    conn._reject(408, f"the request was not received within {self.request_timeout:g} s")
                elif conn.idle and now - conn.last_active > self.keepalive_timeout:
                    conn.close_if_idle()

    def refused(self, status: int) -> None:
        if self.on_refused is not None:
            try:
                self.on_refused(status)
            except Exception:  # counting must never break the answer
                log.exception("counting a refused request failed")

    def notify_idle(self) -> None:
        if self.shutting_down and self._idle is not None:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close_if_idle()
            if not self.connections:
                self._idle.set()

    async def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop accepting, let in-flight requests finish, close connections. True if all finished."""
        self.shutting_down = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        clean = not self.connections
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        return clean
