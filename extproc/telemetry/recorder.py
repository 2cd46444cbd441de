"""One request's telemetry: its span tree, metrics and access-log line, emitted exactly once.

Spans (names as exported):
  quorum.request            SERVER, parented on the incoming W3C traceparent
    quorum.signals          which signals matched (names only)
    quorum.decision         decision name, priority, confidence, chosen model
    quorum.fusion.panel     one `chat <model>` CLIENT child per panel call (GenAI conventions)
    quorum.fusion.judge     with its `chat <model>` call(s)
    quorum.fusion.synthesis with its `chat <model>` call
Prompt and answer text are recorded only with `observability.tracing.capture_content`.

The request, signals and decision spans are written as one record when the request ends
(telemetry/spans.py); until then `span` is a non-recording span that carries the request's
context to the fusion stages.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from extproc.telemetry.setup import ACCESS_LOG, Telemetry
from extproc.telemetry.spans import ChildFacts

if TYPE_CHECKING:
    from collections.abc import Iterator

    from extproc.modeltypes import Usage
    from extproc.policy.guards import Verdict
    from extproc.runtime import Model

PROPAGATOR = TraceContextTextMapPropagator()
# Requests Quorum handed on to Envoy (a route header, or untouched): once that answer went out, the
# stream may be torn down by Envoy at any time (a client closing its connection after reading the
# answer, say), which says nothing about the request. Their status is the backend's if Quorum saw
# the response headers (usage accounting), else "forwarded".
HANDED_OFF = frozenset({"route", "passthrough"})
_OK = Status()  # unset: the request span's status unless it failed


def inject_context(span: Span, headers: dict[str, str]) -> None:
    """Add `traceparent` (and `tracestate`) for a call made as a child of `span`."""
    PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))


class RequestRecorder:
    __slots__ = (
        "attributes",
        "busy",
        "decision",
        "decision_facts",
        "finished",
        "guards",
        "incomplete",
        "kind",
        "method",
        "model",
        "parent",
        "path",
        "request_id",
        "signal_facts",
        "span",
        "start_ns",
        "started",
        "status",
        "telemetry",
        "traceparent",
        "usage_in",
        "usage_out",
    )

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.started = time.perf_counter()
        self.busy = 0.0  # seconds spent inside Quorum's handler for this request
        self.span: Span = trace.INVALID_SPAN
        self.request_id = "-"
        self.method = self.path = ""
        self.kind = "other"  # route | fusion | models | error | passthrough
        self.decision = self.model = ""
        self.status: int | None = None  # known for answers Quorum gives, and with usage accounting
        self.usage_in = self.usage_out = 0
        self.guards: tuple[str, ...] = ()  # guards that matched
        self.finished = False
        self.incomplete = False  # a routed answer's body started but its end was never seen
        self.traceparent: dict[str, str] | None = None  # the client's, kept for propagation when not tracing
        self.attributes: dict[str, Any] = {}  # of the request span, written when the request ends
        self.start_ns = 0
        self.parent: SpanContext | None = None  # the client's (or Envoy's) span, from `traceparent`
        self.signal_facts: ChildFacts | None = None  # (start ns, end ns, attributes) of quorum.signals
        self.decision_facts: ChildFacts | None = None  # ... of quorum.decision
        if telemetry.metrics is not None:
            telemetry.metrics.inflight.inc()

    # ------------------------------------------------------------------ facts, as they arrive

    def start(self, headers: Mapping[str, str]) -> None:
        self.request_id = headers.get("x-request-id", "-")
        self.method = headers.get(":method", "")
        self.path = headers.get(":path", "").partition("?")[0]
        if "traceparent" in headers:
            self.traceparent = {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
        spans = self.telemetry.spans
        if spans is not None:
            self.start_ns = time.time_ns()
            self.attributes = {
                "http.request.method": self.method,
                "url.path": self.path,
                "quorum.request_id": self.request_id,
            }
            if self.traceparent is not None:
                self.parent = trace.get_current_span(PROPAGATOR.extract(self.traceparent)).get_span_context()
            self.span = NonRecordingSpan(spans.root(self.parent))

    @contextmanager
    def stage(self, name: str, parent: Span | None = None, **attributes: Any) -> Iterator[Span]:
        """A child span around one stage; the stage's latency also goes to the fusion histogram."""
        started = time.perf_counter()
        span = self.child(name, parent, **attributes)
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()
            metrics = self.telemetry.metrics
            if metrics is not None and name.startswith("quorum.fusion."):
                metrics.fusion_stage.labels(name.removeprefix("quorum.fusion.")).observe(time.perf_counter() - started)

    def root(self) -> Span:
        """The request span; with tracing off, the client's own trace context, so it still propagates."""
        if self.telemetry.tracing or self.traceparent is None:
            return self.span
        return trace.get_current_span(PROPAGATOR.extract(self.traceparent))

    def child(self, name: str, parent: Span | None = None, kind: SpanKind = SpanKind.INTERNAL, **attrs: Any) -> Span:
        if not self.telemetry.tracing:
            return parent or self.root()
        context = trace.set_span_in_context(parent or self.span)
        return self.telemetry.tracer.start_span(name, context=context, kind=kind, attributes=attrs or None)

    def signals(self, results: Mapping[tuple[str, str], float | None], started: float, skipped: int = 0) -> list[str]:
        """Record the signal evaluation (`results`: the signals computed; `skipped`: those routing did not
        need); returns the matched `type:name`s when tracing or debug headers use them."""
        if not (self.telemetry.tracing or self.telemetry.debug_headers):
            return []
        matched = [f"{kind}:{name}" for (kind, name), conf in results.items() if conf is not None]
        if self.telemetry.spans is not None:
            attributes = (
                ("quorum.signals.evaluated", len(results)),
                ("quorum.signals.skipped", skipped),
                ("quorum.signals.matched", tuple(matched)),
            )
            self.signal_facts = (_ns(started), time.time_ns(), attributes)
        return matched

    def decided(self, decision: str, priority: int, confidence: float, model: str, kind: str) -> None:
        self.decision, self.model, self.kind = decision, model, kind
        if self.telemetry.spans is not None:
            now = time.time_ns()
            attributes = (
                ("quorum.decision.name", decision),
                ("quorum.decision.priority", priority),
                ("quorum.decision.confidence", confidence),
                ("quorum.model", model),
                ("quorum.route.kind", kind),
            )
            self.decision_facts = (now, now, attributes)
            self.attributes["quorum.decision.name"] = decision
            self.attributes["quorum.model"] = model

    def guarded(self, verdict: Verdict) -> None:
        """The guards that matched this request: a metric per guard, span attributes, the access log."""
        self.guards = verdict.names
        metrics = self.telemetry.metrics
        if metrics is not None:
            for guard in verdict.matched:
                metrics.guard_matches.labels(guard.name, guard.action).inc()
        if self.telemetry.spans is not None:
            self.attributes["quorum.guards.matched"] = self.guards
            self.attributes["quorum.guards.action"] = verdict.action

    def answered_by(self, model: str) -> None:
        """A fallback chain's request: the model that answered, which may not be the first one tried."""
        self.model = model
        if self.telemetry.spans is not None:
            self.attributes["quorum.model"] = model

    def answered(self, status: int, kind: str | None = None) -> None:
        self.status = status
        if kind:
            self.kind = kind

    def add_usage(self, model: Model | None, usage: Usage | None) -> None:
        if usage is None:
            return
        self.usage_in += usage.prompt_tokens
        self.usage_out += usage.completion_tokens
        metrics = self.telemetry.metrics
        if metrics is not None and model is not None:
            metrics.tokens.labels(model.name, "input").inc(usage.prompt_tokens)
            metrics.tokens.labels(model.name, "output").inc(usage.completion_tokens)
            if model.pricing is not None:
                cost = (
                    usage.prompt_tokens * model.pricing.prompt_per_1m
                    + usage.completion_tokens * model.pricing.completion_per_1m
                ) / 1e6
                metrics.cost.labels(model.name, model.pricing.currency).inc(cost)

    # ------------------------------------------------------------------ the end

    def finish(self, error: BaseException | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        elapsed = time.perf_counter() - self.started
        if error is not None and self.kind in HANDED_OFF:
            error = None  # Quorum's part was done; Envoy closing the stream afterwards is not a failure
        status = str(self.status) if self.status is not None else ("cancelled" if error else "forwarded")
        if self.incomplete:  # the backend (or the client) went away mid-answer
            status = "incomplete"
        metrics = self.telemetry.metrics
        if metrics is not None:
            metrics.inflight.dec()
            metrics.requests.labels(self.decision or "-", self.model or "-", status).inc()
            metrics.processing.labels(self.kind).observe(self.busy)
        spans = self.telemetry.spans
        if spans is not None:
            attributes = self.attributes
            if self.status is not None:
                attributes["http.response.status_code"] = self.status
            if self.usage_in or self.usage_out:
                attributes["gen_ai.usage.input_tokens"] = self.usage_in
                attributes["gen_ai.usage.output_tokens"] = self.usage_out
            span_status = _OK
            if error is not None or self.incomplete or (self.status is not None and self.status >= 500):
                span_status = Status(StatusCode.ERROR, type(error).__name__ if error else status)
            spans.write_request(
                self.span.get_span_context(),
                self.parent,
                self.start_ns,
                time.time_ns(),
                attributes,
                span_status,
                self.signal_facts,
                self.decision_facts,
            )
        if self.telemetry.access_log and ACCESS_LOG.isEnabledFor(20):
            ACCESS_LOG.info(self.access_line(status, elapsed))

    def access_line(self, status: str, elapsed: float) -> str:
        ctx = self.span.get_span_context()
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else None,
            "method": self.method,
            "path": self.path,
            "kind": self.kind,
            "decision": self.decision or None,
            "guards": list(self.guards) or None,
            "model": self.model or None,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
            "quorum_ms": round(self.busy * 1000, 3),
            "tokens_in": self.usage_in,
            "tokens_out": self.usage_out,
        }
        return orjson.dumps(line).decode()


