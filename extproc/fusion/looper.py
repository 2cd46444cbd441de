"""The fusion run: panel, then judge, then synthesis, degrading instead of failing where it can.

- a panel member fails under `on_error: skip`: recorded, the run goes on without it;
- every panel member fails (or one does under `fail`): the run fails (502 with every reason);
- the judge fails: synthesis goes on without an analysis;
- the judge's JSON stays invalid after one re-ask: `parse_failed`, raw text kept in the trace;
- synthesis fails: the best panel answer is returned, marked degraded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from extproc.errors import UpstreamError
from extproc.fusion.judge import JudgeResult, assign_labels, run_judge
from extproc.fusion.panel import PanelResult, run_panel
from extproc.fusion.plan import FusionPlan
from extproc.fusion.synthesis import best_panel_answer, synthesis_body
from extproc.models import ModelClient
from extproc.modeltypes import Completion, ModelCallError, Usage
from extproc.telemetry.recorder import RequestRecorder


@dataclass
class Deliberation:
    """Everything before the final answer."""

    plan: FusionPlan
    panel: PanelResult
    labelled: list[tuple[str, Completion]]
    judge: JudgeResult
    started: float
    usage: Usage = field(default_factory=Usage)
    degraded: list[str] = field(default_factory=list)


@dataclass
class FinalAnswer:
    message: dict[str, Any]
    finish_reason: str
    usage: Usage
    latency: float
    error: str | None = None  # synthesis failed; `message` is the fallback panel answer


async def deliberate(
    client: ModelClient,
    plan: FusionPlan,
    body: dict[str, Any],
    headers: dict[str, str],
    recorder: RequestRecorder | None = None,
) -> Deliberation:
    started = time.monotonic()
    stage = recorder.stage if recorder is not None else _no_stage
    with stage("quorum.fusion.panel", **{"quorum.fusion.panel_size": len(plan.panel)}) as span:
        panel = await run_panel(client, plan, body, headers, parent=span)
        if span is not None:
            span.set_attributes(
                {
                    "quorum.fusion.answers": len(panel.answers),
                    "quorum.fusion.failed": [e.model for e in panel.failures],
                    "quorum.fusion.cancelled": list(panel.cancelled),
                }
            )
    if not panel.answers or (plan.config.on_error == "fail" and panel.failures):
        reasons = [f"{e.model}: {e.reason}" for e in panel.failures]
        reasons += [f"{name}: cancelled at the panel deadline" for name in panel.cancelled]
        raise UpstreamError(
            "Fusion panel failed: " + "; ".join(reasons or ["no panel model answered"]), code="fusion_panel_failed"
        )
    labelled = assign_labels(panel.answers)
    with stage("quorum.fusion.judge", **{"quorum.model": plan.judge.name}) as span:
        judge = await run_judge(client, plan, body["messages"], labelled, headers, parent=span)
        if span is not None:
            span.set_attributes(
                {
                    "quorum.fusion.judge_attempts": judge.attempts,
                    "quorum.fusion.analysis_parsed": bool(judge.analysis) and not judge.analysis.get("parse_failed"),
                }
            )
    result = Deliberation(plan, panel, labelled, judge, started)
    result.usage.add(panel.usage)
    result.usage.add(judge.usage)
    if panel.failures or panel.cancelled:
        result.degraded.append("panel_partial")
    if judge.error:
        result.degraded.append("judge_failed")
    elif judge.analysis and judge.analysis.get("parse_failed"):
        result.degraded.append("judge_parse_failed")
    return result


async def synthesize(
    client: ModelClient,
    d: Deliberation,
    body: dict[str, Any],
    headers: dict[str, str],
    recorder: RequestRecorder | None = None,
) -> FinalAnswer:
    plan = d.plan
    started = time.monotonic()
    stage = recorder.stage if recorder is not None else _no_stage
    try:
        with stage("quorum.fusion.synthesis", **{"quorum.model": plan.judge.name}) as span:
            reply = await client.complete(
                plan.judge,
                synthesis_body(plan, body, d.labelled, _usable(d.judge)),
                time_limit=plan.config.timeouts.synthesis,
                retry=plan.retry,
                headers=headers,
                parent=span,
            )
    except ModelCallError as err:
        return _fallback(d, err, time.monotonic() - started)
    return FinalAnswer(reply.message, reply.finish_reason, reply.usage, time.monotonic() - started)


async def synthesize_stream(
    client: ModelClient,
    d: Deliberation,
    body: dict[str, Any],
    headers: dict[str, str],
    final: list[FinalAnswer],
    recorder: RequestRecorder | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Stream the synthesis as OpenAI chunks; `final` receives the FinalAnswer when the stream ends.

    If synthesis fails before its first token, the fallback answer is streamed instead; after the
    first token a failure is reported as an error in the stream (the answer cannot be taken back).
    """
    plan = d.plan
    started = time.monotonic()
    usage, text, finish, sent = Usage(), [], "stop", False
    stage = recorder.stage if recorder is not None else _no_stage
    try:
        with stage("quorum.fusion.synthesis", **{"quorum.model": plan.judge.name}) as span:
            chunks = client.stream(
                plan.judge, synthesis_body(plan, body, d.labelled, _usable(d.judge)), headers=headers, parent=span
            )
            async with asyncio.timeout(plan.config.timeouts.synthesis):
                async for chunk in chunks:
                    usage.add(Usage.parse(chunk.get("usage")))
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            text.append(delta["content"])
                        finish = choice.get("finish_reason") or finish
                        if delta or choice.get("finish_reason"):
                            sent = True
                            yield choice
    except (ModelCallError, TimeoutError) as exc:
        err = exc if isinstance(exc, ModelCallError) else ModelCallError(plan.judge.name, "synthesis timed out")
        fallback = _fallback(d, err, time.monotonic() - started)
        fallback.usage.add(usage)
        final.append(fallback)
        if sent:
            raise
        yield {
            "index": 0,
            "delta": {"role": "assistant", "content": fallback.message.get("content") or ""},
            "finish_reason": None,
        }
        yield {"index": 0, "delta": {}, "finish_reason": fallback.finish_reason}
        return
    final.append(
        FinalAnswer({"role": "assistant", "content": "".join(text)}, finish, usage, time.monotonic() - started)
    )


@contextmanager
def _no_stage(name: str, **attributes: Any) -> Iterator[None]:
    yield None


def _usable(judge: JudgeResult) -> dict[str, Any] | None:
    if judge.error or judge.analysis is None or judge.analysis.get("parse_failed"):
        return None
    return judge.analysis


def _fallback(d: Deliberation, err: ModelCallError, latency: float) -> FinalAnswer:
    best = best_panel_answer(d.panel.answers)
    d.degraded.append("synthesis_failed")
    message = {"role": "assistant", "content": best.content}
    return FinalAnswer(message, best.finish_reason, err.usage, latency, error=f"{err.model}: {err.reason}")
