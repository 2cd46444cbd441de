"""Cost of one answer (tokens x the Quorum config's pricing) and what a fusion trace says about calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.config.providers import Pricing

# Algorithms put their trace under their own name (extproc/algorithms/render.py).
TRACE_KEYS = ("fusion", "confidence")


def call_cost(pricing: Pricing | None, usage: Mapping[str, Any] | None) -> float:
    if pricing is None or not usage:
        return 0.0
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    return (prompt * pricing.prompt_per_1m + completion * pricing.completion_per_1m) / 1_000_000


def find_trace(body: Mapping[str, Any]) -> dict[str, Any] | None:
    for key in TRACE_KEYS:
        trace = body.get(key)
        if isinstance(trace, dict) and isinstance(trace.get("stages"), list):
            return trace
    return None


@dataclass(frozen=True)
class Calls:
    made: int
    early_exit: bool = False
    gate_answered: bool = False
    full: int | None = None  # what a full deliberation of this request costs in calls, when the trace says


def calls_from_trace(trace: Mapping[str, Any] | None) -> Calls:
    """Calls a Quorum run made; a solo answer (no trace) is one call."""
    if trace is None:
        return Calls(made=1)
    stages = [s for s in trace.get("stages", []) if s.get("outcome") != "cancelled"]
    made = len(stages)
    gate = trace.get("gate") or {}
    if gate.get("decision") == "answered":
        return Calls(made=made, gate_answered=True)
    if trace.get("early_exit"):
        panel = sum(1 for s in stages if s.get("stage") == "panel")
        return Calls(made=made, early_exit=True, full=made + (made - panel < 2) * (2 - (made - panel)))
    return Calls(made=made, full=made)


def answer_cost(
    body: Mapping[str, Any], served_by: str | None, prices: Mapping[str, Pricing | None]
) -> tuple[float, dict[str, int]]:
    """(cost, usage) of one answer: per stage of a Quorum trace, else the response usage at `served_by`'s price."""
    trace = find_trace(body)
    usage = body.get("usage") or {}
    totals = {k: int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    if trace is not None:
        return sum(call_cost(prices.get(s.get("model", "")), s.get("usage")) for s in trace["stages"]), totals
    return call_cost(prices.get(served_by or ""), usage), totals