def start_model_span(telemetry: Telemetry, parent: Span | None, model: Model, body: Mapping[str, Any]) -> Span:
    """A CLIENT span for one model call, with the OpenTelemetry GenAI attributes."""
    if not telemetry.tracing or parent is None:
        return trace.INVALID_SPAN
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model.upstream_model,
        "quorum.model": model.name,
        "server.address": model.host,
        "server.port": model.port,
    }
    for key, attr in (
        ("temperature", "gen_ai.request.temperature"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ):
        if body.get(key) is not None:
            attributes[attr] = body[key]
    if telemetry.capture_content:
        attributes["gen_ai.input.messages"] = orjson.dumps(body.get("messages", [])).decode()
    return telemetry.tracer.start_span(
        f"chat {model.upstream_model}",
        context=trace.set_span_in_context(parent),
        kind=SpanKind.CLIENT,
        attributes=attributes,
    )


def end_model_span(
    telemetry: Telemetry,
    span: Span,
    *,
    response_model: str | None = None,
    usage: Usage | None = None,
    finish_reason: str | None = None,
    content: str | None = None,
    error: str | None = None,
) -> None:
    if not span.is_recording():
        return
    if response_model:
        span.set_attribute("gen_ai.response.model", response_model)
    if usage is not None:
        span.set_attributes(
            {"gen_ai.usage.input_tokens": usage.prompt_tokens, "gen_ai.usage.output_tokens": usage.completion_tokens}
        )
    if finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
    if content is not None and telemetry.capture_content:
        span.set_attribute("gen_ai.output.messages", content)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def _ns(perf_started: float) -> int:
    """A perf_counter() reading as an epoch timestamp in nanoseconds, for spans started in the past."""
    return time.time_ns() - int((time.perf_counter() - perf_started) * 1e9)
