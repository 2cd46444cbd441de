"""Grounding-aware panels: ungrounded panel answers are scored, recorded and left out of judge and synthesis."""

from __future__ import annotations

import json
from typing import Any

import orjson
from builders import answer_locally, chat, runtime_with_decision
from fakes import FakeModelClient

from extproc.fusion.grounding import content_words, context_text
from extproc.fusion.prompts import ANALYSIS_KEYS

ANALYSIS = json.dumps({k: [] for k in ANALYSIS_KEYS})
HOURS = "Store hours: opens 9am, closes 5pm, Monday to Friday. Closed weekends."
GROUNDED = "The store opens at 9am and closes at 5pm on weekdays."
INVENTED = "The store is open 24 hours every day, including holidays."


def grounded_runtime(grounding: dict[str, Any] | None, panel=("demo-small", "demo-coder")):
    fusion: dict[str, Any] = {"model": "demo-large", "analysis_models": list(panel)}
    if grounding is not None:
        fusion["grounding"] = grounding
    return runtime_with_decision({"name": "grounded", "algorithm": {"type": "fusion", "fusion": fusion}})


def panel(**replies: Any) -> FakeModelClient:
    return FakeModelClient(replies={**replies, "demo-large": [ANALYSIS, "Synthesis."]})


async def fused(runtime, fake, messages: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], Any]:
    body = chat("compare: when is the store open?")
    if messages is not None:
        body["messages"] = [*messages, *body["messages"]]
    _, out = await answer_locally(runtime, fake, body)
    return orjson.loads(out[-1].immediate_response.body), fake


def judge_and_synthesis_prompts(fake: FakeModelClient) -> tuple[str, str]:
    judge, synthesis = [c for c in fake.calls if c.model == "demo-large"]
    return json.dumps(judge.body["messages"]), json.dumps(synthesis.body["messages"][0])


async def test_an_answer_the_context_does_not_support_is_dropped_and_recorded():
    fake = panel(**{"demo-small": GROUNDED, "demo-coder": INVENTED})
    body, _ = await fused(grounded_runtime({"min_score": 0.4}), fake, [{"role": "system", "content": HOURS}])
    trace = body["fusion"]["grounding"]
    assert trace["reference"] == "context" and trace["method"] == "lexical" and trace["min_score"] == 0.4
    scores = {s["model"]: s["score"] for s in trace["scores"]}
    assert scores["demo-small"] == 0.8333 and scores["demo-coder"] == 0.25  # 5 of 6 words, 2 of 8
    assert trace["dropped"] == ["demo-coder"]
    judge_prompt, briefing = judge_and_synthesis_prompts(fake)
    assert GROUNDED in judge_prompt and INVENTED not in judge_prompt
    assert GROUNDED in briefing and INVENTED not in briefing
    # The dropped answer stays visible in the trace, without a judge label.
    responses = {r["model"]: r for r in body["fusion"]["responses"]}
    assert responses["demo-coder"]["label"] is None and responses["demo-small"]["label"] == "A"


async def test_without_context_a_contradicting_panel_answer_is_dropped():
    runtime = grounded_runtime({"min_score": 0.4}, panel=("demo-small", "demo-coder", "demo-large"))
    replies = {
        "demo-small": "Paris is the capital of France.",
        "demo-coder": "The capital of France is Paris.",
        "demo-large": ["Berlin, obviously.", ANALYSIS, "Synthesis."],
    }
    fake = FakeModelClient(replies=replies)
    body, _ = await fused(runtime, fake)
    trace = body["fusion"]["grounding"]
    assert trace["reference"] == "panel" and trace["dropped"] == ["demo-large"]
    assert {s["model"]: s["score"] for s in trace["scores"]}["demo-large"] == 0.0
    judge_prompt, _ = judge_and_synthesis_prompts_of_three(fake)
    assert "Berlin" not in judge_prompt and "Paris is the capital" in judge_prompt


