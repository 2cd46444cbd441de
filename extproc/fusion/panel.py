"""The panel: every model answers the request independently, in parallel.

Quorum: until `round_timeout` every answer is awaited; after it, the panel closes as soon as
`min_successful_responses` answers are in and stragglers are cancelled (listed in the trace as
cancelled). `timeouts.panel` is the hard end: models still running then count as failed. With
`on_error: fail` the first failure ends the run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from extproc.fusion.plan import FusionPlan
from extproc.models import ModelClient
from extproc.modeltypes import Completion, ModelCallError, Usage
from extproc.runtime import Model


@dataclass
class PanelResult:
    answers: list[Completion] = field(default_factory=list)  # in panel order
    failures: list[ModelCallError] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # stragglers cut by the quorum or the deadline
    usage: Usage = field(default_factory=Usage)
    latency: float = 0.0


def panel_body(plan: FusionPlan, body: dict[str, Any], model: Model) -> dict[str, Any]:
    """The client's request for one panel model: no streaming, no tools, the configured overrides."""
    out = {k: v for k, v in body.items() if k not in _NOT_FOR_PANEL}
    cfg = plan.config
    override = cfg.analysis_overrides.get(model.name)
    temperature = override.temperature if override and override.temperature is not None else cfg.temperature
    max_tokens = override.max_completion_tokens if override and override.max_completion_tokens else None
    if temperature is not None:
        out["temperature"] = temperature
    if max_tokens is not None:
        out.pop("max_tokens", None)
        out["max_completion_tokens"] = max_tokens
    return out


_NOT_FOR_PANEL = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "plugins",
        "n",
    }
)


async def run_panel(
    client: ModelClient, plan: FusionPlan, body: dict[str, Any], headers: dict[str, str], parent: Span | None = None
) -> PanelResult:
    cfg = plan.config
    started = time.monotonic()
    limit = asyncio.Semaphore(cfg.max_concurrent)
    result = PanelResult()

    async def ask(model: Model) -> Completion:
        async with limit:
            return await client.complete(
                model,
                panel_body(plan, body, model),
                time_limit=cfg.timeouts.panel,
                retry=plan.retry,
                headers=headers,
                parent=parent,
            )

    tasks = {asyncio.create_task(ask(m), name=f"panel:{m.name}"): m for m in plan.panel}
    order = {m.name: i for i, m in enumerate(plan.panel)}
    hard_end = started + cfg.timeouts.panel
    soft_end = started + cfg.round_timeout if cfg.round_timeout else hard_end
    pending = set(tasks)
    try:
        while pending:
            now = time.monotonic()
            quorum = len(result.answers) >= cfg.min_successful_responses
            if now >= hard_end or (quorum and now >= soft_end):
                break
            wake = soft_end if now < soft_end else hard_end
            done, pending = await asyncio.wait(pending, timeout=wake - now, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                try:
                    answer = task.result()
                except ModelCallError as err:
                    result.failures.append(err)
                    result.usage.add(err.usage)
                    if cfg.on_error == "fail":
                        return result
                else:
                    result.answers.append(answer)
                    result.usage.add(answer.usage)
    finally:
        at_deadline = time.monotonic() >= hard_end
        for task in pending:
            task.cancel()
            name = tasks[task].name
            if at_deadline:  # too slow: a failure, unlike a straggler cut once the quorum was in
                result.failures.append(
                    ModelCallError(name, f"timed out at the panel deadline ({cfg.timeouts.panel:g}s)")
                )
            else:
                result.cancelled.append(name)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        result.latency = time.monotonic() - started
        result.answers.sort(key=lambda c: order[c.asked])
    return result
