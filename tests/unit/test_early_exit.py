"""Consensus early exit: judge and synthesis are skipped only when every pair of panel answers agrees."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from builders import answer_locally, chat, runtime_with_decision, sse_events, traced_telemetry
from fakes import FakeModelClient

from extproc.config import EarlyExitConfig
from extproc.fusion.consensus import consensus, normalise
from extproc.fusion.prompts import ANALYSIS_KEYS
from extproc.modeltypes import Completion, Usage

PANEL = ["demo-small", "demo-coder"]
ANALYSIS = json.dumps({k: [] for k in ANALYSIS_KEYS})


def fusion_runtime(early_exit: dict[str, Any] | None = None, panel: list[str] = PANEL):
    fusion: dict[str, Any] = {"model": "demo-large", "analysis_models": panel}
    if early_exit is not None:
        fusion["early_exit"] = early_exit
    return runtime_with_decision({"name": "agree", "algorithm": {"type": "fusion", "fusion": fusion}})


def panel_client(*answers: str) -> FakeModelClient:
    replies: dict[str, Any] = dict(zip(["demo-small", "demo-coder", "demo-large"], answers, strict=False))
    if len(answers) < 3:
        replies["demo-large"] = [ANALYSIS, "The synthesis."]
    return FakeModelClient(replies=replies)


async def fused(runtime, fake, **extra: Any) -> dict[str, Any]:
    _, out = await answer_locally(runtime, fake, chat("compare tea and coffee", **extra))
    return orjson.loads(out[-1].immediate_response.body)


async def test_agreeing_panel_skips_judge_and_synthesis():
    fake = panel_client("Paris is the capital.", "  paris IS the capital ")
    body = await fused(fusion_runtime({"consensus": 0.9}), fake)
    assert [c.model for c in fake.calls] == PANEL  # no judge, no synthesis
    assert body["choices"][0]["message"]["content"] == "Paris is the capital."  # ties: panel order
    trace = body["fusion"]
    assert trace["early_exit"] == "consensus"
    assert trace["consensus"] == {
        "method": "exact",
        "threshold": 0.9,
        "pairs": [{"a": "demo-small", "b": "demo-coder", "score": 1.0}],
        "reached": True,
        "chosen": "demo-small",
    }
    assert body["usage"]["total_tokens"] == 30  # the two panel calls only
    assert [s["stage"] for s in trace["stages"]] == ["panel", "panel"]
    assert "judge" not in trace["latency_ms"] and "consensus" in trace["latency_ms"]
    assert "analysis" not in trace and len(trace["responses"]) == 2


async def test_disagreeing_panel_runs_the_judge():
    fake = panel_client("Tea.", "Coffee.")
    body = await fused(fusion_runtime({"consensus": 0.9}), fake)
    assert [c.model for c in fake.calls] == [*PANEL, "demo-large", "demo-large"]
    assert body["choices"][0]["message"]["content"] == "The synthesis."
    trace = body["fusion"]
    assert "early_exit" not in trace
    assert trace["consensus"]["reached"] is False and trace["consensus"]["pairs"][0]["score"] == 0.0
    assert body["usage"]["total_tokens"] == 60


async def test_early_exit_is_off_unless_configured():
    fake = panel_client("Same.", "Same.")
    body = await fused(fusion_runtime(), fake)
    assert [c.model for c in fake.calls].count("demo-large") == 2
    assert "consensus" not in body["fusion"]


async def test_requests_with_tools_always_reach_synthesis():
    fake = panel_client("Same.", "Same.")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    await fused(fusion_runtime({"consensus": 0.5}), fake, tools=tools)
    assert [c.model for c in fake.calls].count("demo-large") == 2


class Embedder:
    """Vectors chosen per answer text; cosine between them decides."""

    def __init__(self, vectors: dict[str, list[float]], fail: bool = False) -> None:
        self.vectors = vectors
        self.fail = fail
        self.seen: list[str] = []

    async def embed(self, texts):
        if self.fail:
            raise RuntimeError("engine down")
        self.seen.extend(texts)
        return [self.vectors[t] for t in texts]


def with_embedder(runtime, embedder):
    object.__setattr__(runtime, "embedder", embedder)
    return runtime


async def test_cosine_agreement_uses_the_runtime_engine_and_answers_the_most_central():
    texts = {"a": [1.0, 0.0, 0.0], "b": [0.96, 0.28, 0.0], "c": [0.96, -0.28, 0.0]}  # a is nearest both
    embedder = Embedder(texts)
    three = ["demo-small", "demo-coder", "demo-large"]
    runtime = with_embedder(fusion_runtime({"consensus": 0.8}, panel=three), embedder)
    fake = FakeModelClient(replies={"demo-small": "b", "demo-coder": "a", "demo-large": "c"})
    body = await fused(runtime, fake)
    assert len(fake.calls) == 3 and embedder.seen == ["b", "a", "c"]
    consensus_trace = body["fusion"]["consensus"]
    assert consensus_trace["method"] == "embedding" and consensus_trace["chosen"] == "demo-coder"
    assert min(p["score"] for p in consensus_trace["pairs"]) == pytest.approx(0.8432, abs=1e-3)
    assert body["choices"][0]["message"]["content"] == "a"


async def test_cosine_below_threshold_runs_the_judge():
    runtime = with_embedder(fusion_runtime({"consensus": 0.95}), Embedder({"x": [1.0, 0.0], "y": [0.8, 0.6]}))
    fake = panel_client("x", "y")
    body = await fused(runtime, fake)
    assert body["fusion"]["consensus"]["pairs"][0]["score"] == pytest.approx(0.8)
    assert [c.model for c in fake.calls].count("demo-large") == 2


async def test_exact_similarity_ignores_the_engine_and_a_failing_engine_does_not_fail_the_request():
    runtime = with_embedder(fusion_runtime({"consensus": 0.9, "similarity": "exact"}), Embedder({}, fail=True))
    body = await fused(runtime, panel_client("Same", "same."))
    assert body["fusion"]["early_exit"] == "consensus" and body["fusion"]["consensus"]["method"] == "exact"
    runtime = with_embedder(fusion_runtime({"consensus": 0.9}), Embedder({}, fail=True))
    fake = panel_client("Same", "same.")
    body = await fused(runtime, fake)
    assert body["fusion"]["consensus"] == {"error": "RuntimeError: engine down"}
    assert body["choices"][0]["message"]["content"] == "The synthesis."


async def test_a_lone_surviving_answer_is_no_consensus():
    from extproc.modeltypes import ModelCallError

    fake = panel_client(ModelCallError("demo-small", "HTTP 500", 500), "Only me.")
    body = await fused(fusion_runtime({"consensus": 0.1}), fake)
    assert "early_exit" not in body["fusion"] and body["choices"][0]["message"]["content"] == "The synthesis."


async def test_streaming_early_exit_streams_the_chosen_answer_and_records_a_span():
    telemetry, exporter = traced_telemetry()
    body = chat("compare", stream=True, stream_options={"include_usage": True})
    runtime = fusion_runtime({"consensus": 0.9})
    _, out = await answer_locally(runtime, panel_client("Yes.", "yes"), body, duplex=True, telemetry=telemetry)
    events = sse_events(out)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "Yes."
    assert events[-2]["fusion"]["early_exit"] == "consensus" and events[-1]["usage"]["total_tokens"] == 30
    [span] = [s for s in exporter.get_finished_spans() if s.name == "quorum.fusion.consensus"]
    assert span.attributes["quorum.fusion.early_exit"] is True
    assert span.attributes["quorum.fusion.similarity"] == "exact"
    assert not [s for s in exporter.get_finished_spans() if s.name == "quorum.fusion.judge"]


async def test_consensus_needs_every_pair():
    config = EarlyExitConfig(consensus=0.9)
    answers = [Completion(m, {"content": t}, "stop", Usage(), 0, 1) for m, t in [("x", "A"), ("y", "a"), ("z", "B")]]
    result = await consensus(answers, config, None)
    assert result.chosen is None and [p["score"] for p in result.pairs] == [1.0, 0.0, 0.0]
    assert normalise("  Hello,\n  World!! ") == "hello, world"


def test_embedding_similarity_loads_the_local_engine_and_agrees_on_paraphrases():
    pytest.importorskip("onnxruntime")
    runtime = fusion_runtime({"consensus": 0.9, "similarity": "embedding"})
    assert runtime.embedder is not None  # loaded at build although no signal needs it
    assert fusion_runtime({"consensus": 0.9}).embedder is None  # auto: only an engine that is there anyway


async def test_the_local_engine_scores_a_paraphrase_above_a_contradiction():
    pytest.importorskip("onnxruntime")
    runtime = fusion_runtime({"consensus": 0.9, "similarity": "embedding"})
    same = ["The meeting is on Monday at ten.", "The meeting takes place Monday at 10 o'clock."]
    other = "Cats are mammals that purr."
    answers = [Completion(m, {"content": t}, "stop", Usage(), 0, 1) for m, t in zip("xyz", [*same, other], strict=True)]
    result = await consensus(answers, EarlyExitConfig(consensus=0.9), runtime.embedder)
    paraphrase, *contradictions = [p["score"] for p in result.pairs]
    assert paraphrase > max(contradictions) + 0.3
