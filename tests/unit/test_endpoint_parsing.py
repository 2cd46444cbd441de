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


# ---------------------------------------------------------------- Responses as a local (fusion) request


def local(body: dict[str, Any]) -> dict[str, Any]:
    return RESPONSES.local_request(parse(RESPONSES, {"model": "quorum/fusion", **body})).body


def test_responses_as_chat_for_a_local_answer():
    body = local(
        {
            "instructions": "sys",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "reasoning", "summary": []},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "max_output_tokens": 9,
            "temperature": 0.5,
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
            "reasoning": {"effort": "low"},
            "store": True,
            "metadata": {"k": "v"},
            "stream": True,
        }
    )
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
    ]
    assert body["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert (body["max_tokens"], body["temperature"], body["stream"], body["reasoning_effort"]) == (9, 0.5, True, "low")
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": {"type": "object"}},
    }
    assert "store" not in body and "metadata" not in body


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input[0].output"),
    ],
)
def test_responses_parts_a_local_answer_cannot_honour_are_400s(extra, param):
    with pytest.raises(BadRequest) as caught:
        local({"input": "x", **extra})
    assert caught.value.param == param


def test_responses_renderer_json_and_stream_with_tool_calls():
    from extproc.algorithms.trace import RunTrace
    from extproc.modeltypes import Usage

    trace = RunTrace("fusion", "d", None, {})
    trace.usage.add(Usage(5, 2, 7))
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    renderer = RESPONSES.renderer(parse(RESPONSES, {"model": "quorum/fusion", "input": "x"}))
    whole = orjson.loads(renderer.json({"role": "assistant", "content": "hi", "tool_calls": [call]}, "stop", trace))
    assert [item["type"] for item in whole["output"]] == ["message", "function_call"]
    assert whole["output"][1]["call_id"] == "c1"
    assert whole["usage"]["input_tokens"] == 5 and whole["usage"]["output_tokens"] == 2
    assert "fusion" in whole
    streamed = renderer.stream_open()
    streamed += renderer.stream_delta({"index": 0, "delta": {"content": "h"}})
    streamed += renderer.stream_delta(
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}]}}
    )
    streamed += renderer.stream_delta(
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}}
    )
    streamed += renderer.stream_close(trace)
    events = [orjson.loads(line[6:]) for line in streamed.split(b"\n") if line.startswith(b"data: ")]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["output"][0]["content"][0]["text"] == "h"
    assert (final["output"][1]["name"], final["output"][1]["arguments"]) == ("f", "{}")
