"""The confidence gate: the cheap answer when it is sure, the fusion when it is not (or cannot say)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from builders import answer_locally, chat, runtime_with_decision, sse_events, traced_telemetry
from fakes import FakeModelClient

from extproc.config import ConfigError
from extproc.fusion.prompts import ANALYSIS_KEYS
from extproc.modeltypes import ModelCallError

ANALYSIS = json.dumps({k: [] for k in ANALYSIS_KEYS})
SURE = [-0.01, -0.2, -0.05]  # mean -0.087
UNSURE = [-0.3, -2.5, -1.9]  # mean -1.567


def gate_runtime(**settings: Any):
    confidence = {
        "model": "demo-small",
        "min_mean_logprob": -0.5,
        "escalate": {"model": "demo-large", "analysis_models": ["demo-small", "demo-coder"]},
        **settings,
    }
    return runtime_with_decision({"name": "gated", "algorithm": {"type": "confidence", "confidence": confidence}})


def client(small_logprobs: list[float] | None, **replies: Any) -> FakeModelClient:
    base: dict[str, Any] = {"demo-small": "Cheap answer.", "demo-coder": "Coder answer.", "demo-large": None}
    base["demo-large"] = [ANALYSIS, "Fused answer."]
    base.update(replies)
    return FakeModelClient(replies=base, logprobs={"demo-small": small_logprobs, "demo-coder": SURE})


async def gated(fake, **extra: Any) -> dict[str, Any]:
    _, out = await answer_locally(gate_runtime(), fake, chat("compare tea and coffee", **extra))
    return orjson.loads(out[-1].immediate_response.body)


async def test_a_confident_cheap_answer_is_returned_after_one_call():
    fake = client(SURE)
    body = await gated(fake)
    assert [c.model for c in fake.calls] == ["demo-small"]
    assert fake.calls[0].body["logprobs"] is True and "stream" not in fake.calls[0].body
    assert body["choices"][0]["message"]["content"] == "Cheap answer."
    gate = body["confidence"]["gate"]
    assert gate == {
        "model": "demo-small",
        "threshold": -0.5,
        "mean_logprob": pytest.approx(-0.0867, abs=1e-3),
        "tokens": 3,
        "decision": "answered",
    }
    assert "escalated" not in body["confidence"] and body["usage"]["total_tokens"] == 15


async def test_an_unsure_answer_escalates_and_is_reused_as_a_panel_member():
    fake = client(UNSURE)
    body = await gated(fake)
    # demo-small is asked once (the gate), not again as a panel member.
    assert [c.model for c in fake.calls] == ["demo-small", "demo-coder", "demo-large", "demo-large"]
    assert body["choices"][0]["message"]["content"] == "Fused answer."
    trace = body["confidence"]
    assert trace["escalated"] == "low_confidence"
    assert trace["gate"]["decision"] == "escalated" and trace["gate"]["reused_in_panel"] is True
    assert [r["model"] for r in trace["responses"]] == ["demo-small", "demo-coder"]
    judge_prompt = json.dumps(fake.calls[2].body["messages"])
    assert "Cheap answer." in judge_prompt and "Coder answer." in judge_prompt
    assert [s["stage"] for s in trace["stages"]] == ["gate", "panel", "judge", "synthesis"]
    assert body["usage"]["total_tokens"] == 60  # four calls


async def test_missing_logprobs_escalate_and_the_trace_says_why():
    fake = client(None)
    body = await gated(fake)
    assert body["confidence"]["escalated"] == "missing_logprobs"
    assert body["confidence"]["gate"]["mean_logprob"] is None
    assert body["choices"][0]["message"]["content"] == "Fused answer."


async def test_a_failed_gate_call_escalates_to_the_whole_panel():
    fake = client(SURE, **{"demo-small": [ModelCallError("demo-small", "HTTP 503", 503), "Panel small."]})
    body = await gated(fake)
    assert body["confidence"]["escalated"] == "gate_failed"
    assert body["confidence"]["gate_error"] == "HTTP 503"
    assert [c.model for c in fake.calls].count("demo-small") == 2  # the gate, then as a panel member


async def test_a_gate_model_outside_the_panel_is_not_reused():
    runtime = gate_runtime(model="demo-large")
    fake = FakeModelClient(
        replies={"demo-large": ["Big cheap.", ANALYSIS, "Fused."], "demo-small": "s", "demo-coder": "c"},
        logprobs={"demo-large": UNSURE},
    )
    _, out = await answer_locally(runtime, fake, chat("compare"))
    body = orjson.loads(out[-1].immediate_response.body)
    assert [c.model for c in fake.calls] == ["demo-large", "demo-small", "demo-coder", "demo-large", "demo-large"]
    assert "reused_in_panel" not in body["confidence"]["gate"]


async def test_streaming_buffers_the_cheap_answer_until_the_gate_decides():
    telemetry, exporter = traced_telemetry()
    body = chat("compare", stream=True, stream_options={"include_usage": True})
    _, out = await answer_locally(gate_runtime(), client(SURE), body, duplex=True, telemetry=telemetry)
    events = sse_events(out)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "Cheap answer."
    assert events[-2]["confidence"]["gate"]["decision"] == "answered" and events[-1]["usage"]["total_tokens"] == 15
    [span] = [s for s in exporter.get_finished_spans() if s.name == "quorum.confidence.gate"]
    assert span.attributes["quorum.confidence.escalated"] is False
    sent = out[0].streamed_immediate_response.headers_response.headers.headers
    assert {h.key: h.raw_value.decode() for h in sent}["x-quorum-gate"] == "demo-small"


async def test_streaming_an_escalation_streams_the_synthesis():
    body = chat("compare", stream=True)
    _, out = await answer_locally(gate_runtime(), client(UNSURE), body, duplex=True)
    events = sse_events(out)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text.strip() == "Fused answer."
    assert events[-1]["confidence"]["escalated"] == "low_confidence"


@pytest.mark.parametrize(
    ("confidence", "problem"),
    [
        ({"model": "nope"}, "algorithm.confidence.model: unknown model 'nope'"),
        ({"model": "demo-small", "escalate": {"model": "judge"}}, "algorithm.confidence.escalate.model: unknown model"),
        ({"model": "demo-small", "min_mean_logprob": 0.5}, "algorithm.confidence.min_mean_logprob"),
        (None, "algorithm.confidence: a confidence decision needs its settings"),
    ],
)
def test_config_problems_name_the_key(confidence, problem):
    algorithm: dict[str, Any] = {"type": "confidence"}
    if confidence is not None:
        algorithm["confidence"] = confidence
    with pytest.raises(ConfigError) as info:
        runtime_with_decision({"name": "gated", "modelRefs": [{"model": "demo-small"}], "algorithm": algorithm})
    assert any(problem in p for p in info.value.problems), info.value.problems
