"""Answering inside the ext_proc stream for any algorithm that answers locally.

- Envoy in BUFFERED mode (the default rendered config): one ImmediateResponse at the end, JSON or
  the whole SSE stream for `stream: true`. Envoy's per-message timeout is extended for the run.
- Envoy in FULL_DUPLEX_STREAMED mode with `stream: true`: a StreamedImmediateResponse; SSE
  headers go out at once, SSE comment heartbeats keep the connection alive while the algorithm
  works, and a streamed answer is forwarded as it is produced.

Errors before the status line are ordinary OpenAI errors; after it, an error event in the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from extproc import envoy
from extproc.algorithms import Answer, Run, RunContext
from extproc.algorithms.trace import RunTrace
from extproc.errors import BadRequest, QuorumError
from extproc.models import ModelClient
from extproc.pb import ep
from extproc.route import RouteContext
from extproc.sse import HEARTBEAT

TIMEOUT_MARGIN = 5.0
MAX_LOCAL_NESTING = 254  # what orjson writes; routed bodies are spliced instead and have no such limit


def check_encodable(body: dict[str, Any]) -> None:
    """Model calls re-encode the request: refuse up front, with a 400, what cannot be written."""
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise BadRequest(
            f"This decision's algorithm re-encodes the request for its model calls ({exc}): its JSON may nest "
            f"at most {MAX_LOCAL_NESTING} levels deep.",
            code="nesting_too_deep",
        ) from None


class LocalAnswerer:
    """Runs the matched decision's algorithm. Holds only the model client: everything derived from
    the configuration comes from the request's own runtime, so a reloaded config applies at once."""

    def __init__(self, client: ModelClient) -> None:
        self.client = client

    async def __call__(self, route: RouteContext) -> AsyncIterator[ep.ProcessingResponse]:
        check_encodable(route.chat.body)
        algorithm = route.match.decision.algorithm
        runtime = route.runtime
        trace = RunTrace(algorithm.name, route.match.decision.name, route.recorder, runtime.models)
        ctx = RunContext(route, self.client, trace)
        run = algorithm.start(ctx)
        headers = self.response_headers(route, run)
        if ctx.streaming:
            async for response in self._stream(ctx, run, headers, algorithm.heartbeat_interval):
                yield response
            return
        if not route.duplex:
            # Envoy's per-message timeout (200 ms by default) would cut the run: ask for the run's budget.
            limit = runtime.config.envoy.max_message_timeout
            yield envoy.extend_message_timeout(min(algorithm.budget + TIMEOUT_MARGIN, limit))
        answer = await run.answer()
        message, finish = (answer.message or {}), answer.finish_reason
        if answer.stream is not None:
            message, finish = await collect(answer.stream)
        self._record(route, run, trace)
        renderer = route.renderer
        if route.chat.stream:
            payload = renderer.stream_message(message, finish) + renderer.stream_close(trace)
            yield envoy.immediate(200, payload, content_type="text/event-stream", headers=headers)
        else:
            yield envoy.immediate(200, renderer.json(message, finish, trace), headers=headers)

    async def _stream(
        self, ctx: RunContext, run: Run, headers: dict[str, str], heartbeat: float
    ) -> AsyncIterator[ep.ProcessingResponse]:
        route = ctx.route
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache", **headers}
        yield envoy.streamed_answer_headers(200, headers)
        renderer = route.renderer
        task = asyncio.ensure_future(run.answer())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=heartbeat)
                if done:
                    break
                yield envoy.streamed_answer_body(HEARTBEAT)
            answer: Answer = task.result()
        except QuorumError as err:  # the status line is gone: report the failure in the stream
            if route.recorder is not None:
                route.recorder.answered(200, ctx.trace.algorithm)
            yield envoy.streamed_answer_body(renderer.stream_error(err), end_of_stream=True)
            return
        finally:
            task.cancel()
        if answer.stream is None:
            yield envoy.streamed_answer_body(renderer.stream_message(answer.message or {}, answer.finish_reason))
        else:
            yield envoy.streamed_answer_body(renderer.stream_open())
            try:
                async for choice in answer.stream:
                    yield envoy.streamed_answer_body(renderer.stream_delta(choice))
            except Exception as exc:  # failed after the first token: the answer so far cannot be taken back
                error = QuorumError(f"The answer failed mid-stream: {exc}", code="stream_failed")
                yield envoy.streamed_answer_body(renderer.stream_error(error), end_of_stream=True)
                return
        self._record(route, run, ctx.trace)
        yield envoy.streamed_answer_body(renderer.stream_close(ctx.trace), end_of_stream=True)

    @staticmethod
    def _record(route: RouteContext, run: Run, trace: RunTrace) -> None:
        """The answering model and the outcome, for metrics, the span and the access log (usage is
        recorded per call by the trace)."""
        if route.recorder is not None:
            route.recorder.model = run.model
            route.recorder.answered(200, trace.algorithm)

    @staticmethod
    def response_headers(route: RouteContext, run: Run) -> dict[str, str]:
        rt = route.runtime
        headers = {rt.route_header: run.model, rt.decision_header: route.match.decision.name, **run.headers}
        if route.request_id != "-":
            headers["x-request-id"] = route.request_id
        headers.update(route.debug_headers)
        return headers


async def collect(stream: AsyncIterator[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """A streamed answer as one message (content only) and its finish reason."""
    text: list[str] = []
    finish = "stop"
    async for choice in stream:
        text.append((choice.get("delta") or {}).get("content") or "")
        finish = choice.get("finish_reason") or finish
    return {"role": "assistant", "content": "".join(text)}, finish
