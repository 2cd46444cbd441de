"""What the client gets from a local run: an OpenAI chat.completion (or chunks) plus the run's trace.

The trace sits under the algorithm's name (`"fusion": {...}`, `"confidence": {...}`), in the JSON
body or, when streaming, in a chunk with no choices just before the usage chunk and `[DONE]`.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from extproc.algorithms.trace import RunTrace
from extproc.sse import DONE, encode_event


def completion_id() -> str:
    return f"chatcmpl-quorum-{secrets.token_hex(12)}"


def render_completion(model: str, message: dict[str, Any], finish_reason: str, trace: RunTrace) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": trace.usage.as_dict(),
        trace.algorithm: trace.as_dict(),
    }


class ChunkWriter:
    """Renders `chat.completion.chunk` SSE events that share one id, created time and model."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            data["usage"] = None
        data.update(extra)
        return encode_event(data)

    def closing(self, trace: RunTrace) -> bytes:
        """The trace (as a chunk with no choices), the usage chunk if asked for, and [DONE]."""
        out = self.chunk([], **{trace.algorithm: trace.as_dict()})
        if self.include_usage:
            out += self.chunk([], usage=trace.usage.as_dict())
        return out + DONE


def role_delta() -> dict[str, Any]:
    return {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}


def message_chunks(writer: ChunkWriter, message: dict[str, Any], finish_reason: str) -> bytes:
    """A whole answer as SSE, for the buffered mode: role, content pieces, tool calls, finish."""
    out = writer.chunk([role_delta()])
    content = message.get("content") or ""
    for start in range(0, len(content), 256):
        out += writer.chunk([{"index": 0, "delta": {"content": content[start : start + 256]}, "finish_reason": None}])
    for i, call in enumerate(message.get("tool_calls") or []):
        delta = {"tool_calls": [{"index": i, **call}]}
        out += writer.chunk([{"index": 0, "delta": delta, "finish_reason": None}])
    return out + writer.chunk([{"index": 0, "delta": {}, "finish_reason": finish_reason}])
