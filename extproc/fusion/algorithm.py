"""`fusion`: a panel answers, a judge compares, the judge model writes the final answer."""

from __future__ import annotations

from dataclasses import dataclass

from extproc.algorithms import Answer, Run, RunContext, register
from extproc.config import DecisionConfig, FusionConfig
from extproc.fusion.looper import convene, early_exit, grounded, judge, synthesize, synthesize_stream
from extproc.fusion.plan import FusionPlan, budget, build_plan
from extproc.modeltypes import Completion


@dataclass(frozen=True, slots=True)
class Fusion:
    config: FusionConfig
    models: tuple[str, ...]  # the decision's modelRefs: the panel unless `analysis_models` is set
    name: str = "fusion"
    answers_locally: bool = True

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every model a run of this decision calls (before a request's plugin overrides them)."""
        panel = tuple(self.config.analysis_models or self.models)
        return panel + ((self.config.model,) if self.config.model else ())

    @property
    def wants_embeddings(self) -> bool:
        """The runtime must load an embedding engine (consensus by cosine was asked for explicitly)."""
        return wants_embeddings(self.config)

    @property
    def budget(self) -> float:
        return budget(self.config)

    @property
    def heartbeat_interval(self) -> float:
        return self.config.heartbeat_interval

    @property
    def max_concurrent_runs(self) -> int | None:
        """Runs of this decision at once per worker (extproc.admission); None: only the global limit."""
        return self.config.max_concurrent_runs

    def plan(self, ctx: RunContext) -> FusionPlan:
        return build_plan(ctx.runtime, ctx.trace.decision, self.config, self.models, ctx.body)

    def start(self, ctx: RunContext) -> Run:
        plan = self.plan(ctx)
        # Panels chosen by a decision or by the request's plugin: the caller must be allowed every model.
        ctx.require_access([m.name for m in (*plan.panel, plan.judge)])
        return Run(plan.judge.name, lambda: run_fusion(ctx, plan), plan_headers(plan))


def wants_embeddings(config: FusionConfig) -> bool:
    """Consensus or grounding asked for cosine explicitly: the runtime must load an engine."""
    early, grounding = config.early_exit, config.grounding
    return (early is not None and early.similarity == "embedding") or (
        grounding is not None and grounding.similarity == "embedding"
    )


def plan_headers(plan: FusionPlan) -> dict[str, str]:
    return {"x-quorum-judge": plan.judge.name, "x-quorum-panel": ",".join(m.name for m in plan.panel)}


async def run_fusion(ctx: RunContext, plan: FusionPlan, ready: list[Completion] | None = None) -> Answer:
    """Panel (minus the `ready` answers), consensus, judge, synthesis: the fusion steps in order."""
    body, headers = ctx.body, ctx.call_headers
    embedder = ctx.runtime.embedder
    panel = await convene(ctx.client, plan, body, headers, ctx.trace, ready)
    answers = await grounded(plan, panel, body, ctx.trace, embedder)
    # With tools the synthesis call (the only one that gets them) must run: it may call one.
    agreed = None if body.get("tools") else await early_exit(plan, answers, panel, ctx.trace, embedder)
    if agreed is not None:
        return Answer(agreed.message, agreed.finish_reason)
    d = await judge(ctx.client, plan, panel, body, headers, ctx.trace, answers)
    if ctx.streaming:
        return Answer(stream=synthesize_stream(ctx.client, d, body, headers, ctx.trace))
    final = await synthesize(ctx.client, d, body, headers, ctx.trace)
    return Answer(final.message, final.finish_reason)


@register("fusion", FusionConfig, check=lambda cfg, d, models: check_fusion(cfg, d, models, "algorithm.fusion"))
def build(config: FusionConfig | None, decision: DecisionConfig) -> Fusion:
    return Fusion(config or FusionConfig(), tuple(r.model for r in decision.model_refs))


def check_fusion(config: FusionConfig | None, d: DecisionConfig, models: list[str], path: str) -> list[str]:
    """Problems of the fusion settings at `path` (relative to the decision): unknown or missing models."""
    problems = []
    fusion = config or FusionConfig()
    known = "configured: " + ", ".join(models)
    panel = fusion.analysis_models or [r.model for r in d.model_refs]
    if not panel:
        problems.append(f"{path}.analysis_models: a fusion decision needs panel models (here or in modelRefs)")
    for j, name in enumerate(fusion.analysis_models):
        if name not in models:
            problems.append(f"{path}.analysis_models[{j}]: unknown model {name!r} ({known})")
    if fusion.model is not None and fusion.model not in models:
        problems.append(f"{path}.model: unknown model {fusion.model!r} ({known})")
    for name in fusion.analysis_overrides:
        if name not in panel:
            problems.append(f"{path}.analysis_overrides.{name}: not one of the panel models {panel}")
    if panel and fusion.min_successful_responses > len(panel):
        problems.append(
            f"{path}.min_successful_responses: {fusion.min_successful_responses} exceeds the panel size {len(panel)}"
        )
    return problems
