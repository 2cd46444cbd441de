"""Traces through a real Envoy into a real OTLP gRPC receiver; propagation to model calls; metrics."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import openai
import pytest
from conftest import backend_requests, clear_backends, write_config
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from extproc.dev.stack import Stack, free_port

pytestmark = pytest.mark.integration

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
SECRET_PROMPT = "zebra-marmalade-sentinel"  # must never appear in exported spans


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace endpoint that keeps every exported span."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "status": span.status.code,
                                "service": service.get("service.name"),
                            }
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str, names: set[str], timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                spans = [s for s in self.spans if s["trace_id"] == trace_id]
            if names <= {s["name"] for s in spans}:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"spans {names} not received; got {[s['name'] for s in spans]}")


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    sink = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sink.port = port
    yield sink
    server.stop(0)


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory, receiver) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("traced")
    tracing = f"{{exporter: otlp_grpc, endpoint: 'http://127.0.0.1:{receiver.port}', service_name: quorum-test}}"
    path, _ = write_config(workdir, tracing=tracing, debug_headers=True)
    os.environ.update({"QUORUM_TEST_LARGE_KEY": "k", "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        with Stack(path, workdir) as stack:
            yield stack
    finally:
        for key in ("QUORUM_TEST_LARGE_KEY", "OTEL_BSP_SCHEDULE_DELAY"):
            os.environ.pop(key, None)


def client_for(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)


def traceparent() -> dict[str, str]:
    return {"traceparent": f"00-{CLIENT_TRACE_ID[:-4]}{free_port() % 10000:04d}-{CLIENT_SPAN_ID}-01"}


def by_name(spans: list[dict], name: str) -> list[dict]:
    return [s for s in spans if s["name"] == name]


def test_routed_request_span_tree(traced_stack, receiver):
    header = traceparent()
    trace_id = header["traceparent"].split("-")[1]
    client_for(traced_stack).chat.completions.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": f"python help {SECRET_PROMPT}"}],
        extra_headers=header,
    )
    spans = receiver.trace(trace_id, {"quorum.request", "quorum.signals", "quorum.decision"})
    [root] = by_name(spans, "quorum.request")
    assert root["parent"] == CLIENT_SPAN_ID  # parented on the client's traceparent
    assert root["kind"] == 2  # SPAN_KIND_SERVER
    assert root["service"] == "quorum-test"
    assert root["attributes"]["quorum.decision.name"] == "coding"
    assert root["attributes"]["quorum.model"] == "demo-coder"
    [signals] = by_name(spans, "quorum.signals")
    [decision] = by_name(spans, "quorum.decision")
    assert signals["parent"] == root["span_id"] and decision["parent"] == root["span_id"]
    assert "keyword:code" in signals["attributes"]["quorum.signals.matched"]
    assert decision["attributes"]["quorum.decision.priority"] == 100
    assert SECRET_PROMPT not in repr(spans)


def test_fusion_span_tree_with_genai_attributes(traced_stack, receiver):
    clear_backends(traced_stack)
    header = traceparent()
    trace_id = header["traceparent"].split("-")[1]
    client_for(traced_stack).chat.completions.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": f"compare a and b {SECRET_PROMPT}"}],
        extra_headers={**header, "x-request-id": "fusion-rid-1"},
    )
    names = {"quorum.request", "quorum.fusion.panel", "quorum.fusion.judge", "quorum.fusion.synthesis"}
    spans = receiver.trace(trace_id, names | {"chat small-v1", "chat coder-v1", "chat large-v1"})
    [root] = by_name(spans, "quorum.request")
    [panel] = by_name(spans, "quorum.fusion.panel")
    [judge] = by_name(spans, "quorum.fusion.judge")
    [synthesis] = by_name(spans, "quorum.fusion.synthesis")
    assert {panel["parent"], judge["parent"], synthesis["parent"]} == {root["span_id"]}
    calls = [s for s in spans if s["name"].startswith("chat ")]
    assert sorted(s["parent"] for s in calls) == sorted(
        [panel["span_id"]] * 2 + [judge["span_id"], synthesis["span_id"]]
    )
    for call in calls:
        attrs = call["attributes"]
        assert call["kind"] == 3  # SPAN_KIND_CLIENT
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == call["name"].removeprefix("chat ")
        assert attrs["gen_ai.response.model"] == attrs["gen_ai.request.model"]  # the fake echoes the model
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert SECRET_PROMPT not in repr(spans)  # content capture is off by default
    # Every model call carried the trace context of its own span, and the client's request id.
    received = [r for m in ("demo-small", "demo-coder", "demo-large") for r in backend_requests(traced_stack, m)]
    assert len(received) == 4
    call_span_ids = {s["span_id"] for s in calls}
    for record in received:
        _version, trace, span_id, _flags = record["headers"]["traceparent"].split("-")
        assert trace == trace_id and span_id in call_span_ids
        assert record["headers"]["x-request-id"] == "fusion-rid-1"


def test_failed_panel_call_has_error_type(traced_stack, receiver):
    header = traceparent()
    trace_id = header["traceparent"].split("-")[1]
    client_for(traced_stack).chat.completions.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": "compare [[fake:status=503 only=demo-small]]"}],
        extra_headers=header,
    )
    spans = receiver.trace(trace_id, {"chat small-v1", "quorum.fusion.synthesis"})
    [failed] = by_name(spans, "chat small-v1")
    assert failed["attributes"]["error.type"] == "503"
    assert failed["status"] == 2  # STATUS_CODE_ERROR


def test_propagation_without_tracing(stack):
    """With tracing off, the client's trace context and request id still reach every model call."""
    clear_backends(stack)
    header = traceparent()
    client_for(stack).chat.completions.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": "compare x and y"}],
        extra_headers={**header, "x-request-id": "plain-rid"},
    )
    received = [r for m in ("demo-small", "demo-coder", "demo-large") for r in backend_requests(stack, m)]
    assert len(received) == 4
    for record in received:
        assert record["headers"]["traceparent"] == header["traceparent"]
        assert record["headers"]["x-request-id"] == "plain-rid"


