"""Fusion through a real Envoy with the openai SDK: panel, judge, synthesis, degrade paths, streaming."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from conftest import backend_requests, clear_backends, stream_chat

pytestmark = pytest.mark.integration

PANEL = ["demo-small", "demo-coder"]
JUDGE = "demo-large"


def fuse(client: openai.OpenAI, text: str, model: str = "quorum/auto", **kwargs):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kwargs
    )
    return raw.headers, json.loads(raw.text)


def reported_usage(stack) -> dict[str, int]:
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for model in (*PANEL, JUDGE):
        for record in backend_requests(stack, model):
            for key in total:
                total[key] += (record.get("usage") or {}).get(key, 0)
    return total


def test_fusion_decision_answers_with_trace_and_summed_usage(client, stack):
    clear_backends(stack)
    headers, body = fuse(client, "compare cats and dogs")
    assert headers["x-quorum-decision"] == "deliberate"
    assert headers["x-quorum-judge"] == JUDGE
    assert headers["x-quorum-panel"] == ",".join(PANEL)
    trace = body["fusion"]
    assert [r["model"] for r in trace["responses"]] == PANEL
    assert {r["content"] for r in trace["responses"]} == {f"[{m}] compare cats and dogs" for m in PANEL}
    assert sorted(r["label"] for r in trace["responses"]) == ["A", "B"]
    assert set(trace["analysis"]) == {
        "consensus",
        "contradictions",
        "partial_coverage",
        "unique_insights",
        "blind_spots",
    }
    assert trace["judge_model"] == JUDGE and trace["analysis_models"] == PANEL
    assert trace["prompt_version"] == "fusion-v1"
    assert trace["failed_models"] == [] and trace["degraded"] == []
    assert body["model"] == "quorum/auto"
    assert body["choices"][0]["message"]["content"].startswith(f"[{JUDGE}]")
    assert body["choices"][0]["finish_reason"] == "stop"
    # 2 panel calls, 1 judge call, 1 synthesis call; usage is the sum of what each backend reported.
    assert len(backend_requests(stack, JUDGE)) == 2
    assert body["usage"] == reported_usage(stack)
    assert trace["consensus"]["reached"] is False  # the panel disagreed, so the judge ran


def test_agreeing_panel_exits_early_without_judge_or_synthesis(client, stack):
    clear_backends(stack)
    headers, body = fuse(client, "compare tea and coffee [[fake:plain]]")
    trace = body["fusion"]
    assert trace["early_exit"] == "consensus" and trace["consensus"]["chosen"] == PANEL[0]
    assert trace["consensus"]["pairs"] == [{"a": PANEL[0], "b": PANEL[1], "score": 1.0}]
    assert backend_requests(stack, JUDGE) == []  # neither the judge nor synthesis was called
    assert body["choices"][0]["message"]["content"] == "compare tea and coffee"
    assert body["usage"] == reported_usage(stack)  # the two panel calls only
    assert headers["x-quorum-decision"] == "deliberate"


def test_agreeing_panel_streams_the_chosen_answer(client, stack):
    clear_backends(stack)
    text, trace, usage = stream_chat(client, "compare tea and coffee [[fake:plain]]", "fusion")
    assert text == "compare tea and coffee"
    assert trace["early_exit"] == "consensus" and backend_requests(stack, JUDGE) == []
    assert usage.total_tokens == reported_usage(stack)["total_tokens"]


def test_judge_sees_anonymous_labels_only(client, stack):
    clear_backends(stack)
    fuse(client, "compare a and b")
    judge_call, _synthesis = backend_requests(stack, JUDGE)
    judge_prompt = json.dumps(judge_call["body"]["messages"])
    assert "Response A" in judge_prompt and "Response B" in judge_prompt
    for model in PANEL:
        assert f"[{model}]" in judge_prompt  # the answers themselves are there ...
        assert f"({model})" not in judge_prompt and f"{model}:" not in judge_prompt  # ... but not labelled by name


def test_fusion_alias_without_fusion_match_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        fuse(client, "hello there", model="quorum/fusion")
    assert info.value.body["code"] == "no_fusion_decision"


def test_plugin_overrides_panel_and_judge(client, stack):
    clear_backends(stack)
    headers, body = fuse(
        client,
        "hello there",
        model="quorum/fusion",
        extra_body={
            "plugins": [{"id": "fusion", "model": "demo-small", "analysis_models": ["demo-large", "demo-coder"]}]
        },
    )
    assert headers["x-quorum-panel"] == "demo-large,demo-coder"
    assert body["fusion"]["judge_model"] == "demo-small"
    assert [r["model"] for r in body["fusion"]["responses"]] == ["demo-large", "demo-coder"]
    assert "plugins" not in backend_requests(stack, "demo-large")[0]["body"]  # never forwarded to backends


@pytest.mark.parametrize("bad", ["gpt-4o", "quorum/fusion", "quorum/auto"])
def test_plugin_rejects_models_that_are_not_configured(client, bad):
    with pytest.raises(openai.BadRequestError) as info:
        fuse(
            client,
            "compare",
            model="quorum/fusion",
            extra_body={"plugins": [{"id": "fusion", "analysis_models": ["demo-small", bad]}]},
        )
    assert info.value.body["param"] == "plugins[0].analysis_models[1]"


def test_failing_panel_model_is_skipped_and_recorded(client):
    _, body = fuse(client, "compare x and y [[fake:status=500 only=demo-small]]")
    trace = body["fusion"]
    assert [r["model"] for r in trace["responses"]] == ["demo-coder"]
    assert trace["failed_models"][0]["model"] == "demo-small"
    assert "HTTP 500" in trace["failed_models"][0]["error"]
    assert "panel_partial" in trace["degraded"]


def test_all_panel_models_failing_is_502_naming_each(client):
    with pytest.raises(openai.APIStatusError) as info:
        fuse(client, "compare x [[fake:status=503 only=demo-small,demo-coder]]")
    assert info.value.status_code == 502
    message = info.value.body["message"]
    assert "demo-small: HTTP 503" in message and "demo-coder: HTTP 503" in message
    assert info.value.body["type"] == "server_error"


def test_invalid_judge_json_still_answers_with_parse_failed(client, stack):
    clear_backends(stack)
    _, body = fuse(client, "compare x [[fake:judge=invalid]]")
    analysis = body["fusion"]["analysis"]
    assert analysis["parse_failed"] is True and analysis["raw"]
    assert "judge_parse_failed" in body["fusion"]["degraded"]
    assert len(backend_requests(stack, JUDGE)) == 3  # judge, judge asked again, synthesis
    assert body["choices"][0]["message"]["content"]


def test_fenced_judge_json_is_parsed(client):
    _, body = fuse(client, "compare x [[fake:judge=fenced]]")
    assert body["fusion"]["analysis"]["consensus"]
    assert body["fusion"]["degraded"] == []


def test_judge_and_synthesis_failure_degrades_to_best_panel_answer(client):
    _, body = fuse(client, "compare q [[fake:status=500 only=demo-large]]")
    trace = body["fusion"]
    assert {"judge_failed", "synthesis_failed"} <= set(trace["degraded"])
    assert body["choices"][0]["message"]["content"] in {r["content"] for r in trace["responses"]}


def test_streamed_fusion_is_a_valid_sse_stream(client):
    stream = client.chat.completions.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": "compare tea and coffee"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, trace = "", None, None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
        trace = (chunk.model_extra or {}).get("fusion") or trace
    assert text.startswith(f"[{JUDGE}]")
    assert finish == "stop"
    assert usage is not None and usage.total_tokens > 0
    assert trace is not None and len(trace["responses"]) == 2


def test_fusion_longer_than_envoy_message_timeout_completes(client, stack):
    # The test Envoy's message_timeout is 500 ms; the panel alone takes 800 ms here.
    started = time.monotonic()
    _, body = fuse(client, "compare slow things [[fake:delay_ms=800]]")
    assert time.monotonic() - started >= 0.8
    assert len(body["fusion"]["responses"]) == 2


def test_client_disconnect_cancels_backend_calls(stack):
    clear_backends(stack)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{stack.envoy_url}/v1/chat/completions",
            timeout=0.5,
            json={"model": "quorum/auto", "messages": [{"role": "user", "content": "compare [[fake:delay_ms=5000]]"}]},
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = backend_requests(stack, "demo-small") + backend_requests(stack, "demo-coder")
        if len(records) == 2 and all(r["cancelled"] for r in records):
            break
        time.sleep(0.1)
    assert len(records) == 2
    assert all(r["cancelled"] and not r["completed"] for r in records)
