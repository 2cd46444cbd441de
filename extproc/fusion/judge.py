"""The judge: a structured analysis of the panel's answers, asked once more if it is not valid JSON."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.trace import Span

from extproc.fusion.plan import FusionPlan
from extproc.fusion.prompts import (
    ANALYSIS_KEYS,
    ANALYSIS_SCHEMA,
    DEFAULT_ANALYSIS_TEMPLATE,
    JUDGE_SYSTEM,
    REASK,
    fill,
    label,
    render_conversation,
    render_responses,
)
from extproc.models import ModelClient
from extproc.modeltypes import Completion, ModelCallError, Usage


@dataclass
class JudgeResult:
    analysis: dict[str, Any] | None = None  # the five arrays, or {"parse_failed": True, "raw": ...}
    error: str | None = None  # the judge call itself failed
    usage: Usage = field(default_factory=Usage)
    latency: float = 0.0
    attempts: int = 0


def assign_labels(answers: list[Completion], rng: random.Random | None = None) -> list[tuple[str, Completion]]:
    """Shuffle the answers and name them A, B, ...: the judge sees neither model names nor panel order."""
    shuffled = list(answers)
    (rng or random).shuffle(shuffled)
    return [(label(i), answer) for i, answer in enumerate(shuffled)]


def parse_analysis(text: str) -> dict[str, list[str]] | None:
    """The analysis object from a judge reply, tolerating code fences and text around the JSON."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            data = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and any(k in data for k in ANALYSIS_KEYS):
            return {k: _strings(data.get(k)) for k in ANALYSIS_KEYS}
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
    return []


async def run_judge(
    client: ModelClient,
    plan: FusionPlan,
    messages: list[dict[str, Any]],
    labelled: list[tuple[str, Completion]],
    headers: dict[str, str],
    parent: Span | None = None,
) -> JudgeResult:
    cfg = plan.config
    started = time.monotonic()
    result = JudgeResult()
    prompt = fill(
        cfg.analysis_template or DEFAULT_ANALYSIS_TEMPLATE,
        original=render_conversation(messages),
        responses=render_responses([(name, c.content) for name, c in labelled]),
        analysis="",
    )
    conversation = [
        {"role": "system", "content": JUDGE_SYSTEM.format(version=cfg.judge_prompt_version)},
        {"role": "user", "content": prompt},
    ]
    body: dict[str, Any] = {"temperature": 0 if cfg.temperature is None else cfg.temperature}
    if plan.judge.supports_json_schema:
        body["response_format"] = ANALYSIS_SCHEMA
    raw = ""
    try:
        for attempt in (1, 2):
            result.attempts = attempt
            reply = await client.complete(
                plan.judge,
                {**body, "messages": conversation},
                time_limit=cfg.timeouts.judge,
                retry=plan.retry,
                headers=headers,
                parent=parent,
            )
            result.usage.add(reply.usage)
            raw = reply.content
            analysis = parse_analysis(raw)
            if analysis is not None:
                result.analysis = analysis
                return result
            # Ask once more, restating the task so the judge need not rely on its own broken reply.
            conversation = [
                *conversation,
                {"role": "assistant", "content": raw},
                {"role": "user", "content": f"{REASK}\n\n{prompt}"},
            ]
        result.analysis = {"parse_failed": True, "raw": raw}
    except ModelCallError as err:
        result.usage.add(err.usage)
        result.error = err.reason
    finally:
        result.latency = time.monotonic() - started
    return result
