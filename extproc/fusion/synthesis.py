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
from extproc.modeltypes import Completion

_NOT_FOR_SYNTHESIS = frozenset({"model", "stream", "stream_options", "plugins", "n"})


def synthesis_body(
    plan: FusionPlan,
    body: dict[str, Any],
    labelled: list[tuple[str, Completion]],
    analysis: dict[str, Any] | None,
) -> dict[str, Any]:
    """The client's conversation, led by a system message that carries the panel and the analysis.

    The user's last message stays last, so the model answers it directly; the panel material is
    merged into the client's own leading system message if there is one (some chat templates reject
    a second system message). Only this call gets the client's `tools` and `tool_choice`.
    """
    cfg = plan.config
    briefing = fill(
        cfg.synthesis_template or DEFAULT_SYNTHESIS_TEMPLATE,
        original=render_conversation(body["messages"]),
        responses=render_responses([(name, c.content) for name, c in labelled]),
        analysis=render_analysis(analysis),
    )
    messages = list(body["messages"])
    first = messages[0]
    if first.get("role") in ("system", "developer") and isinstance(first.get("content"), str):
        messages[0] = {**first, "content": f"{briefing}\n\n{first['content']}"}
    else:
        messages.insert(0, {"role": "system", "content": briefing})
    out = {k: v for k, v in body.items() if k not in _NOT_FOR_SYNTHESIS}
    out["messages"] = messages
    if cfg.temperature is not None:
        out["temperature"] = cfg.temperature
    if cfg.max_completion_tokens is not None:
        out.pop("max_tokens", None)
        out["max_completion_tokens"] = cfg.max_completion_tokens
    return out


def best_panel_answer(answers: list[Completion]) -> Completion:
    """The fallback when synthesis fails: the most complete answer (longest content, panel order on ties)."""
    return max(answers, key=lambda c: len(c.content))
