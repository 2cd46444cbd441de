"""The fast OTLP encoder must produce exactly what the SDK's encoder produces."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from extproc.telemetry.otlp import encode_spans


def spans():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "quorum", "deployment": "test", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("quorum", "1.2.3")
    remote = NonRecordingSpan(SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(1)))
    root = tracer.start_span(
        "quorum.request",
        context=set_span_in_context(remote),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "url.path": "/v1/chat/completions"},
    )
    ctx = set_span_in_context(root)
    child = tracer.start_span(
        "quorum.signals",
        context=ctx,
        attributes={
            "quorum.signals.matched": ["keyword:code", "regex:ticket"],
            "n": 2,
            "neg": -5,
            "f": 0.25,
            "ok": True,
            "ints": [1, 2, 3],
            "flags": [True, False],
            "doubles": [0.5, 1.5],
            "unicode": "naïve ✓",
        },
    )
    child.end()
    call = tracer.start_span("chat small-v1", context=ctx, kind=SpanKind.CLIENT)
    call.set_status(Status(StatusCode.ERROR, "503"))
    call.set_attribute("error.type", "503")
    call.end()
    ok = tracer.start_span("ok", context=ctx)
    ok.set_status(Status(StatusCode.OK))
    ok.end()
    root.end()
    orphan = tracer.start_span("no-parent", kind=SpanKind.INTERNAL)
    orphan.end()
    return memory.get_finished_spans()


def test_fast_encoder_matches_the_sdk_encoder():
    finished = spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans(finished))
    assert ours == sdk_encode(finished)
    assert len(ours.resource_spans[0].scope_spans[0].spans) == len(finished) == 5


def test_cache_does_not_leak_values_between_spans():
    first = ExportTraceServiceRequest.FromString(encode_spans(spans()))
    second = ExportTraceServiceRequest.FromString(encode_spans(spans()))
    a = first.resource_spans[0].scope_spans[0].spans
    b = second.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in a] == [s.name for s in b]
    assert a[0].trace_id != b[0].trace_id or a[0].span_id != b[0].span_id


def request_records():
    """Request records as the span writer makes them: with a remote parent and trace state, and without."""
    from opentelemetry.trace import TraceState

    from extproc.telemetry.spans import RequestSpans

    resource = Resource.create({"service.name": "quorum"})
    scope = InstrumentationScope("quorum")
    remote = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(1))
    traced = SpanContext(remote.trace_id, 0x1111, False, TraceFlags(1), TraceState([("vendor", "x")]))
    signals = (0x2222, 1_000, 2_000, (("quorum.signals.evaluated", 2), ("quorum.signals.matched", ("keyword:code",))))
    decision = (0x3333, 2_500, 2_500, (("quorum.decision.name", "coding"), ("quorum.decision.confidence", 0.5)))
    failed = Status(StatusCode.ERROR, "CancelledError")
    return [
        RequestSpans(
            traced,
            remote,
            900,
            9_000,
            {"url.path": "/v1", "quorum.request_id": "r-1"},
            Status(),
            signals,
            decision,
            resource,
            scope,
        ),
        RequestSpans(
            SpanContext(0xABC, 0x4444, False, TraceFlags(1)), None, 5, 6, {}, failed, None, None, resource, scope
        ),
    ]


def test_request_records_encode_as_their_spans_would():
    from extproc.telemetry.spans import expand

    records = request_records()
    spans = expand(records)
    assert [s.name for s in spans] == ["quorum.signals", "quorum.decision", "quorum.request", "quorum.request"]
    assert spans[0].parent == records[0].context and spans[2].parent == records[0].parent
    ours = ExportTraceServiceRequest.FromString(encode_spans(records))
    assert ours == sdk_encode(spans)
    assert len(ours.resource_spans) == 1 and len(ours.resource_spans[0].scope_spans) == 1


def test_grpc_exporter_sends_the_encoded_bytes_as_they_are():
    """A real OTLP/gRPC endpoint receives exactly encode_spans' bytes, and they parse."""
    from concurrent import futures

    import grpc
    from opentelemetry.sdk.trace.export import SpanExportResult

    from extproc.telemetry.otlp import GrpcSpanExporter

    received: list[bytes] = []

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        received.append(request)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},  # raw bytes in and out
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        exporter = GrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True)
        items = [*request_records(), *spans()]
        assert exporter.export(items) == SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        server.stop(0)
    assert received == [encode_spans(items)]
    assert len(ExportTraceServiceRequest.FromString(received[0]).resource_spans) == 2  # two resources
