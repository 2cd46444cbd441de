"""A lean HTTP/1.1 client for the model calls fusion makes: keep-alive pools per origin, httptools parsing.

Why not aiohttp or httpx: a fusion request makes five model calls, and on this project's fusion
benchmark those calls were most of Quorum's CPU (aiohttp about 150-270 µs a call, httpx more, a
bare asyncio protocol about 50-85 µs). This client does only what a model call needs: POST a body,
read a response whole or as it streams, over plain TCP or TLS, on pooled keep-alive connections.
httptools (the C parser uvicorn uses) handles Content-Length, chunked and close-delimited bodies.

A connection goes back to its pool only after a complete response that allows keep-alive; a call
that is cancelled, times out or fails mid-response closes its connection instead.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

MAX_BODY_BYTES = 64 * 1024 * 1024  # a model's answer larger than this is an error, not an allocation
IDLE_SECONDS = 4.0  # below uvicorn's 5 s keep-alive (vLLM): reuse only what the server still holds open


class TransportError(Exception):
    """The connection failed, closed early, or carried something that is not HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a POST goes: origin, request target and the bytes every request to it starts with."""

    scheme: str
    host: str
    port: int
    target: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, target)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    __slots__ = (
        "_body_size",
        "_chunks",
        "_complete",
        "_delimited",
        "_error",
        "_parser",
        "_waiter",
        "closed",
        "idle_since",
        "keep_alive",
        "status",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self._chunks: deque[bytes] = deque()
        self._body_size = 0
        self._delimited = False  # the body's end is marked (Content-Length, chunked), not the connection's close
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(TransportError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool:
        self.closed = True
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._complete:
            return
        if self.status and not self._delimited and self._error is None:
            self._complete = True  # a body that runs to the end of the connection
            self._wake()
        else:
            self._fail(TransportError("connection closed before the response was complete"))

    # ---------------------------------------------------------------- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY_BYTES:
            self._fail(TransportError(f"response body over {MAX_BODY_BYTES} bytes"))
            return
        self._chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._wake()

    # ---------------------------------------------------------------- for the client

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def send(self, request: bytes) -> None:
        self._reset()
        if self.closed or self.transport is None or self.transport.is_closing():
            raise TransportError("connection closed")
        self.transport.write(request)

    async def headers(self) -> int:
        while not self.status:
            await self._wait()
        return self.status

    async def body(self) -> bytes:
        while not self._complete:
            await self._wait()
        return b"".join(self._chunks)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self._complete:
                return
            await self._wait()

    @property
    def reusable(self) -> bool:
        return self._complete and self.keep_alive and not self.closed and self._error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """A response whose status is known; read its body with `read()` or `chunks()`, then `release()`."""

    __slots__ = ("_client", "_conn", "_key", "_released", "status")

    def __init__(self, client: HTTPClient, key: tuple[str, str, int], conn: _Connection, status: int) -> None:
        self._client, self._key, self._conn, self.status = client, key, conn, status
        self._released = False

    async def read(self) -> bytes:
        try:
            return await self._conn.body()
        finally:
            self.release()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._conn.chunks()

    def release(self) -> None:
        """The connection back to its pool when the response was read whole; closed otherwise."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.reusable:
            self._client._put(self._key, conn)
        else:
            conn.close()
        self._client._slots.release()


class HTTPClient:
    """POSTs over pooled keep-alive HTTP/1.1 connections (TLS for https), at most `max_connections` at once."""

    def __init__(
        self, max_connections: int = 512, connect_timeout: float = 5.0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.connect_timeout = connect_timeout
        self._pools: dict[tuple[str, str, int], deque[_Connection]] = {}  # oldest idle first
        self._slots = asyncio.BoundedSemaphore(max_connections)
        self._tls = tls  # by default the system's trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured)

    async def post(self, endpoint: Endpoint, body: bytes, headers: Mapping[str, str]) -> Response:
        """Send the request; returns once the response's status line and headers are in."""
        key = (endpoint.scheme, endpoint.host, endpoint.port)
        request = _request(endpoint, body, headers)
        await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = self._idle(key)
            if conn is not None:
                try:
                    conn.send(request)
                except TransportError:  # closed by the server while idle, before we wrote: nothing was sent
                    conn = None
            if conn is None:
                conn = await self._connect(endpoint)
                conn.send(request)
            status = await conn.headers()
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        return Response(self, key, conn, status)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            for conn in pool:
                conn.close()
        self._pools.clear()

    # ---------------------------------------------------------------- the pool

    def _idle(self, key: tuple[str, str, int]) -> _Connection | None:
        pool = self._pools.get(key)
        oldest_usable = time.monotonic() - IDLE_SECONDS
        while pool:
            conn = pool.pop()  # the most recently used: the least likely to have been closed by the server
            if not conn.closed and conn.idle_since >= oldest_usable:
                return conn
            conn.close()
        return None

    def _put(self, key: tuple[str, str, int], conn: _Connection) -> None:
        """Back to the pool; connections left idle too long since a burst are closed here, not kept forever."""
        now = time.monotonic()
        conn.idle_since = now
        pool = self._pools.setdefault(key, deque())
        pool.append(conn)
        while pool[0].closed or pool[0].idle_since < now - IDLE_SECONDS:  # stops at `conn` at the latest
            pool.popleft().close()

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if endpoint.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _transport, conn = await loop.create_connection(
                    _Connection, endpoint.host, endpoint.port, ssl=tls, server_hostname=endpoint.host if tls else None
                )
        except TimeoutError:
            raise TransportError(f"connect timed out after {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise TransportError(f"cannot connect: {exc.strerror or type(exc).__name__}") from None
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


def _request(endpoint: Endpoint, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {endpoint.target} HTTP/1.1\r\nhost: {endpoint.authority}\r\ncontent-length: {len(body)}\r\n"]
    for name, value in headers.items():
        if not _SAFE_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise TransportError(f"header {name!r} cannot be sent")  # no header injection, whatever its source
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode() + body


_SAFE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
