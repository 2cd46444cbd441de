"""A fast OTLP span encoder, plugged into the OpenTelemetry SDK's own OTLP exporters.

The SDK's encoder builds a protobuf object per span, attribute and value in Python: about as much
CPU as the request it describes. Routing is CPU-bound, so this module writes the same
`ExportTraceServiceRequest` bytes directly, reusing the encoding of repeated attribute pairs
(decision names, models, paths), and the gRPC exporter keeps the SDK's endpoint, header, TLS,
retry and `OTEL_*` handling (the HTTP exporter has no such hook and keeps the SDK's encoder).
`tests/unit/test_otlp_encoder.py` checks the bytes decode to exactly what the SDK's encoder produces.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _GrpcExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, Status, StatusCode

from extproc.telemetry.spans import DECISION_SPAN, REQUEST_SPAN, SIGNALS_SPAN, AttributePairs, RequestSpans

_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}
_UNSET = Status()


_SMALL_VARINTS = [bytes([n]) for n in range(128)]


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL_VARINTS[n]
    if 0 <= n < 16384:  # message lengths: most spans
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    n &= 0xFFFFFFFFFFFFFFFF  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, nested messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, (list, tuple)):
        return _field(5, b"".join(_field(1, _any_value(v)) for v in value))
    return _field(1, str(value).encode())


def _encode_key_value(key: str, value: Any) -> bytes:
    return _field(9, _field(1, key.encode()) + _field(2, _any_value(value)))


_key_value = lru_cache(maxsize=8192)(_encode_key_value)  # most pairs repeat: decision names, models, paths


# Keys whose value is new with every request: encoded without the cache, where they would only evict
# the pairs that do repeat.
_UNIQUE_VALUED = frozenset({"quorum.request_id"})


def _attributes(attributes: Any) -> bytes:
    parts = []
    for key, value in attributes.items():
        if key in _UNIQUE_VALUED:
            parts.append(_encode_key_value(key, value))
            continue
        if isinstance(value, list):
            value = tuple(value)
        parts.append(_key_value(key, value))
    return b"".join(parts)


@lru_cache(maxsize=256)
def _name_and_kind(name: str, kind: SpanKind) -> bytes:
    return _field(5, name.encode()) + b"\x30" + _varint(_KIND[kind])


_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (field 7) and end_time_unix_nano (field 8), fixed64
_UNSET_STATUS = _field(15, b"")
_FLAGS_LOCAL_PARENT = b"\x85\x01" + struct.pack("<I", 0x100)  # "is the parent remote" is known: no
_FLAGS_REMOTE_PARENT = b"\x85\x01" + struct.pack("<I", 0x300)  # ... yes


def _span(span: ReadableSpan) -> bytes:
    ctx = span.context
    return _encode(
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        ctx.span_id,
        _field(3, ctx.trace_state.to_header().encode()) if ctx.trace_state else b"",
        span.parent,
        _name_and_kind(span.name, span.kind),
        span.start_time or 0,
        span.end_time or 0,
        span.attributes,
        span.status,
    )


def _encode(
    trace_id: bytes,
    span_id: int,
    state: bytes,
    parent: Any,
    head: bytes,
    start: int,
    end: int,
    attributes: Any,
    status: Any,
) -> bytes:
    """One Span message; `trace_id`, `state` and `head` (name and kind) come encoded."""
    out = [trace_id, b"\x12\x08", span_id.to_bytes(8, "big"), state]
    if parent is not None:
        out += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    out.append(head)
    out.append(_TIMES.pack(0x39, start, 0x41, end))
    if attributes:
        out.append(_attributes(attributes))
    code = _STATUS[status.status_code]
    if code or status.description:
        message = _field(2, status.description.encode()) if status.description else b""
        out.append(_field(15, message + (b"\x18" + _varint(code) if code else b"")))
    else:
        out.append(_UNSET_STATUS)
    out.append(_FLAGS_REMOTE_PARENT if parent is not None and parent.is_remote else _FLAGS_LOCAL_PARENT)
    return _field(2, b"".join(out))


_SIGNALS_HEAD = _name_and_kind(SIGNALS_SPAN, SpanKind.INTERNAL)
_DECISION_HEAD = _name_and_kind(DECISION_SPAN, SpanKind.INTERNAL)
_REQUEST_HEAD = _name_and_kind(REQUEST_SPAN, SpanKind.SERVER)


def _request_spans(record: RequestSpans) -> list[bytes]:
    """A request record's spans, encoded as `_span` would encode its expansion (children first).

    A child's bytes after its timestamps (attributes, status, flags) depend only on its attribute
    pairs, which repeat across requests, so they are encoded once per distinct set (`_child_tail`).
    """
    ctx = record.context
    trace_id = b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big")
    state = _field(3, ctx.trace_state.to_header().encode()) if ctx.trace_state else b""
    out = []
    parent = b"\x22\x08" + ctx.span_id.to_bytes(8, "big")
    for head, child in ((_SIGNALS_HEAD, record.signals), (_DECISION_HEAD, record.decision)):
        if child is not None:
            span_id, start, end, attributes = child
            span = b"".join(
                (
                    trace_id,
                    b"\x12\x08",
                    span_id.to_bytes(8, "big"),
                    state,
                    parent,
                    head,
                    _TIMES.pack(0x39, start, 0x41, end),
                    _child_tail(attributes),
                )
            )
            out.append(_field(2, span))
    out.append(
        _encode(
            trace_id,
            ctx.span_id,
            state,
            record.parent,
            _REQUEST_HEAD,
            record.start_time,
            record.end_time,
            record.attributes,
            record.status,
        )
    )
    return out


@lru_cache(maxsize=1024)
def _child_tail(attributes: AttributePairs) -> bytes:
    """Attributes, unset status and flags of a child of a local span."""
    return b"".join(_key_value(k, v) for k, v in attributes) + _UNSET_STATUS + _FLAGS_LOCAL_PARENT


def encode_spans(spans: Sequence[ReadableSpan | RequestSpans]) -> bytes:
    """Serialized ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope."""
    by_resource: dict[int, tuple[Any, dict[Any, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        scopes = by_resource.setdefault(id(resource), (resource, {}))[1]
        encoded = scopes.setdefault(scope, (scope, []))[1]  # by value, as the SDK's encoder groups
        if isinstance(span, RequestSpans):
            encoded += _request_spans(span)
        else:
            encoded.append(_span(span))
    out = []
    for resource, scopes in by_resource.values():
        scope_spans = []
        for scope, encoded in scopes.values():
            scope_msg = b""
            if scope is not None:
                scope_msg = _field(1, scope.name.encode()) + (
                    _field(2, scope.version.encode()) if scope.version else b""
                )
            head = _field(1, scope_msg) if scope is not None else b""
            if scope is not None and scope.schema_url:
                encoded = [*encoded, _field(3, scope.schema_url.encode())]
            scope_spans.append(_field(2, head + b"".join(encoded)))
        resource_msg = _field(1, _resource_attributes(resource)) if resource is not None else b""
        schema = _field(3, resource.schema_url.encode()) if resource is not None and resource.schema_url else b""
        out.append(_field(1, resource_msg + b"".join(scope_spans) + schema))
    return b"".join(out)


def _resource_attributes(resource: Any) -> bytes:
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, _any_value(v))) for k, v in resource.attributes.items())


_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _EncodedTraceClient:
    """The trace service stub, taking the request already serialized: no parse and re-serialize."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=None,  # the request is bytes from encode_spans
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class GrpcSpanExporter(_GrpcExporter):
    """The SDK's OTLP/gRPC exporter (endpoint, TLS, headers, compression, retries, `OTEL_*`) with the
    fast encoder, whose bytes go on the wire as they are."""

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # also called to reconnect after transient errors
        self._client = _EncodedTraceClient(self._channel)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return encode_spans(data)
