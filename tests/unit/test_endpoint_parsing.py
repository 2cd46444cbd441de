"""Parsing and validating `/v1/responses`, `/v1/completions` and `/v1/embeddings` bodies."""

from __future__ import annotations

from typing import Any, get_args

import orjson
import pytest

from extproc.config.providers import EndpointName
from extproc.endpoints import ENDPOINT_NAMES, ENDPOINTS
from extproc.errors import BadRequest

RESPONSES = ENDPOINTS["/v1/responses"]
COMPLETIONS = ENDPOINTS["/v1/completions"]
EMBEDDINGS = ENDPOINTS["/v1/embeddings"]


def parse(endpoint: Any, body: dict[str, Any]) -> Any:
    return endpoint.parse(orjson.dumps(body))


def error(endpoint: Any, body: dict[str, Any]) -> tuple[str | None, str | None]:
    with pytest.raises(BadRequest) as caught:
        parse(endpoint, body)
    assert caught.value.status == 400
    return caught.value.param, caught.value.code


def test_config_names_every_endpoint_and_only_those():
    assert set(get_args(EndpointName)) == set(ENDPOINT_NAMES)


# ---------------------------------------------------------------- /v1/responses


def test_responses_string_input_is_the_user_text_and_instructions_the_system_text():
    req = parse(RESPONSES, {"model": "quorum/auto", "input": "Explain Python", "instructions": "Be brief"})
    assert req.text("last_user") == "Explain Python"
    assert req.text("conversation") == "Be brief\nExplain Python"
    assert req.text("conversation_no_system") == "Explain Python"
    assert req.stream is False


def test_responses_item_list_text_per_role_and_tool_output():
    items = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "answer"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "second"}, {"type": "input_image", "image_url": "x"}],
        },
        {"type": "reasoning", "summary": []},
    ]
    req = parse(RESPONSES, {"model": "m", "input": items, "stream": True})
    assert req.text("last_user") == "second"
    assert req.text("user") == "first\nsecond"
    assert req.text("conversation") == "rules\nfirst\nanswer\n42\nsecond"
    assert req.text("conversation_no_system") == "first\nanswer\n42\nsecond"
    assert req.stream is True


def test_responses_unknown_fields_are_kept_and_only_model_is_rewritten():
    body = {
        "model": "quorum/auto",
        "input": "hi",
        "tools": [{"type": "function", "name": "f", "parameters": {}}, {"type": "web_search"}],
        "previous_response_id": "resp_1",
        "x_vendor": {"keep": [1, None]},
        "max_output_tokens": 5,
        "temperature": 0.2,
    }
    req = parse(RESPONSES, body)
    rewritten, strip = RESPONSES.rewrite(req, "small-v1", request_usage=True)
    assert orjson.loads(rewritten) == {**body, "model": "small-v1"}
    assert strip is False
    assert RESPONSES.rewrite(req, "quorum/auto", request_usage=True).body is None


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "hi"}, "model", "missing_required_parameter"),
        ({"model": 3, "input": "hi"}, "model", "invalid_value"),
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"model": "m", "input": 3}, "input", "invalid_value"),
        ({"model": "m", "input": ["x"]}, "input[0]", "invalid_value"),
        ({"model": "m", "input": [{"content": "x"}]}, "input[0].type", "invalid_value"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"model": "m", "input": [{"type": "message", "content": "x"}]}, "input[0].role", "missing_required_parameter"),
        ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_value"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "invalid_value",
        ),
        ({"model": "m", "input": [{"role": "user", "content": [7]}]}, "input[0].content[0].type", "invalid_value"),
        ({"model": "m", "input": "x", "instructions": ["a"]}, "instructions", "invalid_value"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream", "invalid_value"),
        ({"model": "m", "input": "x", "previous_response_id": 9}, "previous_response_id", "invalid_value"),
        ({"model": "m", "input": "x", "tools": {}}, "tools", "invalid_value"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "invalid_value"),
        ({"model": "m", "input": "x", "max_output_tokens": 1.5}, "max_output_tokens", "invalid_value"),
        ({"model": "m", "input": "x", "temperature": True}, "temperature", "invalid_value"),
    ],
)
def test_responses_bad_bodies_name_the_field(body, param, code):
    assert error(RESPONSES, body) == (param, code)


def test_responses_json_and_stream_usage_use_input_and_output_tokens():
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert RESPONSES.json_usage(orjson.dumps({"object": "response", "usage": usage})).as_dict() == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }
    reader = RESPONSES.stream_usage(strip=True)
    events = [
        {"type": "response.created", "response": {"usage": None}},
        {"type": "response.output_text.delta", "delta": "usage"},
        {"type": "response.completed", "response": {"usage": usage}},
    ]
    stream = b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events)
    assert reader.feed(stream[:50], False) is None  # never rewritten: Responses usage is not stripped
    assert reader.final_usage(False) is None
    reader.feed(stream[50:], False)
    assert reader.final_usage(False).as_dict()["prompt_tokens"] == 7  # final at response.completed
    assert reader.final_usage(True) is None  # and counted once


# ---------------------------------------------------------------- /v1/completions and /v1/embeddings


@pytest.mark.parametrize(
    ("value", "texts"),
    [("one", ["one"]), (["a", "b"], ["a", "b"]), ([1, 2, 3], []), ([[1, 2], [3]], [])],
)
@pytest.mark.parametrize(("endpoint", "field"), [(COMPLETIONS, "prompt"), (EMBEDDINGS, "input")])
def test_prompt_shapes(endpoint, field, value, texts):
    req = parse(endpoint, {"model": "m", field: value, "x_extra": 1})
    assert req.text("user") == "\n".join(texts)
    assert req.body["x_extra"] == 1


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        (COMPLETIONS, {"prompt": "x"}, "model"),
        (COMPLETIONS, {"model": "m"}, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": []}, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": ["a", 1]}, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": [[1], []]}, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": [True]}, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "echo": 1}, "echo"),
        (EMBEDDINGS, {"input": "x"}, "model"),
        (EMBEDDINGS, {"model": "m"}, "input"),
        (EMBEDDINGS, {"model": "m", "input": {"a": 1}}, "input"),
        (EMBEDDINGS, {"model": "m", "input": [-1]}, "input"),
        (EMBEDDINGS, {"model": "m", "input": "x", "stream": True}, "stream"),
        (EMBEDDINGS, {"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        (EMBEDDINGS, {"model": "m", "input": "x", "dimensions": "8"}, "dimensions"),
    ],
)
def test_prompt_bad_bodies_name_the_field(endpoint, body, param):
    assert error(endpoint, body)[0] == param


def test_completions_stream_asks_for_usage_like_chat():
    req = parse(COMPLETIONS, {"model": "quorum/auto", "prompt": "x", "stream": True})
    body, strip = COMPLETIONS.rewrite(req, "small-v1", request_usage=True)
    assert orjson.loads(body)["stream_options"] == {"include_usage": True}
    assert strip is True
    assert EMBEDDINGS.rewrite(parse(EMBEDDINGS, {"model": "e", "input": "x"}), "e", True).body is None
