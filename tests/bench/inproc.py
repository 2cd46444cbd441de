"""Quorum's own work per request, without gRPC, Envoy or sockets: a lower bound for its CPU cost.

Feeds the serialized request_headers and request_body messages Envoy would send through
`StreamHandler` and serializes the answers, as the servicer does, in a loop. Comparing this with the
CPU the `quorum serve` process spends per request under load separates Quorum's logic from the
gRPC framework around it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from extproc.config import load_config
from extproc.handler import StreamHandler
from extproc.pb import core, ep
from extproc.runtime import Runtime, build_runtime


def _headers_message(body_size: int) -> bytes:
    """The request_headers message Envoy sends for a wrk POST (same header set, same order)."""
    pairs = {
        ":authority": "127.0.0.1",
        ":path": "/v1/chat/completions",
        ":method": "POST",
        ":scheme": "http",
        "content-length": str(body_size),
        "content-type": "application/json",
        "x-forwarded-proto": "http",
        "x-request-id": "0b9c0f3e-6a44-4d8e-9b8f-1f2e3d4c5b6a",
    }
    headers = core.HeaderMap(headers=[core.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()])
    return ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=headers)).SerializeToString()


def request_messages(body: bytes) -> list[bytes]:
    """The serialized request_headers and request_body messages Envoy sends for one POST of `body`."""
    return [
        _headers_message(len(body)),
        ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)).SerializeToString(),
    ]


async def handle(runtime: Runtime, messages: list[bytes]) -> ep.ProcessingResponse:
    """One request through a new StreamHandler, parsing and serializing as the servicer does; the last answer."""
    handler = StreamHandler(runtime)
    last = ep.ProcessingResponse()
    for raw in messages:
        async for response in handler.handle(ep.ProcessingRequest.FromString(raw)):
            response.SerializeToString()
            last = response
    return last


def handler_us_per_request(config_path: Path, body: bytes, seconds: float = 0.5) -> float:
    """Microseconds of Quorum's handler work per request (headers + body phase), best of 3 batches."""
    runtime = build_runtime(load_config(config_path))
    messages = request_messages(body)

    async def one() -> ep.ProcessingResponse:
        return await handle(runtime, messages)

    async def batch(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await one()
        return (time.perf_counter() - start) / n

    async def measure() -> float:
        last = await one()
        if last.WhichOneof("response") != "request_body" or not last.request_body.response.clear_route_cache:
            raise RuntimeError(f"the handler did not route the request: {last}")
        per = await batch(10)
        n = max(10, int(seconds / 3 / max(per, 1e-6)))
        return min([await batch(n) for _ in range(3)]) * 1e6

    return asyncio.run(measure())