def judge_and_synthesis_prompts_of_three(fake: FakeModelClient) -> tuple[str, str]:
    _panel_member, judge, synthesis = [c for c in fake.calls if c.model == "demo-large"]
    return json.dumps(judge.body["messages"]), json.dumps(synthesis.body["messages"][0])


async def test_the_best_answer_is_kept_when_every_answer_scores_low():
    fake = panel(**{"demo-small": "Unrelated words entirely.", "demo-coder": "Something else again."})
    body, _ = await fused(grounded_runtime({"min_score": 0.99}), fake, [{"role": "system", "content": HOURS}])
    trace = body["fusion"]["grounding"]
    assert len(trace["dropped"]) == 1  # never all: the best-scoring answer stays
    assert body["choices"][0]["message"]["content"] == "Synthesis."


async def test_grounding_is_off_by_default():
    fake = panel(**{"demo-small": GROUNDED, "demo-coder": INVENTED})
    body, _ = await fused(grounded_runtime(None), fake, [{"role": "system", "content": HOURS}])
    assert "grounding" not in body["fusion"]
    judge_prompt, _ = judge_and_synthesis_prompts(fake)
    assert INVENTED in judge_prompt


async def test_reference_context_without_context_skips_and_says_so():
    fake = panel(**{"demo-small": GROUNDED, "demo-coder": INVENTED})
    body, _ = await fused(grounded_runtime({"reference": "context"}), fake)
    assert body["fusion"]["grounding"] == {"skipped": "no context and fewer than two answers to compare"}
    assert INVENTED in judge_and_synthesis_prompts(fake)[0]


class Embedder:
    def __init__(self, vectors: dict[str, list[float]] | None = None) -> None:
        self.vectors = vectors

    async def embed(self, texts):
        if self.vectors is None:
            raise RuntimeError("engine down")
        return [self.vectors[t] for t in texts]


async def test_cosine_scores_against_the_context_when_an_engine_is_loaded():
    runtime = grounded_runtime({"min_score": 0.5})
    vectors = {HOURS: [1.0, 0.0], GROUNDED: [0.8, 0.6], INVENTED: [0.0, 1.0]}
    object.__setattr__(runtime, "embedder", Embedder(vectors))
    fake = panel(**{"demo-small": GROUNDED, "demo-coder": INVENTED})
    body, _ = await fused(runtime, fake, [{"role": "system", "content": HOURS}])
    trace = body["fusion"]["grounding"]
    assert trace["method"] == "embedding" and trace["dropped"] == ["demo-coder"]
    assert [s["score"] for s in trace["scores"]] == [0.8, 0.0]


async def test_a_scoring_failure_keeps_every_answer_or_fails_as_configured():
    runtime = grounded_runtime({"min_score": 0.5})
    object.__setattr__(runtime, "embedder", Embedder(None))
    fake = panel(**{"demo-small": GROUNDED, "demo-coder": INVENTED})
    body, _ = await fused(runtime, fake, [{"role": "system", "content": HOURS}])
    assert body["fusion"]["grounding"] == {"error": "RuntimeError: engine down"}
    assert INVENTED in judge_and_synthesis_prompts(fake)[0]
    runtime = grounded_runtime({"min_score": 0.5, "on_error": "fail"})
    object.__setattr__(runtime, "embedder", Embedder(None))
    _, out = await answer_locally(runtime, panel(), chat("compare"))
    error = orjson.loads(out[-1].immediate_response.body)["error"]
    assert out[-1].immediate_response.status.code == 500 and error["code"] == "fusion_grounding_failed"


def test_context_is_system_developer_and_tool_text_and_words_skip_filler():
    body = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "T"}]},
            {"role": "developer", "content": "D"},
        ]
    }
    assert context_text(body) == "S\nT\nD"
    assert content_words("The store opens at 9 and it is 5 o'clock") == {"store", "opens", "9", "5", "clock"}
