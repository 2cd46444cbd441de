"""Request rewrites for OpenAI-compatible servers that differ from OpenAI (`providers.models[].dialect`).

`llama_cpp` (llama-cpp-python's server, measured in docs/real-models.md):
- system/developer messages are dropped by chat formats such as `gemma`: fold them into the first user
  message, so a judge's or synthesiser's briefing reaches the model;
- only `max_tokens` caps the answer (`max_completion_tokens` is ignored: a judge would run to n_ctx);
- `response_format: json_schema` is a 500; its `json_object` + `schema` form constrains the same way;
- any `x-request-id` that is not a UUID is an empty 400: send a fresh UUID instead;
- `logprobs: true` alone returns `logprobs: null`: logprobs come only with `top_logprobs` set.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

Dialect = Literal["openai", "llama_cpp"]


def adapt_body(dialect: Dialect, body: dict[str, Any]) -> dict[str, Any]:
    if dialect != "llama_cpp":
        return body
    out = dict(body)
    if "max_completion_tokens" in out:
        cap = out.pop("max_completion_tokens")
        out.setdefault("max_tokens", cap)
    fmt = out.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        out["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    if out.get("logprobs") is True and not out.get("top_logprobs"):
        out["top_logprobs"] = 1
    if isinstance(out.get("messages"), list):
        out["messages"] = fold_system_messages(out["messages"])
    return out


def fold_system_messages(messages: list[Any]) -> list[Any]:
    """System/developer text moves to the front of the first user message (or becomes one)."""
    briefing = [m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")]
    if not briefing:
        return messages
    text = "\n\n".join(_text(m.get("content")) for m in briefing)
    rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))]
    for i, message in enumerate(rest):
        if isinstance(message, dict) and message.get("role") == "user":
            folded = {**message, "content": f"{text}\n\n{_text(message.get('content'))}"}
            return [*rest[:i], folded, *rest[i + 1 :]]
    return [{"role": "user", "content": text}, *rest]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def adapt_headers(dialect: Dialect, headers: Mapping[str, str]) -> dict[str, str]:
    out = dict(headers)
    if dialect == "llama_cpp" and "x-request-id" in out:
        try:
            uuid.UUID(out["x-request-id"])
        except ValueError:
            out["x-request-id"] = str(uuid.uuid4())
    return out
