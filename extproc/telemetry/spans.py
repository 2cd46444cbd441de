"""Spans written whole, for the routing path: the request, its signals and its decision.

`tracer.start_span()` and `span.end()` cost about 20 µs a span in the OpenTelemetry SDK (context
objects, attribute copies under a lock, span-limit checks). A routed request's spans are all
known whole when they end: their start, end and attributes, with no events or links. So the
request recorder keeps those facts itself and writes each span as the SDK's own finished-span
type, `ReadableSpan`, straight to the SDK's span processor (the batch processor and the OTLP
exporter downstream are unchanged), with the provider's id generator. Fusion stages and model
calls, which are long and few, still use the SDK's tracer, parented on the request's span context.

Sampling is the SDK's `ParentBased(TraceIdRatioBased(ratio))`, decided here for the request span
with the ratio sampler's own bound (the SDK's `should_sample` builds result objects worth a few µs
a request): a request with a parent follows the parent's sampled flag, a new trace is kept when
the low 64 bits of its id fall under the bound. Child spans inherit the decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags

_UNSET = Status()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class SpanWriter:
    __slots__ = ("_bound", "_ids", "_processor", "_resource", "_scope")

    def __init__(
        self, provider: TracerProvider, processor: SpanProcessor, sample_ratio: float = 1.0, scope: str = "quorum"
    ) -> None:
        self._processor = processor  # the one added to `provider`
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

    def child(self, parent: SpanContext) -> SpanContext:
        """A child span's context: same trace and sampling decision, a new span id."""
        return SpanContext(parent.trace_id, self._ids.generate_span_id(), False, parent.trace_flags, parent.trace_state)

    def write(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, Any],
        status: Status = _UNSET,
    ) -> None:
        if not context.trace_flags.sampled:
            return
        span = ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self._scope,
        )
        self._processor.on_end(span)