def test_metrics_endpoint(traced_stack):
    client = client_for(traced_stack)
    client.chat.completions.create(model="quorum/auto", messages=[{"role": "user", "content": "python"}])
    client.chat.completions.create(model="quorum/auto", messages=[{"role": "user", "content": "compare x"}])
    port = int(traced_stack.config.observability.metrics.listen.rsplit(":", 1)[1])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'quorum_requests_total{decision="coding",model="demo-coder",status="forwarded"}' in text
    assert 'quorum_requests_total{decision="deliberate",model="demo-large",status="200"}' in text
    assert 'quorum_fusion_stage_seconds_count{stage="panel"}' in text
    assert 'quorum_tokens_total{direction="input",model="demo-small"}' in text
    assert "quorum_inflight_streams 0.0" in text
    assert 'quorum_extproc_processing_seconds_count{kind="route"}' in text


def test_debug_headers_when_enabled(traced_stack):
    client = client_for(traced_stack)
    raw = client.chat.completions.with_raw_response.create(
        model="quorum/auto", messages=[{"role": "user", "content": "python bug ABC-12"}]
    )
    assert set(raw.headers["x-quorum-signals"].split(",")) == {"keyword:code", "regex:ticket"}
    assert raw.headers["x-quorum-confidence"] == "1.0000"
    fused = client.chat.completions.with_raw_response.create(
        model="quorum/auto", messages=[{"role": "user", "content": "compare a and b"}]
    )
    assert "keyword:compare" in fused.headers["x-quorum-signals"]


def test_debug_headers_cannot_be_forged_when_disabled(client):
    raw = client.chat.completions.with_raw_response.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": "python"}],
        extra_headers={"x-quorum-signals": "forged", "x-quorum-confidence": "9"},
    )
    assert "x-quorum-signals" not in raw.headers and "x-quorum-confidence" not in raw.headers


def test_client_credentials_never_in_spans_or_model_calls(traced_stack, receiver):
    """The header case of "secrets never leave": the client's gateway key, routed and fused."""
    secret = "sk-client-span-secret-41c9"
    clear_backends(traced_stack)
    client = openai.OpenAI(base_url=f"{traced_stack.envoy_url}/v1", api_key=secret, max_retries=0, timeout=20)
    trace_ids = []
    for text in ("python help", "compare a and b"):  # routed to demo-coder; fused over all three
        header = traceparent()
        trace_ids.append(header["traceparent"].split("-")[1])
        client.chat.completions.create(
            model="quorum/auto",
            messages=[{"role": "user", "content": text}],
            extra_headers={**header, "x-api-key": secret},
        )
    spans = [s for trace_id in trace_ids for s in receiver.trace(trace_id, {"quorum.request"})]
    assert spans and secret not in repr(spans)
    received = [r for m in ("demo-small", "demo-coder", "demo-large") for r in backend_requests(traced_stack, m)]
    assert len(received) == 5  # one routed call, two panel calls, the judge and the synthesis
    for record in received:
        assert secret not in repr(record["headers"])
