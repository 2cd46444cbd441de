"""Synthesis: the judge model writes the one final answer from the panel and the analysis."""

from __future__ import annotations

from typing import Any

from extproc.fusion.plan import FusionPlan
from extproc.fusion.prompts import (
    DEFAULT_SYNTHESIS_TEMPLATE,
    fill,
    render_analysis,
    render_conversation,
    render_responses,
)
from extproc.models import Completion

_NOT_FOR_SYNTHESIS = frozenset({"model", "stream", "stream_options", "plugins", "n"})


def synthesis_body(
    plan: FusionPlan,
    body: dict[str, Any],
    labelled: list[tuple[str, Completion]],
    analysis: dict[str, Any] | None,
) -> dict[str, Any]:
    """The client's conversation plus one user turn carrying the panel and the analysis.

    Only this call gets the client's `tools` and `tool_choice`: the final answer may call a tool.
    """
    cfg = plan.config
    prompt = fill(
        cfg.synthesis_template or DEFAULT_SYNTHESIS_TEMPLATE,
        original=render_conversation(body["messages"]),
        responses=render_responses([(name, c.content) for name, c in labelled]),
        analysis=render_analysis(analysis),
    )
    out = {k: v for k, v in body.items() if k not in _NOT_FOR_SYNTHESIS}
    out["messages"] = [*body["messages"], {"role": "user", "content": prompt}]
    if cfg.temperature is not None:
        out["temperature"] = cfg.temperature
    if cfg.max_completion_tokens is not None:
        out.pop("max_tokens", None)
        out["max_completion_tokens"] = cfg.max_completion_tokens
    return out


def best_panel_answer(answers: list[Completion]) -> Completion:
    """The fallback when synthesis fails: the most complete answer (longest content, panel order on ties)."""
    return max(answers, key=lambda c: len(c.content))
