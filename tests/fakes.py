"""In-memory stand-ins for the seams: a scripted ModelClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from extproc.modeltypes import Completion, ModelCallError, RetryPolicy, Usage
from extproc.runtime import Model

Reply = str | ModelCallError | Callable[[dict[str, Any]], "str | ModelCallError"]


@dataclass
class Call:
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    cancelled: bool = False


@dataclass
class FakeModelClient:
    """Answers per model name: a text, an error, or a function of the request body.

    Every call reports usage (10 prompt, 5 completion); `delays` holds seconds per model.
    A list of replies is consumed one per call (the last one repeats).
    """

    replies: dict[str, Reply | list[Reply]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    finish_reasons: dict[str, str] = field(default_factory=dict)
    logprobs: dict[str, list[float] | None] = field(default_factory=dict)  # sent when a call asks for them
    calls: list[Call] = field(default_factory=list)

    def _reply(self, model: str, body: dict[str, Any]) -> str | ModelCallError:
        reply = self.replies.get(model, f"answer from {model}")
        if isinstance(reply, list):
            reply = reply.pop(0) if len(reply) > 1 else reply[0]
        return reply(body) if callable(reply) else reply

    async def complete(
        self,
        model: Model,
        body: dict[str, Any],
        *,
        time_limit: float,
        retry: RetryPolicy,
        headers: dict[str, str] | None = None,
        parent: Any = None,
    ) -> Completion:
        call = Call(model.name, body, dict(headers or {}))
        self.calls.append(call)
        try:
            async with asyncio.timeout(time_limit):
                await asyncio.sleep(self.delays.get(model.name, 0))
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        except TimeoutError:
            raise ModelCallError(model.name, f"timed out after {time_limit:g}s") from None
        reply = self._reply(model.name, body)
        if isinstance(reply, ModelCallError):
            reply.usage = Usage(1, 0, 1)  # a failed attempt may still be billed
            raise reply
        finish = self.finish_reasons.get(model.name, "stop")
        logprobs = self.logprobs.get(model.name) if body.get("logprobs") else None
        message = {"role": "assistant", "content": reply}
        return Completion(model.name, message, finish, Usage(10, 5, 15), 0.0, 1, logprobs=logprobs)

    async def stream(
        self, model: Model, body: dict[str, Any], *, headers: dict[str, str] | None = None, parent: Any = None
    ) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(Call(model.name, body, dict(headers or {})))
        reply = self._reply(model.name, body)
        if isinstance(reply, ModelCallError):
            raise reply
        for word in reply.split(" "):
            await asyncio.sleep(self.delays.get(model.name, 0))
            yield {"choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
