"""Tests for the OpenAI-compatible fake backend (real servers on ephemeral 127.0.0.1 ports)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from extproc.dev import add_arguments
from extproc.dev.fake_backend import BACKEND, build_app, load_script, start_app

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "demo-small"
JUDGE_KEYS = {"consensus", "contradictions", "partial_coverage", "unique_insights", "blind_spots"}

StartBackend = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_backend() -> AsyncIterator[StartBackend]:
    """Start fake backends on ephemeral ports; returns their base URLs."""
    runners: list[web.AppRunner] = []

    async def start(model: str = MODEL, **kwargs: Any) -> str:
        runner, port = await start_app(build_app(model, **kwargs), "127.0.0.1", 0)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def base_url(start_backend: StartBackend) -> str:
    return await start_backend()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        yield http


def chat_body(text: Any, *, model: str = "alias-x", system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return {"model": model, "messages": messages, **extra}


async def chat(client: httpx.AsyncClient, text: Any, headers: dict[str, str] | None = None, **extra: Any):
    return await client.post("/v1/chat/completions", json=chat_body(text, **extra), headers=headers)


def content_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def sse_payloads(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking the framing on the way."""
    frames = text.split("\n\n")
    assert frames[-1] == ""
    assert all(frame.startswith("data: ") for frame in frames[:-1])
    return [frame.removeprefix("data: ") for frame in frames[:-1]]


async def records(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/_fake/requests")
    assert response.status_code == 200
    return response.json()["requests"]


async def wait_for_record(client: httpx.AsyncClient, predicate: Callable[[dict[str, Any]], bool]):
    for _ in range(200):
        matching = [r for r in await records(client) if predicate(r)]
        if matching:
            return matching[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no matching record in {await records(client)}")


# --- basic answers ------------------------------------------------------------------------------


async def test_echo_model_field_and_headers(client: httpx.AsyncClient) -> None:
    response = await chat(client, "hello world", model="alias-x")
    body = response.json()
    assert content_of(response) == "[demo-small] hello world"
    assert body["model"] == "alias-x"
    assert body["object"] == "chat.completion"
    assert re.fullmatch(r"chatcmpl-[0-9a-f]+", body["id"])
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    assert response.headers["x-fake-backend"] == MODEL


async def test_usage_arithmetic(client: httpx.AsyncClient) -> None:
    # system: 14 chars -> 4 + 3; user: 11 chars -> 3 + 3; answer "[demo-small] hello world" = 3 words.
    response = await chat(client, "hello world", system="You are terse.")
    assert response.json()["usage"] == {"prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16}


async def test_content_part_arrays(client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this picture"},
    ]
    response = await chat(client, parts)
    assert content_of(response) == "[demo-small] describe this picture"
    # "describe this picture" = 21 chars -> 6 + 3
    assert response.json()["usage"]["prompt_tokens"] == 9


async def test_echo_uses_last_user_message(client: httpx.AsyncClient) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert content_of(response) == "[demo-small] second question"


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (json.dumps({"model": "m"}).encode(), "messages"),
        (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "model"),
    ],
)
async def test_invalid_requests(client: httpx.AsyncClient, payload: bytes, param: str | None) -> None:
    response = await client.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert "code" in error
    assert response.headers["x-fake-backend"] == MODEL
    (record,) = await records(client)
    assert record["status"] == 400
    assert record["completed"] is True


async def test_models_and_healthz(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    assert models.json()["object"] == "list"
    assert [m["id"] for m in models.json()["data"]] == [MODEL]
    health = await client.get("/healthz")
    assert (health.status_code, health.text) == (200, "ok")
    assert health.headers["x-fake-backend"] == MODEL


# --- streaming -----------------------------------------------------------------------------------


async def test_streaming_frames(client: httpx.AsyncClient) -> None:
    response = await chat(client, "one two  three", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-fake-backend"] == MODEL
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "alias-x" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d["content"] for d in deltas[1:-1]] == ["[demo-small] ", "one ", "two  ", "three"]
    assert deltas[-1] == {}
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["stop"]


async def test_streaming_include_usage(client: httpx.AsyncClient) -> None:
    response = await chat(client, "hello world", stream=True, stream_options={"include_usage": True})
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    *content_chunks, usage_chunk = chunks
    assert all(c["usage"] is None for c in content_chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content_chunks)
    assert text == "[demo-small] hello world"


async def test_stream_is_delivered_chunk_by_chunk(start_backend: StartBackend) -> None:
    base = await start_backend(stream_delay_ms=100)
    arrivals: list[float] = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json=chat_body("one two three", stream=True)) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    # role, 4 words, stop, [DONE] with 100 ms between frames
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] >= 0.5


