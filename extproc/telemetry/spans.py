"""Spans written whole, for the routing path: the request, its signals and its decision.

`tracer.start_span()` and `span.end()` cost about 20 µs a span in the OpenTelemetry SDK (context
objects, attribute copies under a lock, span-limit checks). A routed request's spans are all
known whole when they end: their start, end and attributes, with no events or links. So the
request recorder keeps those facts itself and writes each span as the SDK's own finished-span
type, `ReadableSpan`, straight to the SDK's span processor (the batch processor and the OTLP
exporter downstream are unchanged), with the provider's sampler and id generator. Fusion stages
and model calls, which are long and few, still use the SDK's tracer, parented on the request's
span context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, TraceFlags

_UNSET = Status()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class SpanWriter:
    __slots__ = ("_ids", "_processor", "_resource", "_sampler", "_scope")

    def __init__(self, provider: TracerProvider, processor: SpanProcessor, scope: str = "quorum") -> None:
        self._processor = processor  # the one added to `provider`
        self._resource = provider.resource
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._scope = InstrumentationScope(scope)

    def root(self, parent: SpanContext | None, name: str, kind: SpanKind, attributes: Mapping[str, Any]) -> SpanContext:
        """A new span's context under `parent` (or a new trace), sampled as the provider's sampler says."""
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            parent_context = trace.set_span_in_context(NonRecordingSpan(parent))
        else:
            trace_id = self._ids.generate_trace_id()
            parent_context = None
        result = self._sampler.should_sample(parent_context, trace_id, name, kind, attributes)
        flags = _SAMPLED if result.decision.is_sampled() else _NOT_SAMPLED
        return SpanContext(trace_id, self._ids.generate_span_id(), False, flags, result.trace_state)

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
