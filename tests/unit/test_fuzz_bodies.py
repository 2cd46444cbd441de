"""A bounded fuzz of chat and Responses bodies through the handler: every body is either routed
(a model and the route cache cleared) or answered with an OpenAI-shaped 4xx; never a 5xx, never an
exception, never silence. Bodies are built from the real shapes with arbitrary values swapped in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from builders import body_msg, config_text, headers_msg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.config import parse_config
from extproc.handler import StreamHandler
from extproc.pb import ep
from extproc.runtime import build_runtime

RUNTIME = build_runtime(parse_config(config_text()), environ={"QUORUM_TEST_LARGE_KEY": "k"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
models = st.sampled_from(["quorum/auto", "quorum/fusion", "demo-small", "nope", ""]) | json_values
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", "robot"]) | json_values
texts = st.sampled_from(["hello", "compare a and b", "python", "ABC-1"]) | json_values
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_text", "output_text", "input_image"]) | json_values, "text": texts}
)
contents = texts | st.lists(parts | json_values, max_size=3)
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": contents}) | json_values, max_size=4)
items = st.lists(
    st.fixed_dictionaries({"role": roles, "content": contents})
    | st.fixed_dictionaries(
        {
            "type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "x"]),
            "call_id": texts,
            "output": contents,
            "role": roles,
            "content": contents,
        }
    )
    | json_values,
    max_size=4,
)
extras = st.dictionaries(
    st.sampled_from(
        [
            "stream",
            "n",
            "temperature",
            "tools",
            "plugins",
            "stream_options",
            "instructions",
            "previous_response_id",
            "max_output_tokens",
            "text",
            "x_vendor",
        ]
    ),
    json_values | st.just([{"id": "fusion"}]) | st.just(True),
    max_size=4,
)
chat_bodies = st.builds(lambda m, ms, ex: {"model": m, "messages": ms, **ex}, models, messages, extras)
responses_bodies = st.builds(lambda m, i, ex: {"model": m, "input": i, **ex}, models, texts | items, extras)


async def answer_locally(ctx: Any) -> AsyncIterator[ep.ProcessingResponse]:
    yield ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(status={"code": 200}, body=b"{}"))


async def outcome(path: str, body: Any) -> None:
    handler = StreamHandler(RUNTIME, local=answer_locally)
    head = headers_msg({":method": "POST", ":path": path, "content-type": "application/json"})
    out = [r async for r in handler.handle(head)]
    raw = body if isinstance(body, bytes) else orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    out += [r async for r in handler.handle(body_msg(raw))]
    last = out[-1]
    if last.WhichOneof("response") == "immediate_response":
        status = last.immediate_response.status.code
        if status == 200:
            return  # answered locally (the stub)
        error = orjson.loads(last.immediate_response.body)["error"]
        assert 400 <= status < 500, (status, error, body)
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    else:
        assert last.WhichOneof("response") == "request_body", last
        assert last.request_body.response.clear_route_cache


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(chat_bodies | json_values)
def test_chat_bodies(body):
    asyncio.run(outcome("/v1/chat/completions", body))


@FUZZ
@given(responses_bodies | json_values)
def test_responses_bodies(body):
    asyncio.run(outcome("/v1/responses", body))


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[]", b'{"model": "quorum/auto", "input": "x"' * 3])
def test_bytes_that_are_not_json(raw):
    asyncio.run(outcome("/v1/responses", raw))
