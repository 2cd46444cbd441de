"""The fusion steps: panel, then judge, then synthesis, degrading instead of failing where it can.

- a panel member fails under `on_error: skip`: recorded, the run goes on without it;
- every panel member fails (or one does under `fail`): the run fails (502 with every reason);
- the judge fails: synthesis goes on without an analysis;
- the judge's JSON stays invalid after one re-ask: `parse_failed`, raw text kept in the trace;
- synthesis fails: the best panel answer is returned, marked degraded.

Every step reports its model calls, degrade notes and facts to the run's `RunTrace`, so another
algorithm (a confidence gate escalating) can reuse the steps and get the same trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from extproc.algorithms.trace import RunTrace, ms
from extproc.errors import InternalError, UpstreamError
from extproc.fusion.consensus import consensus
from extproc.fusion.grounding import ground
from extproc.fusion.judge import JudgeResult, assign_labels, run_judge
from extproc.fusion.panel import PanelResult, run_panel
from extproc.fusion.plan import FusionPlan
from extproc.fusion.synthesis import best_panel_answer, synthesis_body
from extproc.modeltypes import Completion, ModelCallError, Usage


@dataclass
class Deliberation:
    """Everything before the final answer."""

    plan: FusionPlan
    panel: PanelResult
    labelled: list[tuple[str, Completion]]
    judge: JudgeResult


@dataclass
class FinalAnswer:
    message: dict[str, Any]
    finish_reason: str


async def convene(
    client: Any,
    plan: FusionPlan,
    body: dict[str, Any],
    headers: dict[str, str],
    trace: RunTrace,
    ready: list[Completion] | None = None,
) -> PanelResult:
    """The panel stage; `ready` holds answers already made for this request (not asked again)."""
    have = {c.asked for c in ready or ()}
    asked = plan.without(have) if have else plan
    with trace.stage("panel", "quorum.fusion.panel", **{"quorum.fusion.panel_size": len(plan.panel)}) as span:
        panel = await run_panel(client, asked, body, headers, parent=span) if asked.panel else PanelResult()
        if span is not None:
            span.set_attributes(
                {
                    "quorum.fusion.answers": len(panel.answers) + len(have),
                    "quorum.fusion.failed": [e.model for e in panel.failures],
                    "quorum.fusion.cancelled": list(panel.cancelled),
                }
            )
    for answer in panel.answers:
        trace.completed("panel", answer)
    metrics = trace.recorder.telemetry.metrics if trace.recorder is not None else None
    for failure in panel.failures:
        trace.failed("panel", failure)
        if metrics is not None:
            metrics.panel_failures.labels(failure.model).inc()
    for name in panel.cancelled:
        trace.record("panel", name, 0.0, None, "cancelled")
    if have:
        order = {m.name: i for i, m in enumerate(plan.panel)}
        panel.answers = sorted([*(ready or ()), *panel.answers], key=lambda c: order[c.asked])
    if not panel.answers or (plan.config.on_error == "fail" and panel.failures):
        reasons = [f"{e.model}: {e.reason}" for e in panel.failures]
        reasons += [f"{name}: cancelled at the panel deadline" for name in panel.cancelled]
        raise UpstreamError(
            "Fusion panel failed: " + "; ".join(reasons or ["no panel model answered"]), code="fusion_panel_failed"
        )
    if panel.failures or panel.cancelled:
        trace.degraded.append("panel_partial")
    return panel


async def judge(
    client: Any,
    plan: FusionPlan,
    panel: PanelResult,
    body: dict[str, Any],
    headers: dict[str, str],
    trace: RunTrace,
    answers: list[Completion] | None = None,
) -> Deliberation:
    """The judge stage over `answers` (default: the whole panel's), labelled and shuffled."""
    labelled = assign_labels(panel.answers if answers is None else answers)
    with trace.stage("judge", "quorum.fusion.judge", **{"quorum.model": plan.judge.name}) as span:
        result = await run_judge(client, plan, body["messages"], labelled, headers, parent=span)
        if span is not None:
            span.set_attributes(
                {
                    "quorum.fusion.judge_attempts": result.attempts,
                    "quorum.fusion.analysis_parsed": bool(result.analysis) and not result.analysis.get("parse_failed"),
                }
            )
    outcome = f"error: {result.error}" if result.error else "ok"
    trace.record("judge", plan.judge.name, result.latency, result.usage, outcome)
    if result.error:
        trace.degraded.append("judge_failed")
        trace.fields["judge_error"] = result.error
    elif result.analysis and result.analysis.get("parse_failed"):
        trace.degraded.append("judge_parse_failed")
    d = Deliberation(plan, panel, labelled, result)
    describe(trace, plan, panel, labelled, result)
    return d


async def deliberate(
    client: Any, plan: FusionPlan, body: dict[str, Any], headers: dict[str, str], trace: RunTrace
) -> Deliberation:
    """Panel, then judge."""
    panel = await convene(client, plan, body, headers, trace)
    return await judge(client, plan, panel, body, headers, trace)


async def grounded(
    plan: FusionPlan, panel: PanelResult, body: dict[str, Any], trace: RunTrace, embedder: Any | None
) -> list[Completion]:
    """The grounding stage: the panel answers the judge and synthesis may see."""
    cfg = plan.config.grounding
    if cfg is None:
        return panel.answers
    with trace.stage("grounding", "quorum.fusion.grounding", **{"quorum.fusion.min_score": cfg.min_score}) as span:
        try:
            result = await ground(panel.answers, body, cfg, embedder)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if cfg.on_error == "fail":
                message = f"Grounding the panel answers failed: {reason}"
                raise InternalError(message, code="fusion_grounding_failed") from None
            trace.fields["grounding"] = {"error": reason}
            return panel.answers
        if span is not None and result is not None:
            span.set_attributes(
                {"quorum.fusion.grounding_reference": result.reference, "quorum.fusion.dropped": len(result.dropped)}
            )
    if result is None:
        trace.fields["grounding"] = {"skipped": "no context and fewer than two answers to compare"}
        return panel.answers
    trace.fields["grounding"] = {
        "reference": result.reference,
        "method": result.method,
        "min_score": cfg.min_score,
        "scores": [{"model": a.model, "score": round(s, 4)} for a, s in zip(panel.answers, result.scores, strict=True)],
        "dropped": [a.model for a in result.dropped],
    }
    return result.kept


async def early_exit(
    plan: FusionPlan, answers: list[Completion], panel: PanelResult, trace: RunTrace, embedder: Any | None
) -> Completion | None:
    """The consensus stage: the most central panel answer when every pair agrees, else None (judge next).

    A failing embedder is no reason to fail the request: the judge runs, and the trace says why."""
    cfg = plan.config.early_exit
    if cfg is None or len(answers) < 2:
        return None
    with trace.stage("consensus", "quorum.fusion.consensus", **{"quorum.fusion.threshold": cfg.consensus}) as span:
        try:
            result = await consensus(answers, cfg, embedder)
        except Exception as exc:
            trace.fields["consensus"] = {"error": f"{type(exc).__name__}: {exc}"}
            return None
        if span is not None:
            span.set_attributes(
                {
                    "quorum.fusion.early_exit": result.chosen is not None,
                    "quorum.fusion.similarity": result.method,
                    "quorum.fusion.min_agreement": min(p["score"] for p in result.pairs),
                }
            )
    trace.fields["consensus"] = result.as_dict()
    if result.chosen is None:
        return None
    trace.fields["early_exit"] = "consensus"
    describe(trace, plan, panel, [], None)
    return result.chosen


def describe(
    trace: RunTrace,
    plan: FusionPlan,
    panel: PanelResult,
    labelled: list[tuple[str, Completion]],
    judged: JudgeResult | None,
) -> None:
    """Fusion's own trace fields: who was asked, what they said, what the judge found (if it ran)."""
    cfg = plan.config
    labels = {id(c): name for name, c in labelled}  # two seats may be answered by one fallback
    trace.fields.update(
        {
            "judge_model": plan.judge.name,
            "analysis_models": [m.name for m in plan.panel],
            "prompt_version": cfg.judge_prompt_version,
            "failed_models": [{"model": e.model, "error": e.reason} for e in panel.failures],
            "cancelled_models": list(panel.cancelled),
        }
    )
    if cfg.include_analysis and judged is not None:
        trace.fields["analysis"] = judged.analysis
    if cfg.include_intermediate_responses:
        trace.fields["responses"] = [
            {
                "model": c.model,
                **({"fallback_for": c.fallback_for} if c.fallback_for else {}),
                "label": labels.get(id(c)),
                "content": c.content,
                "finish_reason": c.finish_reason,
                "latency_ms": ms(c.latency),
                "usage": c.usage.as_dict(),
            }
            for c in panel.answers
        ]


async def synthesize(
    client: Any, d: Deliberation, body: dict[str, Any], headers: dict[str, str], trace: RunTrace
) -> FinalAnswer:
    plan = d.plan
    started = time.monotonic()
    try:
        with trace.stage("synthesis", "quorum.fusion.synthesis", **{"quorum.model": plan.judge.name}) as span:
            reply = await client.complete(
                plan.judge,
                synthesis_body(plan, body, d.labelled, _usable(d.judge)),
                time_limit=plan.config.timeouts.synthesis,
                retry=plan.retry,
                headers=headers,
                parent=span,
            )
    except ModelCallError as err:
        return _fallback(d, err, time.monotonic() - started, trace)
    trace.completed("synthesis", reply)
    return FinalAnswer(reply.message, reply.finish_reason)


async def synthesize_stream(
    client: Any, d: Deliberation, body: dict[str, Any], headers: dict[str, str], trace: RunTrace
) -> AsyncIterator[dict[str, Any]]:
    """Stream the synthesis as `choices[]` deltas; the trace is complete when the stream ends.

    If synthesis fails before its first token, the fallback answer is streamed instead; after the
    first token a failure is reported as an error in the stream (the answer cannot be taken back).
    """
    plan = d.plan
    started = time.monotonic()
    usage, sent = Usage(), False
    try:
        with trace.stage("synthesis", "quorum.fusion.synthesis", **{"quorum.model": plan.judge.name}) as span:
            chunks = client.stream(
                plan.judge, synthesis_body(plan, body, d.labelled, _usable(d.judge)), headers=headers, parent=span
            )
            async with asyncio.timeout(plan.config.timeouts.synthesis):
                async for chunk in chunks:
                    usage.add(Usage.parse(chunk.get("usage")))
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta or choice.get("finish_reason"):
                            sent = True
                            yield choice
    except (ModelCallError, TimeoutError) as exc:
        err = exc if isinstance(exc, ModelCallError) else ModelCallError(plan.judge.name, "synthesis timed out")
        err.usage.add(usage)
        fallback = _fallback(d, err, time.monotonic() - started, trace)
        if sent:
            raise
        yield {
            "index": 0,
            "delta": {"role": "assistant", "content": fallback.message.get("content") or ""},
            "finish_reason": None,
        }
        yield {"index": 0, "delta": {}, "finish_reason": fallback.finish_reason}
        return
    trace.record("synthesis", plan.judge.name, time.monotonic() - started, usage, "ok")


def _usable(judge: JudgeResult) -> dict[str, Any] | None:
    if judge.error or judge.analysis is None or judge.analysis.get("parse_failed"):
        return None
    return judge.analysis


def _fallback(d: Deliberation, err: ModelCallError, latency: float, trace: RunTrace) -> FinalAnswer:
    trace.failed("synthesis", err, latency)
    trace.degraded.append("synthesis_failed")
    trace.fields["synthesis_error"] = f"{err.model}: {err.reason}"
    best = best_panel_answer([c for _, c in d.labelled])
    return FinalAnswer({"role": "assistant", "content": best.content}, best.finish_reason)
