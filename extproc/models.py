"""Calls Quorum makes to models itself (fusion): pooled connections, retries with backoff, usage, SSE.

Only configured models are ever called, at their configured `base_url`; nothing a client sends
can change the URL. `Authorization` comes from the model's `api_key_env`, and the request id is
propagated so one client request can be followed across every model call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.trace import Span

from extproc.dialects import adapt_body, adapt_headers
from extproc.http1 import Endpoint, HTTPClient, TransportError
from extproc.modeltypes import Completion, ModelCallError, RetryPolicy, Usage
from extproc.runtime import Model
from extproc.sse import SSEDecoder
from extproc.telemetry.recorder import end_model_span, inject_context, start_model_span
from extproc.telemetry.setup import NO_TELEMETRY, Telemetry

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# A model that answers these (or cannot be reached, resets, or times out) hands the call to its `fallbacks`.
FAILOVER_STATUSES = frozenset({429, 502, 503, 504})
ONCE = RetryPolicy(attempts=1)


def fails_over(err: ModelCallError) -> bool:
    """Whether the next model of the fallback chain should get the call (the backend failed, not the request)."""
    return err.status is None or err.status in FAILOVER_STATUSES


@dataclass
class ModelClient:
    """Chat completions over pooled keep-alive connections to every backend (`extproc.http1`)."""

    telemetry: Telemetry = field(default_factory=lambda: NO_TELEMETRY)
    max_connections: int = 512
    _http: HTTPClient | None = None
    _endpoints: dict[str, Endpoint] = field(default_factory=dict)

    @property
    def http(self) -> HTTPClient:
        """Created on first use, inside the running event loop."""
        if self._http is None:
            self._http = HTTPClient(max_connections=self.max_connections)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _request(
        self, model: Model, body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[Endpoint, bytes, dict[str, str]]:
        endpoint = self._endpoints.get(model.base_url)
        if endpoint is None:
            endpoint = self._endpoints[model.base_url] = Endpoint.parse(f"{model.base_url}/chat/completions")
        out = adapt_headers(model.dialect, {"content-type": "application/json", "user-agent": "quorum", **headers})
        if model.authorization:
            out["authorization"] = model.authorization
        payload = adapt_body(model.dialect, {**body, "model": model.upstream_model})
        return endpoint, orjson.dumps(payload), out

    async def complete(
        self,
        model: Model,
        body: dict[str, Any],
        *,
        time_limit: float,
        retry: RetryPolicy,
        headers: Mapping[str, str] | None = None,
        parent: Span | None = None,
    ) -> Completion:
        """One non-streaming chat completion, retried on 429/5xx/connection errors within `time_limit` seconds.

        If `model` still fails (see `fails_over`), each of its `fallbacks` is tried once, in order, with its own
        `time_limit`; the completion names the model that answered, its usage and latency cover every model tried.
        """
        started, spent = time.monotonic(), Usage()
        chain = ((model, retry), *((fallback, ONCE) for fallback in model.fallback_models))
        for i, (candidate, policy) in enumerate(chain):
            try:
                completion = await self._complete_one(candidate, body, time_limit, policy, headers, parent)
            except ModelCallError as err:
                spent.add(err.usage)
                if i == len(chain) - 1 or not fails_over(err):
                    err.usage = spent
                    raise
                continue
            completion.usage.add(spent)
            completion.fallback_for = model.name if candidate is not model else None
            completion.latency = time.monotonic() - started
            return completion
        raise AssertionError("unreachable: the chain is never empty")

    async def _complete_one(
        self,
        model: Model,
        body: dict[str, Any],
        time_limit: float,
        retry: RetryPolicy,
        headers: Mapping[str, str] | None,
        parent: Span | None,
    ) -> Completion:
        span = start_model_span(self.telemetry, parent, model, body)
        call_headers = dict(headers or {})
        inject_context(span if span.is_recording() else (parent or span), call_headers)
        try:
            completion = await self._complete(model, body, time_limit, retry, call_headers)
        except ModelCallError as err:
            end_model_span(self.telemetry, span, usage=err.usage, error=_error_type(err))
            raise
        except BaseException as exc:  # cancelled (quorum reached, client gone)
            end_model_span(self.telemetry, span, error=type(exc).__name__)
            raise
        end_model_span(
            self.telemetry,
            span,
            response_model=completion.response_model,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            content=completion.content,
        )
        return completion

    async def _complete(
        self, model: Model, body: dict[str, Any], time_limit: float, retry: RetryPolicy, headers: dict[str, str]
    ) -> Completion:
        started = time.monotonic()
        usage = Usage()
        attempt = 0
        try:
            async with asyncio.timeout(time_limit):
                while True:
                    attempt += 1
                    endpoint, payload, call_headers = self._request(model, body, headers)
                    try:
                        response = await self.http.post(endpoint, payload, call_headers)
                        status, raw = response.status, await response.read()
                    except TransportError as exc:
                        error = ModelCallError(model.name, f"connection error: {exc}")
                    else:
                        data = _json_bytes(raw)
                        usage.add(Usage.parse(data.get("usage")) if isinstance(data, dict) else None)
                        if status == 200:
                            return _completion(model.name, data, usage, time.monotonic() - started, attempt)
                        error = ModelCallError(model.name, _error_text(status, data), status)
                        if status not in RETRY_STATUSES:
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
        parent: Span | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """A streaming chat completion as parsed `chat.completion.chunk` objects (usage chunk included).

        Fails over to the model's `fallbacks` like `complete`, but only before the first chunk was yielded:
        after that the caller may have sent bytes to the client, and an answer cannot be taken back.
        """
        chain = (model, *model.fallback_models)
        for i, candidate in enumerate(chain):
            yielded = False
            try:
                async for chunk in self._stream_one(candidate, body, headers, parent):
                    yielded = True
                    yield chunk
                return
            except ModelCallError as err:
                if yielded or i == len(chain) - 1 or not fails_over(err):
                    raise

    async def _stream_one(
        self, model: Model, body: dict[str, Any], headers: Mapping[str, str] | None, parent: Span | None
    ) -> AsyncIterator[dict[str, Any]]:
        payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        span = start_model_span(self.telemetry, parent, model, payload)
        call_headers = dict(headers or {})
        inject_context(span if span.is_recording() else (parent or span), call_headers)
        usage, finish, text, response_model, error = Usage(), None, [], None, None
        try:
            async for chunk in self._stream(model, payload, call_headers):
                response_model = response_model or chunk.get("model")
                usage.add(Usage.parse(chunk.get("usage")))
                for choice in chunk.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    text.append((choice.get("delta") or {}).get("content") or "")
                yield chunk
        except ModelCallError as err:
            error = _error_type(err)
            raise
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            end_model_span(
                self.telemetry,
                span,
                response_model=response_model,
                usage=usage,
                finish_reason=finish,
                content="".join(text),
                error=error,
            )

    async def _stream(
        self, model: Model, payload: dict[str, Any], headers: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        endpoint, data, call_headers = self._request(model, payload, headers)
        try:
            response = await self.http.post(endpoint, data, call_headers)
        except TransportError as exc:
            raise ModelCallError(model.name, f"connection error: {exc}") from None
        try:
            if response.status != 200:
                body = _json_bytes(await response.read())
                raise ModelCallError(model.name, _error_text(response.status, body), response.status)
            decoder = SSEDecoder()
            done = False
            try:
                async for raw in response.chunks():
                    for event in decoder.feed(raw):
                        if event == "[DONE]":
                            done = True
                            continue
                        chunk = orjson.loads(event)
                        if isinstance(chunk, dict):
                            yield chunk
            except TransportError as exc:
                raise ModelCallError(model.name, f"stream broken: {exc}") from None
            if not done:
                raise ModelCallError(model.name, "stream ended without [DONE]")
        finally:
            response.release()


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
    finish = choice.get("finish_reason") or "stop"
    return Completion(model, message, finish, usage, latency, attempts, data.get("model"), _logprobs(choice))


def _logprobs(choice: dict[str, Any]) -> list[float] | None:
    """`choices[0].logprobs.content[*].logprob` (OpenAI's shape, also llama.cpp's and vLLM's)."""
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(content, list):
        return None
    values = [t.get("logprob") for t in content if isinstance(t, dict)]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return numbers if numbers and len(numbers) == len(content) else None


def _error_type(err: ModelCallError) -> str:
    """A low-cardinality `error.type`: the HTTP status, or the kind of failure."""
    if err.status is not None:
        return str(err.status)
    return err.reason.split(":")[0].split(" after")[0].replace(" ", "_")
