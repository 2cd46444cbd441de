"""Rendering the Responses API format: one `response` object, or its SSE event stream.

Used for answers Quorum produces itself (fusion) and by the fake backend. An answer is given as a
chat-style assistant message (`content`, optional `tool_calls`), which becomes an output message
item and one `function_call` item per tool call. Usage arrives in chat names and leaves in
Responses names (`input_tokens`, `output_tokens`).
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from extproc.algorithms.trace import RunTrace
    from extproc.errors import QuorumError


def responses_usage_body(usage: dict[str, int]) -> dict[str, Any]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.get("total_tokens", prompt + completion),
    }


class ResponseWriter:
    """One response: its id, the message item id, and the event sequence numbers."""

    def __init__(self, model: str) -> None:
        self.id = f"resp_{secrets.token_hex(16)}"
        self.message_id = f"msg_{secrets.token_hex(16)}"
        self.created_at = int(time.time())
        self.model = model
        self.sequence = 0
        self.text: list[str] = []  # streamed so far

    def response(
        self, status: str, message: dict[str, Any] | None, usage: dict[str, int] | None, **extra: Any
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": self.output(message) if message is not None else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": responses_usage_body(usage) if usage is not None else None,
            **extra,
        }

    def output(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        items = [self._message_item(message.get("content") or "", "completed")]
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "id": f"fc_{secrets.token_hex(16)}",
                    "call_id": call.get("id", ""),
                    "name": function.get("name", ""),
                    "arguments": function.get("arguments", ""),
                    "status": "completed",
                }
            )
        return items

    def _message_item(self, text: str, status: str) -> dict[str, Any]:
        content = [self._part(text)] if status == "completed" else []
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": content}

    @staticmethod
    def _part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    # ------------------------------------------------------------------ SSE events

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def opening(self) -> bytes:
        """`response.created` up to the (empty) text part the deltas fill."""
        pending = self.response("in_progress", None, None)
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        return (
            self.event("response.created", response=pending)
            + self.event("response.in_progress", response=pending)
            + self.event("response.output_item.added", output_index=0, item=self._message_item("", "in_progress"))
            + self.event("response.content_part.added", part=self._part(""), **where)
        )

    def delta(self, text: str) -> bytes:
        self.text.append(text)
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        return self.event("response.output_text.delta", delta=text, logprobs=[], **where)

    def closing(self, message: dict[str, Any], usage: dict[str, int], **extra: Any) -> bytes:
        """Text done, the tool calls as whole items, then `response.completed` with the usage."""
        text = "".join(self.text)
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        final = self.response("completed", {**message, "content": text}, usage, **extra)
        items = final["output"]
        out = (
            self.event("response.output_text.done", text=text, logprobs=[], **where)
            + self.event("response.content_part.done", part=self._part(text), **where)
            + self.event("response.output_item.done", output_index=0, item=items[0])
        )
        for index, item in enumerate(items[1:], start=1):
            out += self.event("response.output_item.added", output_index=index, item=item)
            out += self.event("response.output_item.done", output_index=index, item=item)
        return out + self.event("response.completed", response=final)

    def error_event(self, error: dict[str, Any]) -> bytes:
        """A failure after the stream started: the Responses `error` event."""
        return self.event("error", code=error.get("code"), message=error.get("message"), param=error.get("param"))


class ResponsesRenderer:
    """A local answer (chat-style message or choice deltas) as a `response` or its event stream."""

    def __init__(self, model: str) -> None:
        self.writer = ResponseWriter(model)
        self.message: dict[str, Any] = {"role": "assistant", "content": ""}
        self.calls: dict[int, dict[str, Any]] = {}  # streamed tool calls by index, arguments joined

    def json(self, message: dict[str, Any], finish_reason: str, trace: RunTrace) -> bytes:
        extra = {trace.algorithm: trace.as_dict()}
        return orjson.dumps(self.writer.response("completed", message, trace.usage.as_dict(), **extra))

    def stream_open(self) -> bytes:
        return self.writer.opening()

    def stream_delta(self, choice: dict[str, Any]) -> bytes:
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            known = self.calls.setdefault(call.get("index", 0), {"id": "", "function": {"name": "", "arguments": ""}})
            known["id"] = call.get("id") or known["id"]
            function = call.get("function") or {}
            known["function"]["name"] += function.get("name") or ""
            known["function"]["arguments"] += function.get("arguments") or ""
        text = delta.get("content")
        return self.writer.delta(text) if text else b""

    def stream_message(self, message: dict[str, Any], finish_reason: str) -> bytes:
        content = message.get("content") or ""
        self.calls = dict(enumerate(message.get("tool_calls") or []))
        pieces = [content[i : i + 256] for i in range(0, len(content), 256)]
        return self.writer.opening() + b"".join(self.writer.delta(p) for p in pieces)

    def stream_close(self, trace: RunTrace) -> bytes:
        message = {"role": "assistant", "tool_calls": [self.calls[i] for i in sorted(self.calls)]}
        return self.writer.closing(message, trace.usage.as_dict(), **{trace.algorithm: trace.as_dict()})

    def stream_error(self, error: QuorumError) -> bytes:
        return self.writer.error_event(error.to_openai()["error"])