async def test_stream_delay_directive(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await chat(client, "a b [[fake:stream_delay_ms=100]]", stream=True)
    assert sse_payloads(response.text)[-1] == "[DONE]"
    assert time.monotonic() - started >= 0.5  # 6 gaps of 100 ms


# --- the official OpenAI SDK ---------------------------------------------------------------------


async def test_openai_sdk_non_streaming(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as sdk:
        completion = await sdk.chat.completions.create(
            model="alias-x", messages=[{"role": "user", "content": "hello sdk"}]
        )
    assert completion.model == "alias-x"
    assert completion.choices[0].message.content == "[demo-small] hello sdk"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


async def test_openai_sdk_streaming_with_usage(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="alias-x",
            messages=[{"role": "user", "content": "stream me please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[demo-small] stream me please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 4


async def test_openai_sdk_sees_broken_stream(base_url: str) -> None:
    received: list[str] = []
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="alias-x",
            messages=[{"role": "user", "content": "a b c d [[fake:break_stream_after=3]]"}],
            stream=True,
        )
        with pytest.raises((openai.APIConnectionError, httpx.RemoteProtocolError)):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert received == ["", "[demo-small] ", "a "]


async def test_openai_sdk_injected_status(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as sdk:
        with pytest.raises(openai.RateLimitError) as excinfo:
            await sdk.chat.completions.create(
                model="alias-x", messages=[{"role": "user", "content": "hi [[fake:status=429]]"}]
            )
    assert excinfo.value.status_code == 429


# --- failure injection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(503, "server_error"), (500, "server_error"), (429, "rate_limit_error"), (401, "authentication_error")],
)
async def test_status_directive(client: httpx.AsyncClient, status: int, error_type: str) -> None:
    response = await chat(client, f"hi [[fake:status={status}]]")
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert response.headers["x-fake-backend"] == MODEL


async def test_status_directive_applies_to_streaming_requests(client: httpx.AsyncClient) -> None:
    response = await chat(client, "hi [[fake:status=503]]", stream=True)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["type"] == "server_error"


async def test_delay_directive(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await chat(client, "slow [[fake:delay_ms=300]] answer")
    assert time.monotonic() - started >= 0.3
    assert content_of(response) == "[demo-small] slow answer"


async def test_backend_latency(start_backend: StartBackend) -> None:
    base = await start_backend(latency_ms=250)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for stream in (False, True):
            started = time.monotonic()
            response = await chat(http, "hi", stream=stream)
            assert response.status_code == 200
            assert time.monotonic() - started >= 0.25


async def test_break_stream_after(client: httpx.AsyncClient) -> None:
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat_body("a b c [[fake:break_stream_after=2]]", stream=True)
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                lines.append(line)
    data = [line for line in lines if line.startswith("data: ")]
    assert len(data) == 2
    assert "data: [DONE]" not in lines
    record = await wait_for_record(client, lambda r: True)
    assert (record["status"], record["completed"], record["cancelled"]) == (200, False, False)


async def test_break_stream_after_zero_sends_only_headers(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(client, "a [[fake:break_stream_after=0]]", stream=True)


async def test_break_stream_after_is_ignored_without_streaming(client: httpx.AsyncClient) -> None:
    response = await chat(client, "a [[fake:break_stream_after=0]]")
    assert content_of(response) == "[demo-small] a"


async def test_only_targets_one_backend(start_backend: StartBackend) -> None:
    small = await start_backend("demo-small")
    large = await start_backend("demo-large")
    text = "hello [[fake:status=500 only=demo-large]]"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{small}/v1/chat/completions", json=chat_body(text))
        assert content_of(response) == "[demo-small] hello"
        response = await http.post(f"{large}/v1/chat/completions", json=chat_body(text))
        assert response.status_code == 500


async def test_only_scopes_each_block(client: httpx.AsyncClient) -> None:
    text = "[[fake:status=500 only=demo-large]] hi [[fake:status=429 only=other,demo-small]]"
    response = await chat(client, text)
    assert response.status_code == 429


async def test_directives_are_stripped_from_the_echo(client: httpx.AsyncClient) -> None:
    assert content_of(await chat(client, "[[fake:delay_ms=1]]")) == "[demo-small]"
    text = "a [[fake:delay_ms=1]] [[fake:status=200]]  b\nc  d [[fake:judge=fenced]]"
    assert content_of(await chat(client, text)) == "[demo-small] a b\nc  d"


async def test_later_blocks_override_earlier_ones(client: httpx.AsyncClient) -> None:
    response = await chat(client, "[[fake:status=500]] hi [[fake:status=200]]")
    assert content_of(response) == "[demo-small] hi"


async def test_header_equivalents(client: httpx.AsyncClient) -> None:
    response = await chat(client, "hi", headers={"X-Fake-Status": "429"})
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"

    started = time.monotonic()
    response = await chat(client, "hi", headers={"x-fake-delay-ms": "300"})
    assert time.monotonic() - started >= 0.3
    assert content_of(response) == "[demo-small] hi"

    with pytest.raises(httpx.RemoteProtocolError):
        await chat(client, "a b", headers={"x-fake-break-stream-after": "1"}, stream=True)

    response = await chat(client, "hi", headers={"x-fake-status": "503", "x-fake-only": "demo-large"})
    assert content_of(response) == "[demo-small] hi"

    # message directives are applied after headers
    response = await chat(client, "hi [[fake:status=200]]", headers={"x-fake-status": "503"})
    assert content_of(response) == "[demo-small] hi"


@pytest.mark.parametrize(
    "text",
    [
        "[[fake:stauts=500]]",
        "[[fake:status=abc]]",
        "[[fake:status=302]]",
        "[[fake:delay_ms=-1]]",
        "[[fake:judge=x]]",
    ],
)
async def test_bad_directives_are_rejected(client: httpx.AsyncClient, text: str) -> None:
    response = await chat(client, f"hi {text}")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_bad_directive_header_is_rejected(client: httpx.AsyncClient) -> None:
    response = await chat(client, "hi", headers={"x-fake-status": "teapot"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-fake-* headers"


# --- tool calls ----------------------------------------------------------------------------------

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "other_tool", "parameters": {"type": "object"}}},
]


async def test_tool_call(client: httpx.AsyncClient) -> None:
    response = await chat(client, "weather? [[fake:tool_call]]", tools=TOOLS)
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": "{}"}
    assert response.json()["usage"]["completion_tokens"] == 2


async def test_tool_call_marker_without_tools_echoes(client: httpx.AsyncClient) -> None:
    response = await chat(client, "weather? [[fake:tool_call]]")
    assert content_of(response) == "[demo-small] weather?"


async def test_plain_answers_without_the_model_prefix(client: httpx.AsyncClient) -> None:
    assert content_of(await chat(client, "same for all [[fake:plain]]")) == "same for all"
    assert content_of(await chat(client, "same", headers={"x-fake-plain": "1"})) == "same"


async def test_logprobs_when_asked_at_the_directed_confidence(client: httpx.AsyncClient) -> None:
    plain = (await chat(client, "hi there")).json()["choices"][0]
    assert plain["logprobs"] is None  # not asked
    asked = (await chat(client, "hi there [[fake:logprob=-1.5]]", logprobs=True)).json()["choices"][0]
    tokens = asked["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == asked["message"]["content"]
    assert {t["logprob"] for t in tokens} == {-1.5}
    default = (await chat(client, "hi", logprobs=True)).json()["choices"][0]["logprobs"]["content"]
    assert {t["logprob"] for t in default} == {-0.05}
    ignored = await chat(client, "hi [[fake:no_logprobs]]", logprobs=True)
    assert ignored.json()["choices"][0]["logprobs"] is None
    assert (await chat(client, "hi [[fake:logprob=0.5]]", logprobs=True)).status_code == 400


async def test_tool_call_header(client: httpx.AsyncClient) -> None:
    response = await chat(client, "weather?", headers={"x-fake-tool-call": "1"}, tools=TOOLS)
    assert response.json()["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_call_streaming_with_sdk(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="alias-x",
            messages=[{"role": "user", "content": "weather? [[fake:tool_call]]"}],
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
    name = ""
    arguments = ""
    for chunk in chunks:
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.index == 0
            name += (call.function and call.function.name) or ""
            arguments += (call.function and call.function.arguments) or ""
    assert (name, arguments) == ("get_weather", "{}")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# --- fusion judge and scripts ---------------------------------------------------------------------


def assert_judge_analysis(analysis: Any) -> None:
    assert set(analysis) == JUDGE_KEYS
    for values in analysis.values():
        assert values
        assert all(isinstance(v, str) and v for v in values)


async def test_judge_valid(client: httpx.AsyncClient) -> None:
    response = await chat(client, "Answers: ...", system="You are the FUSION-JUDGE.")
    assert_judge_analysis(json.loads(content_of(response)))
    # the marker may be in the user prompt instead
    response = await chat(client, "FUSION-JUDGE: compare the answers")
    assert_judge_analysis(json.loads(content_of(response)))


async def test_judge_invalid(client: httpx.AsyncClient) -> None:
    response = await chat(client, "compare [[fake:judge=invalid]]", system="FUSION-JUDGE")
    with pytest.raises(ValueError):
        json.loads(content_of(response))


async def test_judge_fenced(client: httpx.AsyncClient) -> None:
    valid = json.loads(content_of(await chat(client, "compare", system="FUSION-JUDGE")))
    fenced = content_of(await chat(client, "compare [[fake:judge=fenced]]", system="FUSION-JUDGE"))
    assert fenced.startswith("```json\n")
    assert fenced.endswith("\n```")
    assert json.loads(fenced.removeprefix("```json\n").removesuffix("\n```")) == valid


async def test_judge_mode_only_affects_judge_answers(client: httpx.AsyncClient) -> None:
    response = await chat(client, "panel question [[fake:judge=invalid]]")
    assert content_of(response) == "[demo-small] panel question"
    response = await chat(client, "compare [[fake:judge=invalid only=judge-model]]", system="FUSION-JUDGE")
    assert_judge_analysis(json.loads(content_of(response)))


async def test_judge_streaming_concatenates_to_json(client: httpx.AsyncClient) -> None:
    response = await chat(client, "compare", system="FUSION-JUDGE", stream=True)
    chunks = [json.loads(p) for p in sse_payloads(response.text)[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert_judge_analysis(json.loads(text))


SCRIPT = {
    "capital of France": "Paris is the capital of France.",
    "weather": {"demo-small": "Sunny.", "*": "Rainy."},
    "only-large": {"demo-large": "Large only."},
}


async def test_script(start_backend: StartBackend) -> None:
    small = await start_backend("demo-small", script=SCRIPT)
    large = await start_backend("demo-large", script=SCRIPT)
    async with httpx.AsyncClient(timeout=10) as http:

        async def ask(base: str, text: str, **extra: Any) -> str:
            return content_of(await http.post(f"{base}/v1/chat/completions", json=chat_body(text, **extra)))

        assert await ask(small, "What is the capital of France?") == "Paris is the capital of France."
        assert await ask(small, "weather today?") == "Sunny."
        assert await ask(large, "weather today?") == "Rainy."
        assert await ask(large, "only-large") == "Large only."
        assert await ask(small, "only-large") == "[demo-small] only-large"
        assert await ask(small, "something else") == "[demo-small] something else"
        # the judge wins over the script even when the judge prompt quotes the user question
        judged = await ask(small, "capital of France: compare", system="FUSION-JUDGE")
        assert_judge_analysis(json.loads(judged))


def test_load_script_and_arguments(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(SCRIPT), encoding="utf-8")
    assert load_script(path) == SCRIPT

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--model", "m", "--script", str(path)])
    assert (args.host, args.port, args.model, args.latency_ms, args.script) == (
        "127.0.0.1",
        0,
        "m",
        0.0,
        str(path),
    )

    path.write_text(json.dumps({"x": 1}), encoding="utf-8")
    with pytest.raises(ValueError):
        load_script(path)
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError):
        load_script(path)


# --- records -------------------------------------------------------------------------------------


async def test_records(client: httpx.AsyncClient) -> None:
    await chat(client, "first", headers={"Authorization": "Bearer sk-abc", "X-Custom": "V"})
    await chat(client, "second", stream=True)
    first, second = await records(client)
    assert second["id"] > first["id"]
    assert first["path"] == "/v1/chat/completions"
    assert first["method"] == "POST"
    assert first["headers"]["authorization"] == "Bearer sk-abc"
    assert first["headers"]["x-custom"] == "V"
    assert first["body"] == chat_body("first")
    assert isinstance(first["received_at"], float)
    for record in (first, second):
        assert (record["status"], record["completed"], record["cancelled"]) == (200, True, False)

    assert (await client.delete("/_fake/requests")).status_code == 200
    assert await records(client) == []
    await chat(client, "third")
    (third,) = await records(client)
    assert third["id"] > second["id"]


async def test_cancelled_when_client_times_out_during_delay(base_url: str, client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=0.2) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await chat(impatient, "slow [[fake:delay_ms=5000]]")
    record = await wait_for_record(client, lambda r: r["cancelled"])
    assert record["status"] is None
    assert record["completed"] is False


async def test_cancelled_when_client_leaves_mid_stream(base_url: str, client: httpx.AsyncClient) -> None:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=10) as reader,
        reader.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body("a b c d [[fake:stream_delay_ms=300]]", stream=True),
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                break  # leaving the block closes the connection mid-stream
    record = await wait_for_record(client, lambda r: r["cancelled"])
    assert record["status"] == 200
    assert record["completed"] is False


async def test_cancelled_without_handler_cancellation() -> None:
    """With aiohttp's default runner the disconnect surfaces as a failed write instead."""
    runner = web.AppRunner(build_app(MODEL, stream_delay_ms=200))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            async with http.stream("POST", "/v1/chat/completions", json=chat_body("a b c", stream=True)) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        break
            record = await wait_for_record(http, lambda r: r["cancelled"])
            assert record["completed"] is False
    finally:
        await runner.cleanup()


async def test_logs_never_contain_header_values(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-very-secret-value"
    headers = {"Authorization": f"Bearer {secret}", "User-Agent": f"agent {secret}", "x-api-key": secret}
    await chat(client, "hi", headers=headers)
    await chat(client, "hi", headers=headers, stream=True)
    await chat(client, "hi [[fake:status=500]]", headers=headers)
    await client.get("/v1/models", headers=headers)
    assert "/v1/chat/completions" in caplog.text  # the access log is on ...
    assert secret not in caplog.text  # ... but carries no header values


def test_in_process_state_is_reachable() -> None:
    app = build_app("m", 5.0, stream_delay_ms=1.0, script={"a": "b"})
    backend = app[BACKEND]
    assert (backend.model, backend.latency_ms, backend.stream_delay_ms, dict(backend.script)) == (
        "m",
        5.0,
        1.0,
        {"a": "b"},
    )


# --- the CLI entry point --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_run_exits_cleanly_on_signal(sig: signal.Signals) -> None:
    code = (
        "import argparse, sys\n"
        "from extproc.dev import add_arguments\n"
        "from extproc.dev.fake_backend import run\n"
        "parser = argparse.ArgumentParser()\n"
        "add_arguments(parser)\n"
        "sys.exit(run(parser.parse_args(sys.argv[1:])))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        "--port",
        "0",
        "--model",
        "demo-cli",
        cwd=REPO_ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        port = None
        output = ""
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, f"backend exited early: {output}"
            output += line
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body("cli"))
            assert content_of(response) == "[demo-cli] cli"
        proc.send_signal(sig)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert b"Traceback" not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_run_reports_busy_port() -> None:
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code = (
            "import argparse, sys\n"
            "from extproc.dev.fake_backend import run\n"
            f"sys.exit(run(argparse.Namespace(host='127.0.0.1', port={port}, model='m', latency_ms=0.0)))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
