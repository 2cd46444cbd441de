"""`POST /v1/responses` (the OpenAI Responses API): parse, validate, and read its text for signals.

The request is checked only as far as routing relies on it; unknown fields and item types pass to
the backend untouched. For the signals, `instructions` count as a system message and every input
item with a role (or a function call output, as a tool message) as a message, so the chat text
scopes (`last_user`, `conversation`, ...) mean the same thing here.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.endpoints.base import Endpoint
from extproc.endpoints.responses_format import ResponsesRenderer
from extproc.endpoints.responses_local import local_chat_request
from extproc.openai import ChatRequest, invalid, load_object, missing, role_of, typed_items, validate_numbers
from extproc.telemetry.usage import StreamUsage, Usage

# Stream events that end a response and carry its usage in `response.usage`.
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})

ITEM_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


class ResponsesRequest(ChatRequest):
    """A validated Responses body; `messages` is its text as chat-style messages, for signals."""

    __slots__ = ("_messages",)

    def __init__(self, body: dict[str, Any], raw: bytes, messages: list[dict[str, Any]]) -> None:
        super().__init__(body, raw)
        self._messages = messages

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self._messages


class ResponsesEndpoint(Endpoint):
    """Responses streams always end with `response.completed` and its usage: nothing to ask for."""

    name = "responses"
    answers_locally = True

    def local_request(self, request: ResponsesRequest) -> ChatRequest:
        return local_chat_request(request.body)

    def renderer(self, request: ResponsesRequest) -> ResponsesRenderer:
        return ResponsesRenderer(request.model)

    def parse(self, raw: bytes) -> ResponsesRequest:
        body = load_object(raw)
        return ResponsesRequest(body, raw, validate_responses(body))

    def json_usage(self, body: bytes) -> Usage | None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return responses_usage(data.get("usage")) if isinstance(data, dict) else None

    def stream_usage(self, strip: bool) -> StreamUsage:
        return ResponsesStreamUsage()


def responses_usage(data: object) -> Usage | None:
    """Responses count `input_tokens` / `output_tokens`; Quorum's Usage speaks chat's names."""
    if not isinstance(data, dict):
        return None
    names = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens", "total_tokens": "total_tokens"}
    return Usage.parse({ours: data.get(theirs) for ours, theirs in names.items()})


class ResponsesStreamUsage(StreamUsage):
    __slots__ = ()

    def chunk_usage(self, chunk: dict[str, object]) -> Usage | None:
        if chunk.get("type") not in FINAL_EVENTS:
            return None
        self.done = True  # no `data: [DONE]` in a Responses stream: the final event ends it
        response = chunk.get("response")
        return responses_usage(response.get("usage")) if isinstance(response, dict) else None


def validate_responses(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Check `body`; return its text as chat-style messages (instructions first)."""
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "'model' must be a non-empty string")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions", "'instructions' must be a string")
        messages.append({"role": "system", "content": instructions})
    source = body.get("input")
    if source is None:
        raise missing("input")
    if isinstance(source, str):
        messages.append({"role": "user", "content": source})
    elif isinstance(source, list):
        messages.extend(_item_messages(source))
    else:
        raise invalid("input", "'input' must be a string or an array of input items")
    for key in ("stream", "store", "background", "parallel_tool_calls"):
        value = body.get(key)
        if value is not None and not isinstance(value, bool):
            raise invalid(key, f"'{key}' must be a boolean")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise invalid("previous_response_id", "'previous_response_id' must be a non-empty string")
    _validate_tools(body.get("tools"))
    validate_numbers(body, ("temperature", "top_p"), ("max_output_tokens", "max_tool_calls", "top_logprobs"))
    return messages


def _item_messages(items: list[Any]) -> list[dict[str, Any]]:
    messages = []
    for i, item in enumerate(items):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(path, f"'{path}' must be an object")
        kind = item.get("type")
        if kind is not None and not isinstance(kind, str):
            raise invalid(f"{path}.type", f"'{path}.type' must be a string")
        if "role" in item or kind == "message":
            messages.append(
                {"role": role_of(item, path, ITEM_ROLES), "content": _content_text(item.get("content"), path)}
            )
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str) else ""})
        elif kind is None:
            raise invalid(f"{path}.type", f"'{path}' must have a 'role' or a 'type'")
    return messages


def _content_text(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part_path, part in typed_items(content, f"{path}.content", "a string or an array of content parts"):
        if part["type"] in _TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{part_path}.text", f"'{part_path}.text' must be a string")
            texts.append(text)
    return " ".join(texts)


def _validate_tools(tools: Any) -> None:
    """Responses function tools are flat: `{"type": "function", "name": ..., "parameters": ...}`."""
    if tools is None:
        return
    for path, tool in typed_items(tools, "tools", "an array"):
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise invalid(f"{path}.name", f"'{path}.name' must be a string")
