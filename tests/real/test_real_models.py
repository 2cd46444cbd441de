"""Quorum on real models: two llama.cpp servers with Gemma 3 270M (a base model: answers are checked for
structure, not quality). Run with `make test-real`; excluded from `make test`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
from builders import read_stream

from extproc.dev.stack import Stack

pytestmark = [pytest.mark.real, pytest.mark.timeout(900)]

DATA = Path(__file__).resolve().parents[1] / "data" / "real_eval.jsonl"
# Few-shot with a stop: what a base model answers sensibly (docs/real-models.md).
SHOTS = [
    {"role": "user", "content": "What is the capital of Italy?"},
    {"role": "assistant", "content": "Rome"},
]


def ask(client: openai.OpenAI, question: str) -> tuple[dict[str, Any], dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(
        model="quorum/fusion",
        messages=[*SHOTS, {"role": "user", "content": question}],
        max_tokens=12,
        stop=["\n"],
        temperature=0,
    )
    return json.loads(raw.text), dict(raw.headers)


def stages(trace: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["stage"], s["outcome"]) for s in trace["stages"]]


def test_fusion_runs_panel_judge_and_synthesis(real_client: openai.OpenAI) -> None:
    body, headers = ask(real_client, "[deliberate] What is the capital of France?")
    trace = body["fusion"]
    assert headers["x-quorum-decision"] == "fusion-full"
    assert stages(trace) == [("panel", "ok"), ("panel", "ok"), ("judge", "ok"), ("synthesis", "ok")]
    # The judge's briefing is a system message, which llama.cpp's gemma format drops: dialect llama_cpp
    # folds it in, and supports_json_schema sends llama.cpp's json_object + schema, so the JSON parses.
    assert "judge_parse_failed" not in trace["degraded"] and set(trace["analysis"]) >= {"consensus"}
    assert body["choices"][0]["message"]["content"]
    summed = sum(s["usage"]["total_tokens"] for s in trace["stages"])
    assert body["usage"]["total_tokens"] == summed > 0


def test_streamed_fusion_has_chunks_trace_and_usage(real_client: openai.OpenAI) -> None:
    stream = real_client.chat.completions.create(
        model="quorum/fusion",
        messages=[*SHOTS, {"role": "user", "content": "[deliberate] What is the capital of Spain?"}],
        max_tokens=12,
        stop=["\n"],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, trace, usage = read_stream(stream, "fusion")
    assert content and trace is not None
    # llama.cpp ignores include_usage; Quorum's usage chunk is the sum over its own calls.
    assert usage is not None and usage.total_tokens == sum(s["usage"]["total_tokens"] for s in trace["stages"]) > 0


def test_agreeing_panel_exits_early(real_client: openai.OpenAI) -> None:
    body, _ = ask(real_client, "[agree] What is the capital of Japan?")  # one model at T=0 twice: identical
    trace = body["fusion"]
    assert trace["early_exit"] == "consensus"
    assert stages(trace) == [("panel", "ok"), ("panel", "ok")]


def test_confident_gate_answers_with_one_call(real_client: openai.OpenAI) -> None:
    body, headers = ask(real_client, "[confident] What is the capital of Egypt?")
    trace = body["confidence"]
    assert trace["gate"]["decision"] == "answered", trace
    assert isinstance(trace["gate"]["mean_logprob"], float)
    assert trace["gate"]["tokens"] > 0  # llama.cpp returned real logprobs
    assert stages(trace) == [("gate", "ok")] and headers["x-quorum-gate"] == "gemma-a"


def test_unsure_gate_escalates_to_the_fusion(real_client: openai.OpenAI) -> None:
    body, _ = ask(real_client, "[unsure] What is the capital of Greece?")
    trace = body["confidence"]
    assert trace["escalated"] == "low_confidence" and trace["gate"]["mean_logprob"] < 0
    assert trace["gate"]["reused_in_panel"] is True  # gemma-a's gate answer is its panel answer
    assert [s for s, _ in stages(trace)] == ["gate", "panel", "judge", "synthesis"]


def test_quorum_eval_on_20_prompts(real_stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "report"
    argv = [sys.executable, "-m", "extproc", "eval", str(DATA), "--base-url", f"{real_stack.envoy_url}/v1"]
    argv += [
        "--arm",
        "gemma-a",
        "--arm",
        "quorum/fusion",
        "--grader",
        "gemma-b",
        "--config",
        str(real_stack.config_path),
    ]
    argv += ["--concurrency", "2", "--output-dir", str(out), "--no-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "report.json").read_text())
    arms = {a["arm"]: a for a in doc["arms"]}
    assert doc["baseline"] == "gemma-a" and arms["gemma-a"]["items"] == arms["quorum/fusion"]["items"] == 20
    assert all(a["errors"] == 0 for a in arms.values()), [r["error"] for r in doc["results"] if r["error"]]
    # The grader got llama.cpp's json_object + schema (after json_schema's 500) with the array length pinned.
    assert arms["gemma-a"]["graded"] + arms["quorum/fusion"]["graded"] >= 30
    assert 0 < arms["gemma-a"]["cost_per_request"] < arms["quorum/fusion"]["cost_per_request"]
    assert arms["quorum/fusion"]["calls_per_request"] >= 1 and not arms["quorum/fusion"]["solo"]
    assert arms["quorum/fusion"]["delta"] is not None
    assert (out / "score_vs_cost.png").read_bytes()[:4] == b"\x89PNG"
