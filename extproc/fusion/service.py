"""Fusion inside the ext_proc stream: run the looper and answer Envoy.

- Envoy in BUFFERED mode (the default rendered config): one ImmediateResponse at the end, JSON or
  the whole SSE stream for `stream: true`. Envoy's per-message timeout is extended for the run.
- Envoy in FULL_DUPLEX_STREAMED mode with `stream: true`: a StreamedImmediateResponse; SSE
  headers go out at once, SSE comment heartbeats keep the connection alive while the panel and
  the judge work, and the synthesis tokens are forwarded as the judge model produces them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from extproc import envoy
from extproc.errors import QuorumError
from extproc.fusion.looper import Deliberation, FinalAnswer, deliberate, synthesize, synthesize_stream
from extproc.fusion.plan import FusionPlan, build_plan
from extproc.fusion.response import ChunkWriter, message_chunks, render_completion
from extproc.models import ModelClient
from extproc.pb import ep
from extproc.route import RouteContext
from extproc.runtime import Runtime
from extproc.sse import HEARTBEAT, encode_event

TIMEOUT_MARGIN = 5.0


class FusionService:
    def __init__(self, runtime: Runtime, client: ModelClient) -> None:
        self.runtime = runtime
        self.client = client
        self.max_message_timeout = runtime.config.envoy.max_message_timeout

    async def __call__(self, ctx: RouteContext) -> AsyncIterator[ep.ProcessingResponse]:
        plan = build_plan(self.runtime, ctx.match.decision, ctx.chat.body)
        access = self.runtime.access
        # Panels chosen by a decision or by the request's plugin: the caller must be allowed every model.
        access.require([m.name for m in (*plan.panel, plan.judge)], access.identity(ctx.headers))
        if ctx.duplex and ctx.chat.stream:
            async for response in self._stream(plan, ctx):
                yield response
            return
        if not ctx.duplex:
            # Envoy's per-message timeout (200 ms by default) would cut the run: ask for the run's budget.
            yield envoy.extend_message_timeout(min(plan.budget + TIMEOUT_MARGIN, self.max_message_timeout))
        body, call_headers = ctx.chat.body, self._call_headers(ctx)
        deliberation = await deliberate(self.client, plan, body, call_headers, ctx.recorder)
        final = await synthesize(self.client, deliberation, body, call_headers, ctx.recorder)
        self._record(ctx, deliberation, final)
        headers = self.response_headers(plan, ctx)
        if ctx.chat.stream:
            writer = ChunkWriter(ctx.chat.model, _include_usage(body))
            payload = message_chunks(writer, final) + writer.closing(deliberation, final)
            yield envoy.immediate(200, payload, content_type="text/event-stream", headers=headers)
        else:
            payload = orjson.dumps(render_completion(ctx.chat.model, deliberation, final))
            yield envoy.immediate(200, payload, headers=headers)

    async def _stream(self, plan: FusionPlan, ctx: RouteContext) -> AsyncIterator[ep.ProcessingResponse]:
        body, call_headers = ctx.chat.body, self._call_headers(ctx)
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache", **self.response_headers(plan, ctx)}
        yield envoy.streamed_answer_headers(200, headers)
        writer = ChunkWriter(ctx.chat.model, _include_usage(body))
        task = asyncio.ensure_future(deliberate(self.client, plan, body, call_headers, ctx.recorder))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=plan.config.heartbeat_interval)
                if done:
                    break
                yield envoy.streamed_answer_body(HEARTBEAT)
            deliberation: Deliberation = task.result()
        except QuorumError as err:  # the status line is gone: report the failure in the stream
            if ctx.recorder is not None:
                ctx.recorder.answered(200, "fusion")
            yield envoy.streamed_answer_body(encode_event(err.to_openai()) + b"data: [DONE]\n\n", end_of_stream=True)
            return
        finally:
            task.cancel()
        final: list[FinalAnswer] = []
        yield envoy.streamed_answer_body(writer.chunk([_role_delta()]))
        try:
            async for choice in synthesize_stream(self.client, deliberation, body, call_headers, final, ctx.recorder):
                yield envoy.streamed_answer_body(writer.chunk([choice]))
        except Exception as exc:  # failed after the first token: the answer so far cannot be taken back
            error = QuorumError(f"Fusion synthesis failed mid-stream: {exc}", code="fusion_synthesis_failed")
            yield envoy.streamed_answer_body(encode_event(error.to_openai()) + b"data: [DONE]\n\n", end_of_stream=True)
            return
        self._record(ctx, deliberation, final[0])
        yield envoy.streamed_answer_body(writer.closing(deliberation, final[0]), end_of_stream=True)

    def _record(self, ctx: RouteContext, d: Deliberation, final: FinalAnswer) -> None:
        """Usage per model, panel failures and the outcome, for metrics, the span and the access log."""
        recorder = ctx.recorder
        if recorder is None:
            return
        recorder.model = d.plan.judge.name
        recorder.answered(200, "fusion")
        models = self.runtime.models
        for answer in d.panel.answers:
            recorder.add_usage(models[answer.model], answer.usage)
        metrics = recorder.telemetry.metrics
        for failure in d.panel.failures:
            recorder.add_usage(models[failure.model], failure.usage)
            if metrics is not None:
                metrics.panel_failures.labels(failure.model).inc()
        recorder.add_usage(d.plan.judge, d.judge.usage)
        recorder.add_usage(d.plan.judge, final.usage)

    @staticmethod
    def _call_headers(ctx: RouteContext) -> dict[str, str]:
        request_id = {"x-request-id": ctx.request_id} if ctx.request_id != "-" else {}
        return {**ctx.call_headers, **request_id}

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
        headers.update(ctx.debug_headers)
        return headers


def _include_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _role_delta() -> dict[str, Any]:
    return {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
