"""Fusion inside the ext_proc stream: run the looper and answer Envoy with an ImmediateResponse."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from extproc import envoy
from extproc.fusion.looper import deliberate, synthesize
from extproc.fusion.plan import FusionPlan, build_plan
from extproc.fusion.response import ChunkWriter, message_chunks, render_completion
from extproc.handler import RouteContext
from extproc.models import ModelClient
from extproc.pb import ep
from extproc.runtime import Runtime

TIMEOUT_MARGIN = 5.0


class FusionService:
    def __init__(self, runtime: Runtime, client: ModelClient) -> None:
        self.runtime = runtime
        self.client = client
        self.max_message_timeout = runtime.config.envoy.max_message_timeout

    async def __call__(self, ctx: RouteContext) -> AsyncIterator[ep.ProcessingResponse]:
        plan = build_plan(self.runtime, ctx.match.decision, ctx.chat.body)
        # Envoy's per-message timeout (200 ms by default) would cut the run: ask for the run's budget.
        yield envoy.extend_message_timeout(min(plan.budget + TIMEOUT_MARGIN, self.max_message_timeout))
        call_headers = {"x-request-id": ctx.request_id} if ctx.request_id != "-" else {}
        body = ctx.chat.body
        deliberation = await deliberate(self.client, plan, body, call_headers)
        final = await synthesize(self.client, deliberation, body, call_headers)
        headers = self.response_headers(plan, ctx)
        if ctx.chat.stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            writer = ChunkWriter(ctx.chat.model, include_usage)
            payload = message_chunks(writer, final) + writer.closing(deliberation, final)
            yield envoy.immediate(200, payload, content_type="text/event-stream", headers=headers)
        else:
            payload = orjson.dumps(render_completion(ctx.chat.model, deliberation, final))
            yield envoy.immediate(200, payload, headers=headers)

    def response_headers(self, plan: FusionPlan, ctx: RouteContext) -> dict[str, str]:
        rt = self.runtime
        headers = {
            rt.route_header: plan.judge.name,
            rt.decision_header: plan.decision,
            "x-quorum-judge": plan.judge.name,
            "x-quorum-panel": ",".join(m.name for m in plan.panel),
        }
        if ctx.request_id != "-":
            headers["x-request-id"] = ctx.request_id
        return headers
