"""The fusion looper with a scripted model client: every stage and every degrade path."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from builders import config_text
from fakes import FakeModelClient

from extproc.algorithms.render import render_completion
from extproc.algorithms.trace import RunTrace
from extproc.config import FusionConfig, parse_config
from extproc.errors import BadRequest, UpstreamError
from extproc.fusion.judge import assign_labels, parse_analysis
from extproc.fusion.looper import deliberate, synthesize, synthesize_stream
from extproc.fusion.plan import FusionPlan, build_plan
from extproc.fusion.prompts import ANALYSIS_KEYS, NO_ANALYSIS, label
from extproc.modeltypes import Completion, ModelCallError, Usage
from extproc.runtime import build_runtime

RT = build_runtime(parse_config(config_text()), environ={"QUORUM_TEST_LARGE_KEY": "k"})
ANALYSIS = {k: [f"{k} point"] for k in ANALYSIS_KEYS}
HEADERS = {"x-request-id": "rid-1"}


def make_plan(judge_schema: bool = False, **settings: Any) -> FusionPlan:
    judge = RT.models["demo-large"]
    if judge_schema:
        from dataclasses import replace

        judge = replace(judge, supports_json_schema=True)
    return FusionPlan(
        decision="deliberate",
        panel=(RT.models["demo-small"], RT.models["demo-coder"]),
        judge=judge,
        config=FusionConfig.model_validate(settings),
    )


def request(text: str = "Which is better, tea or coffee?", **extra: Any) -> dict[str, Any]:
    return {"model": "quorum/auto", "messages": [{"role": "user", "content": text}], **extra}


def client(**judge_and_more: Any) -> FakeModelClient:
    replies: dict[str, Any] = {"demo-small": "Tea, for its calm.", "demo-coder": "Coffee, for its kick and aroma."}
    replies["demo-large"] = [json.dumps(ANALYSIS), "The synthesis."]
    replies.update(judge_and_more)
    return FakeModelClient(replies=replies)


async def run(fake: FakeModelClient, plan: FusionPlan | None = None, body: dict[str, Any] | None = None):
    plan = plan or make_plan()
    body = body or request()
    trace = RunTrace("fusion", plan.decision)
    d = await deliberate(fake, plan, body, HEADERS, trace)
    final = await synthesize(fake, d, body, HEADERS, trace)
    return d, final, render_completion("quorum/auto", final.message, final.finish_reason, trace)


def calls_to(fake: FakeModelClient, model: str) -> list:
    return [c for c in fake.calls if c.model == model]


async def test_happy_path_trace_usage_and_answer():
    fake = client()
    _d, _final, out = await run(fake)
    assert out["choices"][0]["message"]["content"] == "The synthesis."
    trace = out["fusion"]
    assert [r["model"] for r in trace["responses"]] == ["demo-small", "demo-coder"]
    assert {r["label"] for r in trace["responses"]} == {"A", "B"}
    assert trace["analysis"] == ANALYSIS
    assert trace["degraded"] == [] and trace["failed_models"] == []
    assert out["usage"] == {"prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60}  # 4 calls
    assert all(c.headers == HEADERS for c in fake.calls)  # the request id reaches every model call


async def test_judge_prompt_names_no_model_and_uses_labels():
    fake = client()
    await run(fake)
    judge_call = calls_to(fake, "demo-large")[0]
    prompt = json.dumps(judge_call.body["messages"])
    assert "Response A" in prompt and "Response B" in prompt
    assert "demo-small" not in prompt and "demo-coder" not in prompt
    assert "Tea, for its calm." in prompt and "Coffee, for its kick and aroma." in prompt


def test_labels_are_shuffled():
    answers = [Completion(m, {"content": m}, "stop", Usage(), 0, 1) for m in ("x", "y", "z")]
    orders = {tuple(c.model for _, c in assign_labels(answers, random.Random(seed))) for seed in range(30)}
    assert len(orders) > 1
    assert [name for name, _ in assign_labels(answers, random.Random(1))] == ["A", "B", "C"]
    assert [label(i) for i in (0, 25, 26, 27)] == ["A", "Z", "AA", "AB"]


async def test_failed_panel_member_is_skipped_and_its_usage_counted():
    fake = client(**{"demo-small": ModelCallError("demo-small", "HTTP 503", 503)})
    _, _, out = await run(fake)
    trace = out["fusion"]
    assert [r["model"] for r in trace["responses"]] == ["demo-coder"]
    assert trace["failed_models"] == [{"model": "demo-small", "error": "HTTP 503"}]
    assert trace["degraded"] == ["panel_partial"]
    assert out["usage"]["total_tokens"] == 15 * 3 + 1


async def test_on_error_fail_stops_the_run():
    fake = client(**{"demo-small": ModelCallError("demo-small", "HTTP 500", 500)})
    with pytest.raises(UpstreamError) as info:
        await run(fake, make_plan(on_error="fail"))
    assert info.value.status == 502 and "demo-small: HTTP 500" in info.value.message


async def test_all_panel_failures_are_a_502_naming_each_model():
    fake = client(**{m: ModelCallError(m, "HTTP 429", 429) for m in ("demo-small", "demo-coder")})
    with pytest.raises(UpstreamError) as info:
        await run(fake)
    assert "demo-small: HTTP 429" in info.value.message and "demo-coder: HTTP 429" in info.value.message
    assert calls_to(fake, "demo-large") == []  # no judge without answers


async def test_quorum_after_round_timeout_cancels_stragglers():
    fake = client()
    fake.delays["demo-coder"] = 30
    d, _, out = await run(fake, make_plan(min_successful_responses=1, round_timeout=0.05))
    assert [c.model for c in d.panel.answers] == ["demo-small"]
    assert out["fusion"]["cancelled_models"] == ["demo-coder"]
    assert calls_to(fake, "demo-coder")[0].cancelled


async def test_without_round_timeout_every_answer_is_awaited():
    fake = client()
    fake.delays["demo-coder"] = 0.1
    d, _, _ = await run(fake, make_plan(min_successful_responses=1))
    assert [c.model for c in d.panel.answers] == ["demo-small", "demo-coder"]


async def test_panel_timeout_is_a_failure_of_the_slow_model():
    fake = client()
    fake.delays["demo-coder"] = 30
    _, _, out = await run(fake, make_plan(timeouts={"panel": 0.1}))
    assert out["fusion"]["failed_models"][0]["model"] == "demo-coder"
    assert "timed out" in out["fusion"]["failed_models"][0]["error"]


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(ANALYSIS),
        "```json\n" + json.dumps(ANALYSIS) + "\n```",
        "Here is my analysis:\n" + json.dumps(ANALYSIS) + "\nHope it helps.",
    ],
    ids=["plain", "fenced", "surrounded"],
)
def test_parse_analysis_tolerates_fences_and_prose(text):
    assert parse_analysis(text) == ANALYSIS


def test_parse_analysis_rejects_non_analysis_and_fills_missing_keys():
    assert parse_analysis("no json here") is None
    assert parse_analysis('{"answer": 42}') is None
    partial = parse_analysis('{"consensus": "one point"}')
    assert partial["consensus"] == ["one point"] and partial["blind_spots"] == []


async def test_invalid_judge_json_is_asked_again_then_marked_parse_failed():
    fake = client(**{"demo-large": ["not json", "still not json", "The synthesis."]})
    _, _, out = await run(fake)
    assert out["fusion"]["analysis"] == {"parse_failed": True, "raw": "still not json"}
    assert out["fusion"]["degraded"] == ["judge_parse_failed"]
    judge_calls = calls_to(fake, "demo-large")
    assert len(judge_calls) == 3
    synthesis_briefing = judge_calls[2].body["messages"][0]["content"]
    assert NO_ANALYSIS in synthesis_briefing
    assert out["usage"]["total_tokens"] == 15 * 5  # both judge attempts are counted


async def test_judge_reask_recovers():
    fake = client(**{"demo-large": ["not json", json.dumps(ANALYSIS), "The synthesis."]})
    _, _, out = await run(fake)
    assert out["fusion"]["analysis"] == ANALYSIS and out["fusion"]["degraded"] == []


async def test_judge_failure_synthesises_without_analysis():
    fake = client(**{"demo-large": [ModelCallError("demo-large", "HTTP 500", 500), "The synthesis."]})
    _, _, out = await run(fake)
    assert out["fusion"]["degraded"] == ["judge_failed"]
    assert out["fusion"]["judge_error"] == "HTTP 500"
    assert out["choices"][0]["message"]["content"] == "The synthesis."
    assert NO_ANALYSIS in calls_to(fake, "demo-large")[-1].body["messages"][0]["content"]


async def test_synthesis_failure_returns_the_best_panel_answer():
    fake = client(**{"demo-large": [json.dumps(ANALYSIS), ModelCallError("demo-large", "HTTP 502", 502)]})
    _, _, out = await run(fake)
    assert out["choices"][0]["message"]["content"] == "Coffee, for its kick and aroma."  # the longer answer
    assert out["fusion"]["degraded"] == ["synthesis_failed"]
    assert out["fusion"]["synthesis_error"] == "demo-large: HTTP 502"
    assert out["fusion"]["stages"][-1]["outcome"] == "error: HTTP 502"


async def test_synthesis_finish_reason_is_kept():
    fake = client()
    fake.finish_reasons["demo-large"] = "length"
    _, _, out = await run(fake)
    assert out["choices"][0]["finish_reason"] == "length"


async def test_tools_go_to_synthesis_only_and_briefing_merges_with_system_prompt():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    body = {
        "model": "quorum/auto",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "tea or coffee?"}],
        "tools": tools,
        "tool_choice": "auto",
        "stream": False,
        "n": 1,
    }
    fake = client()
    await run(fake, body=body)
    panel_calls = calls_to(fake, "demo-small") + calls_to(fake, "demo-coder")
    judge_call, synthesis_call = calls_to(fake, "demo-large")
    for call in [*panel_calls, judge_call]:
        assert "tools" not in call.body and "tool_choice" not in call.body
    assert synthesis_call.body["tools"] == tools and synthesis_call.body["tool_choice"] == "auto"
    messages = synthesis_call.body["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]  # one system message, user's question last
    assert messages[0]["content"].endswith("Be brief.") and "Response A" in messages[0]["content"]
    assert messages[1]["content"] == "tea or coffee?"


async def test_judge_asks_for_json_schema_only_when_supported():
    fake = client()
    await run(fake, make_plan(judge_schema=True))
    assert calls_to(fake, "demo-large")[0].body["response_format"]["type"] == "json_schema"
    fake = client()
    await run(fake)
    assert "response_format" not in calls_to(fake, "demo-large")[0].body


async def test_panel_overrides_and_temperature():
    plan = make_plan(
        temperature=0.3, analysis_overrides={"demo-coder": {"temperature": 0.9, "max_completion_tokens": 77}}
    )
    fake = client()
    await run(fake, plan, request(max_tokens=5))
    small, coder = calls_to(fake, "demo-small")[0], calls_to(fake, "demo-coder")[0]
    assert small.body["temperature"] == 0.3 and small.body["max_tokens"] == 5
    assert coder.body["temperature"] == 0.9 and coder.body["max_completion_tokens"] == 77
    assert "max_tokens" not in coder.body


async def test_include_switches_trim_the_trace():
    _, _, out = await run(client(), make_plan(include_analysis=False, include_intermediate_responses=False))
    assert "analysis" not in out["fusion"] and "responses" not in out["fusion"]
    assert out["fusion"]["judge_model"] == "demo-large"


async def test_streamed_synthesis_yields_chunks_and_usage():
    fake = client(**{"demo-large": [json.dumps(ANALYSIS), "streamed final answer"]})
    trace = RunTrace("fusion", "deliberate")
    d = await deliberate(fake, make_plan(), request(), HEADERS, trace)
    choices = [c async for c in synthesize_stream(fake, d, request(), HEADERS, trace)]
    text = "".join(c["delta"].get("content", "") for c in choices)
    assert text.strip() == "streamed final answer"
    assert choices[-1]["finish_reason"] == "stop"
    assert [(s["stage"], s["model"]) for s in trace.calls][-1] == ("synthesis", "demo-large")


async def test_streamed_synthesis_falls_back_before_first_token():
    fake = client(**{"demo-large": [json.dumps(ANALYSIS), ModelCallError("demo-large", "HTTP 500", 500)]})
    trace = RunTrace("fusion", "deliberate")
    d = await deliberate(fake, make_plan(), request(), HEADERS, trace)
    choices = [c async for c in synthesize_stream(fake, d, request(), HEADERS, trace)]
    assert choices[0]["delta"]["content"] == "Coffee, for its kick and aroma."
    assert trace.fields["synthesis_error"] and "synthesis_failed" in trace.degraded


def test_plugin_overrides_the_panel_and_judge():
    fusion = RT.local_decisions[0].algorithm
    plugin = {"id": "fusion", "model": "demo-small", "analysis_models": ["demo-large"]}
    plan = build_plan(RT, "deliberate", fusion.config, fusion.models, request(plugins=[plugin]))
    assert [m.name for m in plan.panel] == ["demo-large"] and plan.judge.name == "demo-small"
    default = build_plan(RT, "deliberate", fusion.config, fusion.models, request())
    assert [m.name for m in default.panel] == ["demo-small", "demo-coder"] and default.judge.name == "demo-large"


@pytest.mark.parametrize(
    ("plugin", "param"),
    [
        ({"id": "fusion", "analysis_models": ["demo-small", "gpt-4o"]}, "plugins[0].analysis_models[1]"),
        ({"id": "fusion", "analysis_models": ["quorum/fusion"]}, "plugins[0].analysis_models[0]"),
        ({"id": "fusion", "model": "quorum/auto"}, "plugins[0].model"),
        ({"id": "fusion", "analysis_models": []}, "plugins[0].analysis_models"),
    ],
)
def test_plugin_may_only_name_configured_models(plugin, param):
    with pytest.raises(BadRequest) as info:
        fusion = RT.local_decisions[0].algorithm
        build_plan(RT, "deliberate", fusion.config, fusion.models, request(plugins=[plugin]))
    assert info.value.param == param
