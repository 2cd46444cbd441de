"""Calls Quorum makes to models itself (fusion): pooled httpx, retries with backoff, usage, SSE.

Only configured models are ever called, at their configured `base_url`; nothing a client sends
can change the URL. `Authorization` comes from the model's `api_key_env`, and the request id is
propagated so one client request can be followed across every model call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from extproc.runtime import Model
from extproc.sse import SSEDecoder

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: Usage | None) -> None:
        if other is not None:
            self.prompt_tokens += other.prompt_tokens
            self.completion_tokens += other.completion_tokens
            self.total_tokens += other.total_tokens

    @classmethod
    def parse(cls, data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None
        prompt = int(data.get("prompt_tokens") or 0)
        completion = int(data.get("completion_tokens") or 0)
        return cls(prompt, completion, int(data.get("total_tokens") or prompt + completion))

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class Completion:
    model: str  # the configured name that was called
    message: dict[str, Any]
    finish_reason: str
    usage: Usage  # summed over every attempt that reported usage
    latency: float  # seconds, all attempts included
    attempts: int

    @property
    def content(self) -> str:
        content = self.message.get("content")
        return content if isinstance(content, str) else ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2
    backoff: float = 0.2
    max_backoff: float = 5.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return base * (0.5 + random.random() / 2)  # jitter keeps a panel's retries from marching in step


class ModelCallError(Exception):
    def __init__(self, model: str, reason: str, status: int | None = None, usage: Usage | None = None) -> None:
        super().__init__(f"{model}: {reason}")
        self.model = model
        self.reason = reason
        self.status = status
        self.usage = usage or Usage()


@dataclass
class ModelClient:
    http: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(
            http2=True,
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )
    )

    async def aclose(self) -> None:
        await self.http.aclose()

    def _request(self, model: Model, body: dict[str, Any], headers: Mapping[str, str]) -> httpx.Request:
        out = {"content-type": "application/json", **headers}
        if model.authorization:
            out["authorization"] = model.authorization
        payload = {**body, "model": model.upstream_model}
        return self.http.build_request(
            "POST", f"{model.base_url}/chat/completions", content=orjson.dumps(payload), headers=out
        )

    async def complete(
        self,
        model: Model,
        body: dict[str, Any],
        *,
        time_limit: float,
        retry: RetryPolicy,
        headers: Mapping[str, str] | None = None,
    ) -> Completion:
        """One non-streaming chat completion, retried on 429/5xx/connection errors within `time_limit` seconds."""
        started = time.monotonic()
        usage = Usage()
        attempt = 0
        try:
            async with asyncio.timeout(time_limit):
                while True:
                    attempt += 1
                    try:
                        response = await self.http.send(self._request(model, body, headers or {}))
                    except httpx.TransportError as exc:
                        error = ModelCallError(model.name, f"connection error: {type(exc).__name__}")
                    else:
                        data = _json(response)
                        usage.add(Usage.parse(data.get("usage")) if isinstance(data, dict) else None)
                        if response.status_code == 200:
                            return _completion(model.name, data, usage, time.monotonic() - started, attempt)
                        error = ModelCallError(
                            model.name, _error_text(response.status_code, data), response.status_code
                        )
                        if response.status_code not in RETRY_STATUSES:
                            raise error
                    if attempt >= retry.attempts:
                        raise error
                    await asyncio.sleep(retry.delay(attempt))
        except TimeoutError:
            raise ModelCallError(model.name, f"timed out after {time_limit:g}s", usage=usage) from None
        except ModelCallError as err:
            err.usage = usage
            raise

    async def stream(
        self,
        model: Model,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """A streaming chat completion as parsed `chat.completion.chunk` objects (usage chunk included)."""
        payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        request = self._request(model, payload, headers or {})
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise ModelCallError(model.name, f"connection error: {type(exc).__name__}") from None
        try:
            if response.status_code != 200:
                data = _json_bytes(await response.aread())
                raise ModelCallError(model.name, _error_text(response.status_code, data), response.status_code)
            decoder = SSEDecoder()
            done = False
            try:
                async for raw in response.aiter_bytes():
                    for data in decoder.feed(raw):
                        if data == "[DONE]":
                            done = True
                            continue
                        chunk = orjson.loads(data)
                        if isinstance(chunk, dict):
                            yield chunk
            except httpx.TransportError as exc:
                raise ModelCallError(model.name, f"stream broken: {type(exc).__name__}") from None
            if not done:
                raise ModelCallError(model.name, "stream ended without [DONE]")
        finally:
            await response.aclose()


def _json(response: httpx.Response) -> Any:
    return _json_bytes(response.content)


def _json_bytes(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _error_text(status: int, data: Any) -> str:
    message = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = data["error"].get("message")
    return f"HTTP {status}" + (f": {str(message)[:200]}" if message else "")


def _completion(model: str, data: Any, usage: Usage, latency: float, attempts: int) -> Completion:
    try:
        choice = data["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise ModelCallError(model, "malformed response: no choices[0].message", 200) from None
    return Completion(model, message, choice.get("finish_reason") or "stop", usage, latency, attempts)
