"""Parsing and validating `/v1/chat/completions` bodies the way OpenAI reports errors."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from extproc.errors import BadRequest
from extproc.openai import parse_chat_request

USER = {"role": "user", "content": "hi"}


def body(**fields: Any) -> dict[str, Any]:
    """A valid request with `fields` overriding (or, set to ..., removing) top-level keys."""
    out: dict[str, Any] = {"model": "quorum/auto", "messages": [USER]}
    for key, value in fields.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def raw(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(fields)


# ---------------------------------------------------------------- valid requests


def test_minimal_request() -> None:
    chat = parse_chat_request(b'{"model":"m","messages":[{"role":"user","content":"hello"}]}')
    assert chat.model == "m"
    assert chat.stream is False
    assert chat.messages == [{"role": "user", "content": "hello"}]
    assert chat.last_user_text == chat.user_text == chat.conversation_text == "hello"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"stream": True}, id="stream"),
        pytest.param({"stream": False}, id="stream-false"),
        pytest.param({"stream": True, "stream_options": {"include_usage": True}}, id="stream-options"),
        pytest.param({"stream": True, "stream_options": {}}, id="stream-options-empty"),
        pytest.param({"temperature": 0, "top_p": 0.5, "presence_penalty": -1, "frequency_penalty": 1.5}, id="numbers"),
        pytest.param({"max_tokens": 10, "max_completion_tokens": 20, "n": 1, "seed": -3}, id="integers"),
        pytest.param({"temperature": None, "max_tokens": None, "stream": None}, id="explicit-nulls"),
        pytest.param({"tools": []}, id="no-tools"),
        pytest.param(
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
            id="function-tool",
        ),
        pytest.param({"tools": [{"type": "web_search"}]}, id="other-tool-type"),
        pytest.param({"response_format": {"type": "json_object"}, "x_vendor": [1, {"a": None}]}, id="unknown-keys"),
        pytest.param(
            {"messages": [{"role": r, "content": "x"} for r in ("system", "developer", "user", "tool", "function")]},
            id="all-roles",
        ),
        pytest.param({"messages": [{"role": "user", "content": ""}]}, id="empty-content"),
        pytest.param({"messages": [{"role": "user", "content": []}]}, id="empty-parts"),
    ],
)
def test_valid_requests(fields: dict[str, Any]) -> None:
    chat = parse_chat_request(raw(body(**fields)))
    assert chat.body == body(**fields)
    assert chat.stream is (fields.get("stream") is True)


def test_content_parts() -> None:
    chat = parse_chat_request(
        raw(
            body(
                messages=[
                    {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "describe"},
                            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                            {"type": "input_text", "text": "this cat"},
                            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                        ],
                    },
                ]
            )
        )
    )
    assert chat.last_user_text == "describe this cat"
    assert chat.user_text == "describe this cat"
    assert chat.conversation_text == "be brief\ndescribe this cat"


def test_assistant_with_tool_calls_and_null_content() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "x"}}]},
        {"role": "assistant", "content": None, "function_call": {"name": "legacy", "arguments": "{}"}},
    ]
    chat = parse_chat_request(raw(body(messages=messages)))
    assert chat.messages == messages
    assert chat.last_user_text == "weather in Paris?"
    assert chat.conversation_text == "weather in Paris?\n\nsunny\n\n"


# ---------------------------------------------------------------- invalid requests

MISSING = "missing_required_parameter"
INVALID = "invalid_value"

INVALID_CASES: list[Any] = [
    pytest.param(body(model=...), "model", MISSING, id="model-missing"),
    pytest.param(body(model=None), "model", MISSING, id="model-null"),
    pytest.param(body(model=""), "model", INVALID, id="model-empty"),
    pytest.param(body(model=7), "model", INVALID, id="model-number"),
    pytest.param(body(messages=...), "messages", MISSING, id="messages-missing"),
    pytest.param(body(messages=[]), "messages", INVALID, id="messages-empty"),
    pytest.param(body(messages="hi"), "messages", INVALID, id="messages-string"),
    pytest.param(body(messages={"role": "user"}), "messages", INVALID, id="messages-object"),
    pytest.param(body(messages=[USER, "hi"]), "messages[1]", INVALID, id="message-not-object"),
    pytest.param(body(messages=[USER, {"content": "x"}]), "messages[1].role", MISSING, id="role-missing"),
    pytest.param(body(messages=[USER, {"role": "robot", "content": "x"}]), "messages[1].role", INVALID, id="role-bad"),
    pytest.param(body(messages=[{"role": "User", "content": "x"}]), "messages[0].role", INVALID, id="role-case"),
    pytest.param(body(messages=[{"role": 1, "content": "x"}]), "messages[0].role", INVALID, id="role-number"),
    pytest.param(
        body(messages=[{"role": ["user"], "content": "x"}]),
        "messages[0].role",
        INVALID,
        id="role-list",
    ),
    pytest.param(body(messages=[{"role": "user"}]), "messages[0].content", MISSING, id="user-content-missing"),
    pytest.param(
        body(messages=[{"role": "user", "content": None}]), "messages[0].content", MISSING, id="user-content-null"
    ),
    pytest.param(
        body(messages=[USER, {"role": "assistant"}]), "messages[1].content", INVALID, id="assistant-no-content"
    ),
    pytest.param(body(messages=[{"role": "user", "content": 5}]), "messages[0].content", INVALID, id="content-number"),
    pytest.param(
        body(messages=[{"role": "user", "content": {"type": "text", "text": "x"}}]),
        "messages[0].content",
        INVALID,
        id="content-object",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": ["x"]}]), "messages[0].content[0].type", INVALID, id="part-string"
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages[0].content[0].type",
        INVALID,
        id="part-no-type",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
        INVALID,
        id="part-text-missing",
    ),
    pytest.param(
        body(
            messages=[{"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "input_text", "text": 1}]}]
        ),
        "messages[0].content[1].text",
        INVALID,
        id="part-text-number",
    ),
    pytest.param(body(stream="true"), "stream", INVALID, id="stream-string"),
    pytest.param(body(stream=1), "stream", INVALID, id="stream-number"),
    pytest.param(body(stream_options={"include_usage": True}), "stream_options", INVALID, id="options-no-stream"),
    pytest.param(
        body(stream=False, stream_options={"include_usage": True}), "stream_options", INVALID, id="options-stream-false"
    ),
    pytest.param(body(stream=True, stream_options=[]), "stream_options", INVALID, id="options-list"),
    pytest.param(
        body(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        INVALID,
        id="include-usage-string",
    ),
    pytest.param(body(tools={"type": "function"}), "tools", INVALID, id="tools-object"),
    pytest.param(body(tools=["f"]), "tools[0].type", INVALID, id="tool-string"),
    pytest.param(body(tools=[{"function": {"name": "f"}}]), "tools[0].type", INVALID, id="tool-no-type"),
    pytest.param(body(tools=[{"type": "function"}]), "tools[0].function.name", INVALID, id="tool-no-function"),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": "ok"}}, {"type": "function", "function": {}}]),
        "tools[1].function.name",
        INVALID,
        id="tool-no-name",
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": 3}}]), "tools[0].function.name", INVALID, id="tool-name"
    ),
    pytest.param(body(temperature="hot"), "temperature", INVALID, id="temperature-string"),
    pytest.param(body(temperature=True), "temperature", INVALID, id="temperature-bool"),
    pytest.param(body(top_p=[1]), "top_p", INVALID, id="top-p-list"),
    pytest.param(body(presence_penalty="0"), "presence_penalty", INVALID, id="presence-penalty"),
    pytest.param(body(frequency_penalty=False), "frequency_penalty", INVALID, id="frequency-penalty"),
    pytest.param(body(max_tokens=1.5), "max_tokens", INVALID, id="max-tokens-float"),
    pytest.param(body(max_tokens="10"), "max_tokens", INVALID, id="max-tokens-string"),
    pytest.param(body(max_tokens=True), "max_tokens", INVALID, id="max-tokens-bool"),
    pytest.param(body(max_completion_tokens=2.0), "max_completion_tokens", INVALID, id="max-completion-tokens"),
    pytest.param(body(n=0), "n", INVALID, id="n-zero"),
    pytest.param(body(n=-2), "n", INVALID, id="n-negative"),
    pytest.param(body(seed="1"), "seed", INVALID, id="seed-string"),
]


@pytest.mark.parametrize(("fields", "param", "code"), INVALID_CASES)
def test_invalid_requests(fields: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_chat_request(raw(fields))
    err = info.value
    assert (err.status, err.param, err.code) == (400, param, code)
    # the message names the field, or the object that should have had it (`'tools[0]' must be an object ...`)
    assert f"'{param}'" in err.message or f"'{param.rpartition('.')[0]}'" in err.message, err.message
    assert err.to_openai() == {
        "error": {"message": err.message, "type": "invalid_request_error", "param": param, "code": code}
    }


def test_first_invalid_field_in_message_order_is_reported() -> None:
    messages = [USER, {"role": "robot", "content": "x"}, {"role": "user", "content": 5}]
    with pytest.raises(BadRequest) as info:
        parse_chat_request(raw(body(messages=messages, temperature="hot")))
    assert info.value.param == "messages[1].role"


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"{not json}", b'{"model": "m",}', b"\xff\xfe", b"NaN", b'{"model": "m"} trailing'],
)
def test_invalid_json(payload: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_chat_request(payload)
    assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_json", None)
    assert "JSON" in info.value.message


@pytest.mark.parametrize("payload", [b"[]", b'[{"model": "m"}]', b'"text"', b"42", b"null", b"true"])
def test_body_must_be_an_object(payload: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_chat_request(payload)
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    assert "must be a JSON object" in info.value.message


# ---------------------------------------------------------------- with_model

RICH = {
    "model": "quorum/auto",
    "messages": [
        {"role": "system", "content": "Réponds en français 🇫🇷"},
        {"role": "user", "content": [{"type": "text", "text": '日本語 and emoji 🙂 and "quotes" \\ back'}]},
    ],
    "temperature": 0.25,
    "max_tokens": 512,
    "stream": True,
    "stream_options": {"include_usage": True},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
    "metadata": {"nested": [1, 2.5, None, False, "ß"]},
    "x_unknown": None,
}


@pytest.mark.parametrize("new_model", ["demo-coder", "org/model:v1", "模型"])
def test_with_model_changes_only_the_model(new_model: str) -> None:
    original = orjson.dumps(RICH)
    chat = parse_chat_request(original)
    rewritten = chat.with_model(new_model)

    decoded = json.loads(rewritten)
    assert decoded == {**RICH, "model": new_model}
    assert list(decoded) == list(RICH)  # key order kept
    assert "日本語".encode() in rewritten and "🙂".encode() in rewritten  # unicode kept as UTF-8, not escaped
    assert rewritten.replace(orjson.dumps(new_model), b'"quorum/auto"', 1) == original
    # the parsed request itself is untouched
    assert chat.model == "quorum/auto"
    assert chat.body == RICH


def test_with_model_result_parses_again() -> None:
    chat = parse_chat_request(orjson.dumps(RICH))
    again = parse_chat_request(chat.with_model("demo-large"))
    assert again.model == "demo-large"
    assert again.body == {**RICH, "model": "demo-large"}


# ---------------------------------------------------------------- token estimate


def test_token_estimate_grows_with_text() -> None:
    estimates = [
        parse_chat_request(raw(body(messages=[{"role": "user", "content": "word " * n}]))).token_estimate
        for n in (0, 1, 10, 100, 1000, 10_000)
    ]
    assert estimates == sorted(estimates)
    assert len(set(estimates)) == len(estimates)
    assert estimates[-1] > 10_000  # ~5 bytes per "word ", ~4 bytes per token


def test_token_estimate_counts_every_message_and_part() -> None:
    one = parse_chat_request(raw(body(messages=[{"role": "user", "content": "x" * 400}]))).token_estimate
    two = parse_chat_request(
        raw(body(messages=[{"role": "system", "content": "x" * 400}, {"role": "user", "content": "x" * 400}]))
    ).token_estimate
    parts = parse_chat_request(
        raw(body(messages=[{"role": "user", "content": [{"type": "text", "text": "x" * 400}] * 2}]))
    ).token_estimate
    assert two > one
    assert parts > one
    assert 90 <= one <= 120  # about four bytes per token


def test_token_estimate_counts_bytes_not_characters() -> None:
    ascii_ = parse_chat_request(raw(body(messages=[{"role": "user", "content": "a" * 300}]))).token_estimate
    wide = parse_chat_request(raw(body(messages=[{"role": "user", "content": "語" * 300}]))).token_estimate
    assert wide > ascii_
