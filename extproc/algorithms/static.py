"""`static`: the decision's first model answers, reached through Envoy's route (nothing runs here)."""

from __future__ import annotations

from typing import Any

from extproc.algorithms import Run, RunContext, register


class Static:
    name = "static"
    answers_locally = False
    budget = 0.0
    heartbeat_interval = 0.0

    def start(self, ctx: RunContext) -> Run:
        raise AssertionError("a static decision is routed, never answered locally")


STATIC = Static()


def check(settings: Any, decision: Any, models: list[str]) -> list[str]:
    return [] if decision.model_refs else ["modelRefs: a static decision needs at least one model"]


@register("static", check=check)
def build(settings: Any, decision: Any) -> Static:
    return STATIC
