"""Envoy in FULL_DUPLEX_STREAMED mode: routing still works, and fusion answers stream token by token."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from conftest import MAX_BODY, backend_requests, clear_backends

pytestmark = pytest.mark.integration

SLOW_SYNTHESIS = "[[fake:stream_delay_ms=80]]"  # only streamed answers (the synthesis) are slowed


def stream_times(client: openai.OpenAI, text: str) -> tuple[list[float], str, dict | None]:
    """Arrival times of content deltas (relative to the request), the text and the fusion trace."""
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    times, content, trace = [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                times.append(time.monotonic() - started)
                content += choice.delta.content
        trace = (chunk.model_extra or {}).get("fusion") or trace
    return times, content, trace


def test_routed_requests_work_in_duplex_mode(duplex_client, duplex_stack):
    clear_backends(duplex_stack)
    raw = duplex_client.chat.completions.with_raw_response.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": "python stack trace"}],
        extra_headers={"x-quorum-model": "demo-large"},
    )
    assert raw.headers["x-quorum-model"] == "demo-coder"
    assert raw.headers["x-quorum-decision"] == "coding"
    assert raw.parse().model == "coder-v1"
    [received] = backend_requests(duplex_stack, "demo-coder")
    assert received["body"]["model"] == "coder-v1"
    assert received["headers"]["x-quorum-model"] == "demo-coder"  # the forged header did not survive


def test_routed_streaming_passes_through_in_duplex_mode(duplex_client):
    stream = duplex_client.chat.completions.create(
        model="demo-small", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "[demo-small] one two three"


def test_errors_in_duplex_mode(duplex_client, duplex_stack):
    with pytest.raises(openai.NotFoundError):
        duplex_client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    response = httpx.post(
        f"{duplex_stack.envoy_url}/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_chunked_body_over_limit_is_413_in_duplex_mode(duplex_stack):
    def chunks():
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY // 16384 + 4):
            yield b"z" * 16384
        yield b'"}]}'

    response = httpx.post(
        f"{duplex_stack.envoy_url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_true_streaming_delivers_synthesis_tokens_as_they_are_produced(duplex_client):
    times, content, trace = stream_times(duplex_client, f"compare tea and coffee {SLOW_SYNTHESIS}")
    assert content.startswith("[demo-large] compare tea and coffee")
    assert trace is not None and len(trace["responses"]) == 2
    # ~5 words at 80 ms each: the first token arrives well before the last one.
    assert len(times) >= 4
    assert times[-1] - times[0] >= 0.2


def test_buffered_mode_delivers_the_same_answer_at_once(buffered_client):
    times, content, _ = stream_times(buffered_client, f"compare tea and coffee {SLOW_SYNTHESIS}")
    assert content.startswith("[demo-large] compare tea and coffee")
    assert times[-1] - times[0] < 0.2  # one ImmediateResponse: every piece arrives together


def test_heartbeats_flow_while_the_panel_works(duplex_stack):
    body = {
        "model": "quorum/auto",
        "stream": True,
        "messages": [{"role": "user", "content": "compare [[fake:delay_ms=500 only=demo-small]]"}],
    }
    with httpx.stream("POST", f"{duplex_stack.envoy_url}/v1/chat/completions", json=body, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-quorum-decision"] == "deliberate"
        lines = [line for line in response.iter_lines() if line]
    heartbeats = [line for line in lines if line.startswith(":")]
    assert len(heartbeats) >= 2  # 100 ms interval over a 500 ms panel
    assert lines[-1] == "data: [DONE]"
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert all(line.startswith(":") for line in lines[:first_data])


def test_non_streaming_fusion_in_duplex_mode_is_one_json_answer(duplex_client):
    raw = duplex_client.chat.completions.with_raw_response.create(
        model="quorum/auto", messages=[{"role": "user", "content": "compare x and y"}]
    )
    body = json.loads(raw.text)
    assert body["object"] == "chat.completion" and len(body["fusion"]["responses"]) == 2


def test_streamed_fusion_failure_is_reported_in_band(duplex_stack):
    body = {
        "model": "quorum/auto",
        "stream": True,
        "messages": [{"role": "user", "content": "compare [[fake:status=503 only=demo-small,demo-coder]]"}],
    }
    with httpx.stream("POST", f"{duplex_stack.envoy_url}/v1/chat/completions", json=body, timeout=20) as response:
        assert response.status_code == 200  # already sent when the panel failed
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    error = json.loads(events[0])["error"]
    assert error["code"] == "fusion_panel_failed" and "demo-small: HTTP 503" in error["message"]
    assert events[-1] == "[DONE]"
