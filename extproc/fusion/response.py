"""What the client gets from a fusion run: an OpenAI chat.completion (or chunks) plus a `fusion` trace."""

from __future__ import annotations

import secrets
import time
from typing import Any

from extproc.fusion.looper import Deliberation, FinalAnswer
from extproc.modeltypes import Usage
from extproc.sse import DONE, encode_event


def completion_id() -> str:
    return f"chatcmpl-quorum-{secrets.token_hex(12)}"


def total_usage(d: Deliberation, final: FinalAnswer) -> Usage:
    usage = Usage()
    usage.add(d.usage)
    usage.add(final.usage)
    return usage


def trace(d: Deliberation, final: FinalAnswer) -> dict[str, Any]:
    plan, cfg = d.plan, d.plan.config
    labels = {c.model: name for name, c in d.labelled}
    out: dict[str, Any] = {
        "decision": plan.decision,
        "judge_model": plan.judge.name,
        "analysis_models": [m.name for m in plan.panel],
        "prompt_version": cfg.judge_prompt_version,
        "failed_models": [{"model": e.model, "error": e.reason} for e in d.panel.failures],
        "cancelled_models": list(d.panel.cancelled),
        "degraded": list(d.degraded),
        "latency_ms": {
            "panel": _ms(d.panel.latency),
            "judge": _ms(d.judge.latency),
            "synthesis": _ms(final.latency),
            "total": _ms(time.monotonic() - d.started),
        },
    }
    if d.judge.error:
        out["judge_error"] = d.judge.error
    if final.error:
        out["synthesis_error"] = final.error
    if cfg.include_analysis:
        out["analysis"] = d.judge.analysis
    if cfg.include_intermediate_responses:
        out["responses"] = [
            {
                "model": c.model,
                "label": labels[c.model],
                "content": c.content,
                "finish_reason": c.finish_reason,
                "latency_ms": _ms(c.latency),
                "usage": c.usage.as_dict(),
            }
            for c in d.panel.answers
        ]
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def render_completion(model: str, d: Deliberation, final: FinalAnswer) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": final.message, "logprobs": None, "finish_reason": final.finish_reason}],
        "usage": total_usage(d, final).as_dict(),
        "fusion": trace(d, final),
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

    def closing(self, d: Deliberation, final: FinalAnswer) -> bytes:
        """The trace (as a chunk with no choices), the usage chunk if asked for, and [DONE]."""
        out = self.chunk([], fusion=trace(d, final))
        if self.include_usage:
            out += self.chunk([], usage=total_usage(d, final).as_dict())
        return out + DONE


def message_chunks(writer: ChunkWriter, final: FinalAnswer) -> bytes:
    """A whole answer as SSE, for the buffered mode: role, content pieces, tool calls, finish."""
    message = final.message
    out = writer.chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    content = message.get("content") or ""
    for start in range(0, len(content), 256):
        out += writer.chunk([{"index": 0, "delta": {"content": content[start : start + 256]}, "finish_reason": None}])
    for i, call in enumerate(message.get("tool_calls") or []):
        delta = {"tool_calls": [{"index": i, **call}]}
        out += writer.chunk([{"index": 0, "delta": delta, "finish_reason": None}])
    return out + writer.chunk([{"index": 0, "delta": {}, "finish_reason": final.finish_reason}])
