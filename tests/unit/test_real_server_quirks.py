"""Real-server quirks: the fake backend reproduces each (--quirk), and `dialect: llama_cpp` copes with them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from extproc.dev.fake_backend import BACKEND, build_app, expand_quirks, start_app
from extproc.models import ModelClient
from extproc.modeltypes import ModelCallError, RetryPolicy
from extproc.runtime import Model

Start = Callable[..., Awaitable[tuple[str, web.Application]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def run(*quirks: str) -> tuple[str, web.Application]:
        app = build_app("gemma", quirks=quirks)
        runner, port = await start_app(app, "127.0.0.1", 0)
        runners.append(runner)
        return f"http://127.0.0.1:{port}", app

    yield run
    for runner in runners:
        await runner.cleanup()


def body(text: str = "one two three four five", **extra: Any) -> dict[str, Any]:
    return {"model": "gemma", "messages": [{"role": "user", "content": text}], **extra}


async def post(url: str, payload: dict[str, Any], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return await http.post("/v1/chat/completions", json=payload, headers=headers)


def test_quirk_names_expand_and_typos_fail() -> None:
    assert "drop_system" in expand_quirks(["llama_cpp"]) and len(expand_quirks(["llama_cpp"])) == 6
    with pytest.raises(ValueError, match="unknown quirk"):
        expand_quirks(["drop_sytem"])


async def test_drop_system_hides_the_judge_briefing(start: Start) -> None:
    system = [{"role": "system", "content": "You are FUSION-JUDGE."}, {"role": "user", "content": "judge this"}]
    for quirks, judged in (((), True), (("drop_system",), False)):
        url, _ = await start(*quirks)
        reply = (await post(url, {"model": "gemma", "messages": system})).json()
        assert ("consensus" in reply["choices"][0]["message"]["content"]) is judged


async def test_no_stream_usage_ignores_include_usage(start: Start) -> None:
    for quirks, expected in (((), True), (("no_stream_usage",), False)):
        url, _ = await start(*quirks)
        text = (await post(url, body(stream=True, stream_options={"include_usage": True}))).text
        assert ('"usage": {' in text.replace('":{', '": {')) is expected
        assert text.rstrip().endswith("data: [DONE]")


async def test_no_json_schema_is_a_500_but_json_object_passes(start: Start) -> None:
    url, _ = await start("no_json_schema")
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert (await post(url, body(response_format=schema))).status_code == 500
    assert (await post(url, body(response_format={"type": "json_object", "schema": {}}))).status_code == 200


async def test_max_tokens_only_caps_on_max_tokens_alone(start: Start) -> None:
    url, _ = await start("max_tokens_only")
    capped = (await post(url, body(max_tokens=2))).json()["choices"][0]
    assert capped["message"]["content"] == "[gemma] one" and capped["finish_reason"] == "length"
    uncapped = (await post(url, body(max_completion_tokens=2))).json()["choices"][0]
    assert uncapped["finish_reason"] == "stop" and uncapped["message"]["content"].endswith("five")


async def test_uuid_request_id_rejects_other_ids_with_an_empty_400(start: Start) -> None:
    url, _ = await start("uuid_request_id")
    bad = await post(url, body(), **{"x-request-id": "req-1"})
    assert bad.status_code == 400 and bad.content == b""
    assert (await post(url, body(), **{"x-request-id": str(uuid.uuid4())})).status_code == 200


async def test_top_logprobs_only_needs_top_logprobs(start: Start) -> None:
    url, _ = await start("top_logprobs_only")
    assert (await post(url, body(logprobs=True))).json()["choices"][0]["logprobs"] is None
    with_top = (await post(url, body(logprobs=True, top_logprobs=1))).json()["choices"][0]["logprobs"]
    assert with_top["content"][0]["logprob"] <= 0


async def test_llama_cpp_dialect_makes_quorums_calls_work_against_every_quirk(start: Start) -> None:
    """A judge-style call (briefing in a system message, max_completion_tokens, json_schema, a non-UUID request
    id) fails against a llama.cpp-like server as OpenAI-dialect and succeeds with `dialect: llama_cpp`."""
    url, app = await start("llama_cpp")
    call = {
        "messages": [{"role": "system", "content": "You are FUSION-JUDGE."}, {"role": "user", "content": "judge"}],
        "max_completion_tokens": 64,
        "logprobs": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    }
    client = ModelClient()
    once = RetryPolicy(attempts=1)
    try:
        with pytest.raises(ModelCallError):
            await client.complete(
                Model("g", "gemma", f"{url}/v1"), call, time_limit=5, retry=once, headers={"x-request-id": "r1"}
            )
        llama = Model("g", "gemma", f"{url}/v1", dialect="llama_cpp")
        reply = await client.complete(llama, call, time_limit=5, retry=once, headers={"x-request-id": "r1"})
    finally:
        await client.aclose()
    assert "consensus" in reply.content  # the folded briefing reached the model
    assert reply.logprobs  # top_logprobs was added
    sent = app[BACKEND].records[-1]
    assert sent["body"]["max_tokens"] == 64 and "max_completion_tokens" not in sent["body"]
    assert sent["body"]["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    assert uuid.UUID(sent["headers"]["x-request-id"])
