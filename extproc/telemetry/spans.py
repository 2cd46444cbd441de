"""The routing path's spans, written as one record per request: the request, its signals, its decision.

`tracer.start_span()` and `span.end()` cost about 20 µs a span in the OpenTelemetry SDK (context
objects, attribute copies under a lock, span-limit checks), and routing is CPU-bound: three spans
a request that way cost a fifth of the throughput. A routed request's spans are known whole when
the request ends (start, end, attributes; no events or links), so the recorder keeps those facts
and hands the SDK's span processor one `RequestSpans` record per request. The processor (the
SDK's batch processor) queues it like a span; at export time, in the processor's thread, Quorum's
OTLP/gRPC exporter encodes the record's spans directly, and any other exporter gets them expanded
into the SDK's own `ReadableSpan`s by `RecordExpandingExporter`. Fusion stages and model calls,
which are long and few, use the SDK's tracer, parented on the request span's context.

Sampling is the SDK's `ParentBased(TraceIdRatioBased(ratio))`, decided here for the request span
with the ratio sampler's own bound (the SDK's `should_sample` builds result objects worth a few µs
a request): a request with a parent follows the parent's sampled flag, a new trace is kept when
the low 64 bits of its id fall under the bound. Child spans inherit the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags

_UNSET = Status()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)

REQUEST_SPAN = "quorum.request"
SIGNALS_SPAN = "quorum.signals"
DECISION_SPAN = "quorum.decision"

# An attribute set as (key, value) pairs, values immutable (lists as tuples): hashable, so an encoder
# can cache the encoding of a set it has seen (a decision's attributes repeat with every request it takes).
AttributePairs = tuple[tuple[str, Any], ...]
# (start ns, end ns, attributes) of a child span, as the recorder collects it.
ChildFacts = tuple[int, int, AttributePairs]


class RequestSpans:
    """One request's `quorum.request` span and, when they ran, its signals and decision children.

    `context` is the request span's (the span processors read its sampled flag); the children's
    span ids are in `signals` / `decision` as `(span id, start ns, end ns, attributes)`.
    """

    __slots__ = (
        "attributes",
        "context",
        "decision",
        "end_time",
        "instrumentation_scope",
        "parent",
        "resource",
        "signals",
        "start_time",
        "status",
    )

    def __init__(
        self,
        context: SpanContext,
        parent: SpanContext | None,
        start_time: int,
        end_time: int,
        attributes: Mapping[str, Any],
        status: Status,
        signals: tuple[int, int, int, AttributePairs] | None,
        decision: tuple[int, int, int, AttributePairs] | None,
        resource: Resource,
        instrumentation_scope: InstrumentationScope,
    ) -> None:
        self.context = context
        self.parent = parent
        self.start_time = start_time
        self.end_time = end_time
        self.attributes = attributes
        self.status = status
        self.signals = signals
        self.decision = decision
        self.resource = resource
        self.instrumentation_scope = instrumentation_scope

    def spans(self) -> list[ReadableSpan]:
        """The same spans as the SDK's finished-span objects (children first, as they ended)."""
        ctx = self.context
        out = []
        for name, child in ((SIGNALS_SPAN, self.signals), (DECISION_SPAN, self.decision)):
            if child is None:
                continue
            span_id, start, end, attributes = child
            context = SpanContext(ctx.trace_id, span_id, False, ctx.trace_flags, ctx.trace_state)
            out.append(self._readable(name, context, ctx, SpanKind.INTERNAL, start, end, dict(attributes), _UNSET))
        out.append(
            self._readable(
                REQUEST_SPAN,
                ctx,
                self.parent,
                SpanKind.SERVER,
                self.start_time,
                self.end_time,
                self.attributes,
                self.status,
            )
        )
        return out

    def _readable(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start: int,
        end: int,
        attributes: Mapping[str, Any],
        status: Status,
    ) -> ReadableSpan:
        return ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            kind=kind,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=self.instrumentation_scope,
        )


def expand(items: Sequence[ReadableSpan | RequestSpans]) -> list[ReadableSpan]:
    out: list[ReadableSpan] = []
    for item in items:
        if isinstance(item, RequestSpans):
            out.extend(item.spans())
        else:
            out.append(item)
    return out


class RecordExpandingExporter(SpanExporter):
    """Wraps an exporter that only knows the SDK's spans (console, OTLP/HTTP, in-memory)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return self.inner.export(expand(spans))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class SpanWriter:
    __slots__ = ("_bound", "_ids", "_processor", "_resource", "_scope")

    def __init__(
        self, provider: TracerProvider, processor: SpanProcessor, sample_ratio: float = 1.0, scope: str = "quorum"
    ) -> None:
        self._processor = processor  # the one added to `provider`; its exporter must know RequestSpans
        self._resource = provider.resource
        self._ids = provider.id_generator
        self._bound = TraceIdRatioBased(sample_ratio).bound
        self._scope = InstrumentationScope(scope)

    def root(self, parent: SpanContext | None) -> SpanContext:
        """A new span's context under `parent` (or in a new trace), with its sampling decision."""
        if parent is not None and parent.is_valid:
            return SpanContext(
                parent.trace_id, self._ids.generate_span_id(), False, parent.trace_flags, parent.trace_state
            )
        trace_id = self._ids.generate_trace_id()
        sampled = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound
        return SpanContext(trace_id, self._ids.generate_span_id(), False, _SAMPLED if sampled else _NOT_SAMPLED)

    def write_request(
        self,
        context: SpanContext,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, Any],
        status: Status,
        signals: ChildFacts | None,
        decision: ChildFacts | None,
    ) -> None:
        if not context.trace_flags.sampled:
            return
        new_id = self._ids.generate_span_id
        record = RequestSpans(
            context,
            parent,
            start_ns,
            end_ns,
            attributes,
            status,
            None if signals is None else (new_id(), *signals),
            None if decision is None else (new_id(), *decision),
            self._resource,
            self._scope,
        )
        self._processor.on_end(record)  # type: ignore[arg-type]  # queued like a span; see the module doc
