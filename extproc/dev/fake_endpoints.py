"""The fake backend's `/v1/responses`, `/v1/completions` and `/v1/embeddings`.

Like chat, each answer names the backend (`[<backend model>] <text>`), the response's `model`
repeats the request's, requests are recorded for `/_fake/requests`, and `x-fake-status` /
`x-fake-delay-ms` headers (or `[[fake:...]]` blocks in the text) inject failures. Embeddings are a
small deterministic vector per input (from a hash of the text and the backend name).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from extproc.dev.fake_backend import _ERROR_TYPES, BACKEND, _error_body, _parse_directives, _send
from extproc.endpoints.responses_format import ResponseWriter

# (request, body, prompt text, reply text, the request's record) -> the response written
Answer = Callable[[web.Request, dict[str, Any], str, str, dict[str, Any]], Awaitable[web.StreamResponse]]


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _responses_text(body: dict[str, Any]) -> str:
    """The last user text of a Responses `input` (a string or message items)."""
    source = body.get("input")
    if isinstance(source, str):
        return source
    for item in reversed(source if isinstance(source, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            parts = content if isinstance(content, list) else []
            return " ".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "input_text")
    return ""


def _usage(prompt: str, answer: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = math.ceil(len(prompt) / 4) + 3, answer.count(" ") + 1 if answer else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _handler(
    text_of: Callable[[dict[str, Any]], str], answer: Answer
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Shared by every endpoint: record, parse, apply the directives, then `answer`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        backend = request.app[BACKEND]
        record = backend.new_record(request)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            error = _error_body("request body must be a JSON object with a model", "invalid_request_error", "model")
            return await _send(request, web.Response(status=400, body=error, content_type="application/json"), record)
        record["body"] = body
        directives, text = _parse_directives(record["headers"], text_of(body), backend.model)
        if backend.latency_ms + directives.delay_ms:
            await asyncio.sleep((backend.latency_ms + directives.delay_ms) / 1000)
        if directives.status != 200:
            kind = _ERROR_TYPES.get(
                directives.status, "server_error" if directives.status >= 500 else "invalid_request_error"
            )
            error = _error_body(f"injected failure (status {directives.status})", kind)
            response = web.Response(status=directives.status, body=error, content_type="application/json")
            return await _send(request, response, record)
        response = await answer(request, body, text, f"[{backend.model}] {text}".rstrip(), record)
        record["status"], record["completed"] = response.status, True
        return response

    return handle


async def _responses(
    request: web.Request, body: dict[str, Any], text: str, reply: str, record: dict[str, Any]
) -> web.StreamResponse:
    writer = ResponseWriter(body["model"])
    usage = record["usage"] = _usage(text, reply)
    message = {"role": "assistant", "content": reply}
    if body.get("stream") is not True:
        return web.Response(
            body=orjson.dumps(writer.response("completed", message, usage)), content_type="application/json"
        )
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    await response.write(writer.opening())
    for word in reply.split(" "):
        await response.write(writer.delta(word if not writer.text else " " + word))
    await response.write(writer.closing(message, usage))
    await response.write_eof()
    return response


async def _completions(
    request: web.Request, body: dict[str, Any], text: str, reply: str, record: dict[str, Any]
) -> web.StreamResponse:
    base = {
        "id": "cmpl-" + secrets.token_hex(12),
        "object": "text_completion",
        "created": int(time.time()),
        "model": body["model"],
    }
    usage = record["usage"] = _usage(text, reply)
    if body.get("stream") is not True:
        choice = {"index": 0, "text": reply, "logprobs": None, "finish_reason": "stop"}
        return web.Response(
            body=orjson.dumps({**base, "choices": [choice], "usage": usage}), content_type="application/json"
        )
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    for piece, finish in ((reply, None), ("", "stop")):
        chunk = {**base, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}]}
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        await response.write(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _embeddings(
    request: web.Request, body: dict[str, Any], text: str, reply: str, record: dict[str, Any]
) -> web.StreamResponse:
    backend = request.app[BACKEND]
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
    data = [
        {"object": "embedding", "index": i, "embedding": _vector(f"{backend.model}:{item}")}
        for i, item in enumerate(items)
    ]
    tokens = sum(math.ceil(len(str(item)) / 4) for item in items)
    payload = {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    record["usage"] = payload["usage"]
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _vector(seed: str) -> list[float]:
    digest = hashlib.sha256(seed.encode()).digest()
    return [round(b / 255 - 0.5, 4) for b in digest[:8]]


def add_endpoint_routes(app: web.Application) -> None:
    app.router.add_post("/v1/responses", _handler(_responses_text, _responses))
    app.router.add_post("/v1/completions", _handler(lambda b: " ".join(_texts(b.get("prompt"))), _completions))
    app.router.add_post("/v1/embeddings", _handler(lambda b: " ".join(_texts(b.get("input"))), _embeddings))
