"""The confidence gate through a real Envoy with the openai SDK (both request body modes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from conftest import BODY_MODES, backend_requests, clear_backends, running_stack_with, stream_chat

from extproc.dev.stack import Stack

pytestmark = pytest.mark.integration

GATE = {
    "model": "demo-small",
    "min_mean_logprob": -0.5,
    "escalate": {"model": "demo-large", "analysis_models": ["demo-small", "demo-coder"]},
}


@pytest.fixture(scope="module", params=list(BODY_MODES))
def gate_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gated = {"name": "gated", "priority": 300, "algorithm": {"type": "confidence", "confidence": GATE}}
    workdir = tmp_path_factory.mktemp(f"gate-{request.param}")
    yield from running_stack_with(workdir, BODY_MODES[request.param], gated)


@pytest.fixture
def gate_client(gate_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gate_stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)


def ask(client: openai.OpenAI, text: str):
    raw = client.chat.completions.with_raw_response.create(
        model="quorum/fusion", messages=[{"role": "user", "content": text}]
    )
    return raw.headers, json.loads(raw.text)


def calls(stack: Stack) -> dict[str, int]:
    return {m: len(backend_requests(stack, m)) for m in ("demo-small", "demo-coder", "demo-large")}


def test_a_confident_cheap_model_answers_alone(gate_client, gate_stack):
    clear_backends(gate_stack)
    headers, body = ask(gate_client, "what is two plus two [[fake:logprob=-0.1]]")
    assert calls(gate_stack) == {"demo-small": 1, "demo-coder": 0, "demo-large": 0}
    assert backend_requests(gate_stack, "demo-small")[0]["body"]["logprobs"] is True
    assert body["choices"][0]["message"]["content"] == "[demo-small] what is two plus two"
    assert body["confidence"]["gate"]["decision"] == "answered"
    assert body["confidence"]["gate"]["mean_logprob"] == pytest.approx(-0.1)
    assert headers["x-quorum-gate"] == "demo-small" and headers["x-quorum-decision"] == "gated"
    assert body["usage"] == backend_requests(gate_stack, "demo-small")[0]["usage"]  # one call's usage


def test_an_unsure_cheap_model_escalates_to_the_fusion(gate_client, gate_stack):
    clear_backends(gate_stack)
    _, body = ask(gate_client, "a hard question [[fake:logprob=-2.0]]")
    # The cheap answer is the demo-small panel member: asked once, not twice.
    assert calls(gate_stack) == {"demo-small": 1, "demo-coder": 1, "demo-large": 2}
    trace = body["confidence"]
    assert trace["escalated"] == "low_confidence" and trace["gate"]["reused_in_panel"] is True
    assert body["choices"][0]["message"]["content"].startswith("[demo-large]")


def test_a_backend_without_logprobs_escalates_and_says_so(gate_client, gate_stack):
    clear_backends(gate_stack)
    _, body = ask(gate_client, "anything [[fake:no_logprobs only=demo-small]]")
    assert body["confidence"]["escalated"] == "missing_logprobs"
    assert calls(gate_stack)["demo-large"] == 2


def test_streaming_gate_answers_once_decided(gate_client, gate_stack):
    clear_backends(gate_stack)
    text, trace, usage = stream_chat(gate_client, "stream it [[fake:logprob=-0.2]]", "confidence", "quorum/fusion")
    assert text == "[demo-small] stream it"
    assert trace["gate"]["decision"] == "answered" and calls(gate_stack)["demo-large"] == 0
    assert usage is not None and usage.total_tokens > 0
