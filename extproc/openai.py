"""The OpenAI wire format: parse and validate chat requests, render errors and the model list.

Validation is hand-written on purpose: it runs on every request, checks only what routing and
the backends rely on, and names the offending field (`messages[2].role`) the way OpenAI does.
Unknown top-level fields pass through untouched; the backend judges those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from extproc.errors import BadRequest
from extproc.jsonsplice import model_span, replace_top_level

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES_WITH_TEXT = frozenset({"text", "input_text"})


def _last_user(messages: list[dict[str, Any]]) -> str:
    return next((message_text(m) for m in reversed(messages) if m["role"] == "user"), "")


TEXT_SCOPES: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "last_user": _last_user,
    "user": lambda ms: "\n".join(message_text(m) for m in ms if m["role"] == "user"),
    "conversation": lambda ms: "\n".join(message_text(m) for m in ms),
    "conversation_no_system": lambda ms: "\n".join(
        message_text(m) for m in ms if m["role"] not in ("system", "developer")
    ),
}


class ChatRequest:
    """A validated `/v1/chat/completions` body. Derived texts are computed on first use, once."""

    __slots__ = ("_folded", "_texts", "_token_estimate", "body", "model", "raw", "stream")

    def __init__(self, body: dict[str, Any], raw: bytes) -> None:
        self.body = body
        self.raw = raw  # as the client sent it: routed bodies are spliced from it, never re-encoded
        self.model: str = body["model"]
        self.stream: bool = body.get("stream") is True
        self._texts: dict[str, str] = {}
        self._folded: dict[str, str] = {}
        self._token_estimate: int | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    def text(self, scope: str) -> str:
        """The text signals read: `last_user` (default), `user`, `conversation` (system prompt
        included) or `conversation_no_system`."""
        text = self._texts.get(scope)
        if text is None:
            text = self._texts[scope] = TEXT_SCOPES[scope](self.messages)
        return text

    @property
    def last_user_text(self) -> str:
        return self.text("last_user")

    @property
    def user_text(self) -> str:
        return self.text("user")

    @property
    def conversation_text(self) -> str:
        return self.text("conversation")

    @property
    def token_estimate(self) -> int:
        """About four bytes per token over every message, plus a few tokens of framing per message."""
        if self._token_estimate is None:
            size = sum(len(message_text(m).encode()) for m in self.messages)
            self._token_estimate = (size + 3) // 4 + 4 * len(self.messages)
        return self._token_estimate

    def folded_text(self, scope: str) -> str:
        """`text(scope)` case-folded, computed once per request for every case-insensitive signal."""
        folded = self._folded.get(scope)
        if folded is None:
            folded = self._folded[scope] = self.text(scope).casefold()
        return folded

    def with_model(self, model: str, **fields: Any) -> bytes:
        """The body with another `model` (and top-level `fields`); every other byte is kept as sent."""
        return replace_top_level(self.raw, {"model": model, **fields})

    @property
    def wants_usage(self) -> bool:
        """A streaming client that asked for the final usage chunk."""
        options = self.body.get("stream_options")
        return bool(isinstance(options, dict) and options.get("include_usage"))


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if p.get("type") in _PART_TYPES_WITH_TEXT)
    return ""


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"We could not parse the JSON body of your request ({exc}). The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    _validate_chat(body)
    model_span(raw)  # refuses a duplicated top-level "model": router and backend could read different ones
    return ChatRequest(body, raw)


def _missing(param: str) -> BadRequest:
    return BadRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _invalid(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param, code="invalid_value")


def _validate_chat(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "'model' must be a non-empty string")
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "'messages' must be a non-empty array")
    for i, message in enumerate(messages):
        _validate_message(message, f"messages[{i}]")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "'stream' must be a boolean")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _invalid("stream_options", "'stream_options' must be an object")
        if stream is not True:
            raise _invalid("stream_options", "'stream_options' must only be set when 'stream' is true")
        if not isinstance(options.get("include_usage", False), bool):
            raise _invalid("stream_options.include_usage", "'stream_options.include_usage' must be a boolean")
    _validate_tools(body)
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _invalid(key, f"'{key}' must be a number")
    for key in ("max_tokens", "max_completion_tokens", "n", "seed"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _invalid(key, f"'{key}' must be an integer")
    n = body.get("n")
    if n is not None and n < 1:
        raise _invalid("n", "'n' must be at least 1")


def _validate_message(message: Any, path: str) -> None:
    if not isinstance(message, dict):
        raise _invalid(path, f"'{path}' must be an object")
    role = message.get("role")
    if role is None:
        raise _missing(f"{path}.role")
    if not isinstance(role, str) or role not in ROLES:
        allowed = ", ".join(sorted(ROLES))
        raise _invalid(f"{path}.role", f"'{path}.role' must be one of: {allowed} (got {role!r})")
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call") or "content" in message):
            return
        if role == "assistant":
            raise _invalid(f"{path}.content", f"'{path}.content' must be set unless tool_calls is")
        raise _missing(f"{path}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(f"{path}.content", f"'{path}.content' must be a string or an array of content parts")
    for j, part in enumerate(content):
        part_path = f"{path}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _invalid(f"{part_path}.type", f"'{part_path}' must be an object with a string 'type'")
        if part["type"] in _PART_TYPES_WITH_TEXT and not isinstance(part.get("text"), str):
            raise _invalid(f"{part_path}.text", f"'{part_path}.text' must be a string")


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _invalid("tools", "'tools' must be an array")
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _invalid(f"{path}.type", f"'{path}' must be an object with a string 'type'")
        if tool["type"] == "function":
            function = tool.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise _invalid(f"{path}.function.name", f"'{path}.function.name' must be a string")


def render_model_list(names: Iterable[tuple[str, str]], created: int) -> bytes:
    """`GET /v1/models`: every name a client may send, with who serves it."""
    data = [{"id": name, "object": "model", "created": created, "owned_by": owner} for name, owner in names]
    return orjson.dumps({"object": "list", "data": data})


def render_model(name: str, owner: str, created: int) -> bytes:
    return orjson.dumps({"id": name, "object": "model", "created": created, "owned_by": owner})
