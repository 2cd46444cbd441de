"""`confidence`: ask a cheap model first; deliberate only when it is unsure.

The cheap model is asked (non-streaming) with `logprobs: true`. When its answer's mean token
log-probability is at least `min_mean_logprob` the answer is returned: one call. Otherwise, or when
the backend sent no logprobs, or the call failed, the fusion under `escalate` runs; the cheap answer
counts as that model's panel answer when it is on the panel (no second call). A streaming client
gets the cheap answer only once the gate has decided, so an escalation never retracts text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from extproc.algorithms import Answer, Run, RunContext, register
from extproc.config import ConfidenceConfig, DecisionConfig
from extproc.fusion.algorithm import check_fusion, plan_headers, run_fusion, wants_embeddings
from extproc.fusion.plan import FusionPlan, budget, build_plan
from extproc.modeltypes import Completion, ModelCallError

# What the gate call never gets: streaming is decided by the gate, plugins are Quorum's.
_NOT_FOR_GATE = frozenset({"model", "stream", "stream_options", "plugins", "n"})


@dataclass(frozen=True, slots=True)
class Confidence:
    config: ConfidenceConfig
    models: tuple[str, ...]
    name: str = "confidence"
    answers_locally: bool = True

    @property
    def budget(self) -> float:
        return self.config.timeout + budget(self.config.escalate)

    @property
    def heartbeat_interval(self) -> float:
        return self.config.escalate.heartbeat_interval

    @property
    def wants_embeddings(self) -> bool:
        return wants_embeddings(self.config.escalate)

    def start(self, ctx: RunContext) -> Run:
        plan = build_plan(ctx.runtime, ctx.trace.decision, self.config.escalate, self.models, ctx.body)
        headers = {"x-quorum-gate": self.config.model, **plan_headers(plan)}
        return Run(self.config.model, lambda: self.run(ctx, plan), headers)

    async def run(self, ctx: RunContext, plan: FusionPlan) -> Answer:
        cfg = self.config
        cheap, reason = await self.ask(ctx, plan)
        score = cheap.mean_logprob if cheap is not None else None
        gate: dict[str, Any] = {"model": cfg.model, "threshold": cfg.min_mean_logprob, "mean_logprob": score}
        if cheap is not None and cheap.logprobs is not None:
            gate["tokens"] = len(cheap.logprobs)
        if cheap is not None and score is None:
            reason = "missing_logprobs"
        elif score is not None and score < cfg.min_mean_logprob:
            reason = "low_confidence"
        ctx.trace.fields["gate"] = {**gate, "decision": "escalated" if reason else "answered"}
        if cheap is not None and reason is None:
            message = {k: v for k, v in cheap.message.items() if k != "logprobs"}
            return Answer(message, cheap.finish_reason)
        ctx.trace.fields["escalated"] = reason
        in_panel = cheap is not None and any(m.name == cheap.asked for m in plan.panel) and not _has_tools(cheap)
        if in_panel:
            ctx.trace.fields["gate"]["reused_in_panel"] = True
        return await run_fusion(ctx, plan, [cheap] if in_panel and cheap is not None else None)

    async def ask(self, ctx: RunContext, plan: FusionPlan) -> tuple[Completion | None, str | None]:
        """The gate call; on failure (None, "gate_failed"): the fusion still answers."""
        model = ctx.runtime.models[self.config.model]
        body = {k: v for k, v in ctx.body.items() if k not in _NOT_FOR_GATE}
        body["logprobs"] = True
        started = time.monotonic()
        with ctx.trace.stage("gate", "quorum.confidence.gate", **{"quorum.model": model.name}) as span:
            try:
                reply = await ctx.client.complete(
                    model, body, time_limit=self.config.timeout, retry=plan.retry, headers=ctx.call_headers, parent=span
                )
            except ModelCallError as err:
                ctx.trace.failed("gate", err, time.monotonic() - started)
                ctx.trace.fields["gate_error"] = err.reason
                return None, "gate_failed"
            if span is not None:
                mean = reply.mean_logprob
                span.set_attributes(
                    {
                        "quorum.confidence.mean_logprob": mean if mean is not None else float("nan"),
                        "quorum.confidence.escalated": mean is None or mean < self.config.min_mean_logprob,
                    }
                )
        ctx.trace.completed("gate", reply)
        return reply, None


def _has_tools(completion: Completion) -> bool:
    return bool(completion.message.get("tool_calls"))


def check(config: ConfidenceConfig | None, d: DecisionConfig, models: list[str]) -> list[str]:
    if config is None:
        return ["algorithm.confidence: a confidence decision needs its settings (at least `model`)"]
    problems = []
    if config.model not in models:
        problems.append(f"algorithm.confidence.model: unknown model {config.model!r} (configured: {', '.join(models)})")
    return problems + check_fusion(config.escalate, d, models, "algorithm.confidence.escalate")


@register("confidence", ConfidenceConfig, check)
def build(config: ConfidenceConfig, decision: DecisionConfig) -> Confidence:
    return Confidence(config, tuple(r.model for r in decision.model_refs))
