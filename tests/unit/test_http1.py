"""The model-call HTTP/1.1 client against a scripted TCP server: framing, keep-alive, failure paths."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import pytest
import trustme

from extproc import http1
from extproc.http1 import Endpoint, HTTPClient, TransportError

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """Runs `script` once per request on each accepted connection; counts connections and requests."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.closed = 0  # connections the client closed
        self.requests: list[bytes] = []
        self.handlers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        self.endpoint = Endpoint.parse(f"{scheme}://127.0.0.1:{port}/v1/chat/completions")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"content-length:"))[15:])
                self.requests.append(head + await reader.readexactly(length))
                await self.script(reader, writer)
                if writer.is_closing():
                    return
        except asyncio.IncompleteReadError:
            self.closed += 1
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def answer(body: bytes, extra: bytes = b"") -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body))
        await writer.drain()

    return script


def reply_and_close(raw: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
        writer.close()

    return script


async def post(client: HTTPClient, server: Server, body: bytes = b"{}", **headers: str) -> tuple[int, bytes]:
    response = await client.post(server.endpoint, body, headers)
    return response.status, await response.read()


async def test_keep_alive_reuses_one_connection_and_sends_a_well_formed_request():
    async with Server(answer(b'{"ok":1}')) as server:
        client = HTTPClient()
        for _ in range(3):
            assert await post(client, server, b'{"a":1}', **{"x-request-id": "r1"}) == (200, b'{"ok":1}')
        await client.aclose()
    assert server.connections == 1
    port = server.endpoint.port
    assert server.requests[0] == (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-length: 7\r\n"
        b'x-request-id: r1\r\n\r\n{"a":1}' % port
    )


async def test_chunked_body_streams_as_it_arrives():
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()  # the client must see "first" before the rest exists
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    async with Server(script) as server:
        client = HTTPClient()
        response = await client.post(server.endpoint, b"{}", {})
        chunks = response.chunks()
        assert await anext(chunks) == b"first"
        release.set()
        assert [c async for c in chunks] == [b"second"]
        response.release()
        assert await post(client, server) == (200, b"first" + b"second")  # and the connection was reused
        await client.aclose()
    assert server.connections == 1


async def test_body_delimited_by_close_is_read_to_the_end_and_the_connection_not_reused():
    async with Server(reply_and_close(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")) as server:
        client = HTTPClient()
        assert await post(client, server) == (200, b"all of it")
        assert await post(client, server) == (200, b"all of it")
        await client.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part", "before the response was complete"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed HTTP response"),
    ],
)
async def test_a_broken_response_is_an_error(raw, error):
    async with Server(reply_and_close(raw)) as server:
        client = HTTPClient()
        with pytest.raises(TransportError, match=error):
            await post(client, server)
        await client.aclose()


async def test_a_call_cancelled_mid_response_closes_its_connection():
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf ")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"done!")
        await writer.drain()

    async with Server(slow) as server:
        client = HTTPClient()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await post(client, server)
        # Reusing that connection would read the first call's tail as this call's answer.
        assert await post(client, server) == (200, b"half done!")
        await client.aclose()
    assert server.connections == 2


async def test_a_pooled_connection_the_server_closed_is_replaced():
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer(b"ok")(reader, writer)
        writer.close()  # keep-alive announced, then closed while idle in our pool

    async with Server(once) as server:
        client = HTTPClient()
        assert await post(client, server) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await post(client, server) == (200, b"ok")
        await client.aclose()
    assert server.connections == 2


async def test_connections_idle_since_a_burst_are_closed(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(http1, "time", SimpleNamespace(monotonic=lambda: now[0]))
    async with Server(answer(b"ok")) as server:
        client = HTTPClient()
        await asyncio.gather(*(post(client, server) for _ in range(3)))  # three connections, idle from t=0
        # Then one call at a time: the newest connection, always usable, serves each of them.
        for now[0] in (http1.IDLE_SECONDS - 1, http1.IDLE_SECONDS + 2):
            assert await post(client, server) == (200, b"ok")
        for _ in range(100):  # until the server has seen the two stale ones closed
            if server.closed == 2:
                break
            await asyncio.sleep(0.01)
        assert (server.connections, server.closed) == (3, 2)
        await client.aclose()


async def test_connection_refused_is_a_transport_error():
    async with Server(answer(b"")) as server:
        endpoint = server.endpoint
    client = HTTPClient()
    with pytest.raises(TransportError, match="cannot connect"):
        await client.post(endpoint, b"{}", {})
    await client.aclose()


@pytest.mark.parametrize(
    "headers", [{"x-request-id": "a\r\nx-quorum-decision: forged"}, {"bad name": "v"}, {"x-ok": "nul\0"}]
)
async def test_header_injection_is_refused_before_anything_is_sent(headers):
    async with Server(answer(b"ok")) as server:
        client = HTTPClient()
        with pytest.raises(TransportError, match="cannot be sent"):
            await client.post(server.endpoint, b"{}", headers)
        await client.aclose()
    assert server.requests == []


async def test_an_oversized_body_is_an_error(monkeypatch):
    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 1000)
    async with Server(answer(b"x" * 2000)) as server:
        client = HTTPClient()
        with pytest.raises(TransportError, match="over 1000 bytes"):
            await post(client, server)
        await client.aclose()


async def test_max_connections_queues_the_calls_beyond_it():
    in_flight, peak = 0, 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        await answer(b"ok")(reader, writer)

    async with Server(script) as server:
        client = HTTPClient(max_connections=2)
        results = await asyncio.gather(*(post(client, server) for _ in range(6)))
        await client.aclose()
    assert results == [(200, b"ok")] * 6
    assert peak == 2 and server.connections == 2


async def test_https_verifies_the_server_certificate():
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with Server(answer(b"secret"), tls=server_tls) as server:
        client = HTTPClient(tls=trusting)
        assert await post(client, server) == (200, b"secret")
        await client.aclose()
        stranger = HTTPClient()  # the system trust store does not know this CA
        with pytest.raises(TransportError, match="cannot connect"):
            await post(stranger, server)
        await stranger.aclose()


def test_endpoint_parsing():
    e = Endpoint.parse("https://api.example.com/v1/chat/completions")
    assert (e.scheme, e.host, e.port, e.target, e.authority) == (
        "https",
        "api.example.com",
        443,
        "/v1/chat/completions",
        "api.example.com",
    )
    assert Endpoint.parse("http://[::1]:8000/v1/x?a=b").authority == "[::1]:8000"
    assert Endpoint.parse("http://[::1]:8000/v1/x?a=b").target == "/v1/x?a=b"
    with pytest.raises(ValueError):
        Endpoint.parse("ftp://host/x")
