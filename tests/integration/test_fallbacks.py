"""Model fallbacks done by Envoy: when the first model's backend is down or overloaded, the request is
answered by the next one, whose backend sees its own provider model id in the body."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import BODY_MODES, backend_requests, backend_url, clear_backends, metric_samples, running_stack

from extproc.dev.stack import Stack

pytestmark = pytest.mark.integration


def with_fallbacks(text: str) -> str:
    """demo-small falls back to demo-coder; the coding decision tries demo-coder, then demo-small."""
    text = text.replace("  message_timeout: 500ms\n", "  message_timeout: 500ms\n  fallback_idle_timeout: 1s\n")
    text = text.replace("cluster: demo_small\n", "cluster: demo_small\n      fallbacks: [demo-coder]\n")
    return text.replace("modelRefs: [{model: demo-coder}]", "modelRefs: [{model: demo-coder}, {model: demo-small}]")


@pytest.fixture(scope="module", params=list(BODY_MODES))
def fallback_stack(request, tmp_path_factory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp(f"fallback-{request.param}")
    yield from running_stack(workdir, BODY_MODES[request.param], edit=with_fallbacks)


@pytest.fixture(scope="module")
def accounted_fallback_stack(tmp_path_factory) -> Iterator[Stack]:
    """The same chains with usage accounting on."""
    workdir = tmp_path_factory.mktemp("fallback-usage")
    yield from running_stack(workdir, "full_duplex_streamed", edit=with_fallbacks, usage="{enabled: true}")


def ask(stack: Stack, text: str, model: str, **headers: str):
    client = openai.OpenAI(base_url=f"{stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers
    )
    return raw.headers, raw.parse()


@pytest.mark.parametrize("status", ["503", "429", "502"])
def test_overloaded_first_model_falls_over_to_the_next(fallback_stack, status):
    clear_backends(fallback_stack)
    headers, completion = ask(
        fallback_stack, "hello", "demo-small", **{"x-fake-status": status, "x-fake-only": "demo-small"}
    )
    assert completion.choices[0].message.content == "[demo-coder] hello"
    assert headers["x-quorum-model"] == "demo-coder"  # the model that answered
    [tried] = backend_requests(fallback_stack, "demo-small")
    assert tried["body"]["model"] == "small-v1" and tried["status"] == int(status)
    [answered] = backend_requests(fallback_stack, "demo-coder")
    assert answered["body"]["model"] == "coder-v1"  # rewritten for the backend that answered
    assert answered["body"]["messages"] == [{"role": "user", "content": "hello"}]
    for seen in (tried, answered):  # the client's key is the gateway's, never a backend's
        assert "authorization" not in seen["headers"] and "x-api-key" not in seen["headers"]


def test_first_model_that_times_out_falls_over_to_the_next(fallback_stack):
    clear_backends(fallback_stack)
    _, completion = ask(
        fallback_stack, "slow", "demo-small", **{"x-fake-delay-ms": "4000", "x-fake-only": "demo-small"}
    )
    assert completion.choices[0].message.content == "[demo-coder] slow"  # after envoy.fallback_idle_timeout (1 s)


def test_decision_model_refs_are_the_fallback_order(fallback_stack):
    clear_backends(fallback_stack)
    headers, completion = ask(
        fallback_stack, "python help", "quorum/auto", **{"x-fake-status": "503", "x-fake-only": "demo-coder"}
    )
    assert headers["x-quorum-decision"] == "coding"
    assert completion.choices[0].message.content == "[demo-small] python help"
    assert backend_requests(fallback_stack, "demo-small")[0]["body"]["model"] == "small-v1"
    headers, completion = ask(fallback_stack, "python help", "quorum/auto")  # both up: the first answers
    assert completion.choices[0].message.content == "[demo-coder] python help"


def test_usage_and_metrics_count_the_model_that_answered(accounted_fallback_stack):
    stack = accounted_fallback_stack
    before = metric_samples(stack)
    headers, completion = ask(stack, "hello", "demo-small", **{"x-fake-status": "503", "x-fake-only": "demo-small"})
    assert headers["x-quorum-model"] == "demo-coder"
    answered = 'quorum_requests_total{decision="explicit",model="demo-coder",status="200"}'
    deadline = time.monotonic() + 5
    while (after := metric_samples(stack)).get(answered, 0) == before.get(answered, 0) and time.monotonic() < deadline:
        time.sleep(0.05)  # counted when Envoy closes the request's ext_proc stream

    def added(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert added(answered) == 1
    assert added('quorum_tokens_total{direction="input",model="demo-coder"}') == completion.usage.prompt_tokens
    assert added('quorum_tokens_total{direction="output",model="demo-coder"}') == completion.usage.completion_tokens
    assert not [key for key in after if "demo-small" in key and added(key)]  # tried, failed, not charged


def test_stopped_backend_falls_over_to_the_next_model_and_streams(fallback_stack):
    """Last in the module: it stops demo-small's backend for good."""
    [proc] = [p for name, p in fallback_stack.processes if name == "fake-demo-small"]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    httpx.delete(f"{backend_url(fallback_stack, 'demo-coder')}/_fake/requests")
    headers, completion = ask(fallback_stack, "are you there", "demo-small")
    assert completion.choices[0].message.content == "[demo-coder] are you there"
    assert headers["x-quorum-model"] == "demo-coder"
    [answered] = backend_requests(fallback_stack, "demo-coder")
    assert answered["body"]["model"] == "coder-v1"
    client = openai.OpenAI(base_url=f"{fallback_stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)
    chunks = list(
        client.chat.completions.create(model="demo-small", messages=[{"role": "user", "content": "s"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[demo-coder] s"
