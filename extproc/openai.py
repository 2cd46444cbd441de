"""The OpenAI wire format: parse and validate chat requests, render errors and the model list.

Validation is hand-written on purpose: it runs on every request, checks only what routing and
the backends rely on, and names the offending field (`messages[2].role`) the way OpenAI does.
Unknown top-level fields pass through untouched; the backend judges those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from extproc.errors import BadRequest
from extproc.jsonsplice import refuse_duplicate_model, replace_top_level

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

    def __init__(self, body: dict[str, Any], raw: bytes | None = None) -> None:
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
        raw = self.raw if self.raw is not None else orjson.dumps(self.body)  # a body Quorum built itself
        return replace_top_level(raw, {"model": model, **fields})

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
    body = load_object(raw)
    _validate_chat(body)
    return ChatRequest(body, raw)


def load_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or the 400 OpenAI answers for anything else."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"We could not parse the JSON body of your request ({exc}). The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    refuse_duplicate_model(raw)  # router and backend could read different copies
    return body


def missing(param: str) -> BadRequest:
    return BadRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param, code="invalid_value")


def _validate_chat(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "'model' must be a non-empty string")
    messages = body.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "'messages' must be a non-empty array")
    for i, message in enumerate(messages):
        _validate_message(message, f"messages[{i}]")
    validate_chat_stream(body)
    _validate_tools(body)
    validate_numbers(
        body,
        ("temperature", "top_p", "presence_penalty", "frequency_penalty"),
        ("max_tokens", "max_completion_tokens", "n", "seed"),
    )
    n = body.get("n")
    if n is not None and n < 1:
        raise invalid("n", "'n' must be at least 1")


def validate_chat_stream(body: dict[str, Any]) -> None:
    """`stream` and `stream_options` as chat and legacy completions take them."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "'stream' must be a boolean")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid("stream_options", "'stream_options' must be an object")
        if stream is not True:
            raise invalid("stream_options", "'stream_options' must only be set when 'stream' is true")
        if not isinstance(options.get("include_usage", False), bool):
            raise invalid("stream_options.include_usage", "'stream_options.include_usage' must be a boolean")


def validate_numbers(body: dict[str, Any], numbers: Iterable[str], integers: Iterable[str]) -> None:
    """Optional numeric fields: null or absent is fine, a boolean is not a number."""
    for key in numbers:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise invalid(key, f"'{key}' must be a number")
    for key in integers:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise invalid(key, f"'{key}' must be an integer")


def _validate_message(message: Any, path: str) -> None:
    if not isinstance(message, dict):
        raise invalid(path, f"'{path}' must be an object")
    role = role_of(message, path, ROLES)
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call") or "content" in message):
            return
        if role == "assistant":
            raise invalid(f"{path}.content", f"'{path}.content' must be set unless tool_calls is")
        raise missing(f"{path}.content")
    if isinstance(content, str):
        return
    for part_path, part in typed_items(content, f"{path}.content", "a string or an array of content parts"):
        if part["type"] in _PART_TYPES_WITH_TEXT and not isinstance(part.get("text"), str):
            raise invalid(f"{part_path}.text", f"'{part_path}.text' must be a string")


def role_of(item: dict[str, Any], path: str, roles: frozenset[str]) -> str:
    role = item.get("role")
    if role is None:
        raise missing(f"{path}.role")
    if not isinstance(role, str) or role not in roles:
        allowed = ", ".join(sorted(roles))
        raise invalid(f"{path}.role", f"'{path}.role' must be one of: {allowed} (got {role!r})")
    return role


def typed_items(value: Any, param: str, shape: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The elements of an array of objects with a string `type` (tools, content parts), with their paths."""
    if not isinstance(value, list):
        raise invalid(param, f"'{param}' must be {shape}")
    for i, item in enumerate(value):
        path = f"{param}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise invalid(f"{path}.type", f"'{path}' must be an object with a string 'type'")
        yield path, item


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    for path, tool in typed_items(tools, "tools", "an array"):
        if tool["type"] == "function":
            function = tool.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise invalid(f"{path}.function.name", f"'{path}.function.name' must be a string")


def render_model_list(names: Iterable[tuple[str, str]], created: int) -> bytes:
    """`GET /v1/models`: every name a client may send, with who serves it."""
    data = [{"id": name, "object": "model", "created": created, "owned_by": owner} for name, owner in names]
    return orjson.dumps({"object": "list", "data": data})


def render_model(name: str, owner: str, created: int) -> bytes:
    return orjson.dumps({"id": name, "object": "model", "created": created, "owned_by": owner})
