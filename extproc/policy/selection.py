"""Where one request goes, in the order the operator's policy applies:

1. access: a name that is not configured, or that the caller may not use, is a 404 model_not_found;
2. guards: the guards that apply to the requested name (explicit model or alias) see the request;
   a block guard answers with an error, a route guard picks the model, label guards add headers;
3. decisions: only for the auto and fusion aliases, over the decisions whose models the caller may use;
4. fallbacks: the default model (auto), or a fusion plugin's own panel (fusion alias).

Signals are computed on demand and at most once: the lexical ones and every signal of the guards
that apply (each matching guard counts) first, then the decisions' one priority group at a time
(extproc.decisions.choose), so a semantic signal that only lower-priority decisions than the one
that matched read is never computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from extproc.decisions import Decision, Match, choose, fixed_decision, reads
from extproc.errors import BadRequest
from extproc.fusion.plan import fusion_plugin
from extproc.policy.access import Access, Identity, not_found
from extproc.policy.guards import Verdict, check
from extproc.runtime import Runtime
from extproc.signals import Evaluation, SignalSet

StartEvaluation = Callable[[SignalSet], Evaluation]  # the request's signals, computed on demand


@dataclass(frozen=True, slots=True)
class Selection:
    match: Match | None  # None: a block guard matched (`verdict.block`)
    verdict: Verdict | None  # the guards that matched, if any


async def select_route(
    rt: Runtime, model: str, body: dict[str, Any], identity: Identity, start: StartEvaluation
) -> Selection:
    guards = rt.guards.get(model)  # every configured model and alias has an entry, empty without guards
    if guards is None or not rt.access.allows(model, identity):
        raise not_found(model)
    evaluation = start(rt.request_signals[model])
    verdict = check(guards, await evaluation.need(reads(guards))) if guards else None
    if verdict is not None:
        if verdict.block is not None:
            return Selection(None, verdict)
        if verdict.route is not None:
            decision = fixed_decision(f"guard:{verdict.route.name}", verdict.route.model or "")
            return Selection(Match(decision, 1.0), verdict)
    return Selection(await _decide(rt, model, body, identity, evaluation), verdict)


async def _decide(rt: Runtime, model: str, body: dict[str, Any], identity: Identity, evaluation: Evaluation) -> Match:
    if model in rt.auto_names:
        match = await choose(usable(rt.access, rt.decisions, identity), evaluation)
        if match is not None:
            return match
        if rt.default_model is None or not rt.access.allows(rt.default_model, identity):
            missing = "is configured" if rt.default_model is None else "is available to you"
            raise BadRequest(
                f"No routing decision matched this request and no default model {missing}.",
                param="model",
                code="no_route",
            )
        return Match(fixed_decision("default", rt.default_model), 0.0)
    if model in rt.fusion_names:
        # Not filtered: a decision whose panel the caller may not use is a 404 (RunContext.require_access).
        match = await choose(rt.local_decisions, evaluation)
        if match is None and fusion_plugin(body) is not None:
            return Match(rt.request_decision, 1.0)
        if match is None:
            raise BadRequest(
                f"No fusion decision matched this request, so '{model}' cannot answer it.",
                param="model",
                code="no_fusion_decision",
            )
        return match
    return Match(fixed_decision("explicit", model), 1.0)


def decision_models(decision: Decision) -> tuple[str, ...]:
    """Every model a decision calls: its route target, or what its algorithm says it calls (by
    default every model it references)."""
    algorithm = decision.algorithm
    if not algorithm.answers_locally:
        return decision.models[:1]
    return tuple(getattr(algorithm, "model_names", decision.models))


def usable(access: Access, decisions: tuple[Decision, ...], identity: Identity) -> tuple[Decision, ...]:
    if not access.enabled:
        return decisions
    return tuple(d for d in decisions if all(access.allows(m, identity) for m in decision_models(d)))
