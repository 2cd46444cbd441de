"""Telemetry set-up and the per-request recorder: exporter choice, cost, the access-log line."""

from __future__ import annotations

import logging

import orjson
import pytest
from builders import traced_telemetry
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from extproc.config import ObservabilityConfig, Pricing, TracingConfig, parse_config
from extproc.modeltypes import Usage
from extproc.runtime import Model
from extproc.telemetry import build_telemetry
from extproc.telemetry.otlp import GrpcSpanExporter
from extproc.telemetry.recorder import RequestRecorder
from extproc.telemetry.setup import _exporter, exporter_name


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [
        (None, {}, "none"),
        (None, {"OTEL_TRACES_EXPORTER": "otlp"}, "otlp_grpc"),
        (None, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp_http"),
        (None, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "otlp_http"),
        (None, {"OTEL_TRACES_EXPORTER": "console"}, "console"),
        (None, {"OTEL_TRACES_EXPORTER": "zipkin"}, "none"),
        ("otlp_grpc", {"OTEL_TRACES_EXPORTER": "none"}, "otlp_grpc"),  # the config wins
    ],
)
def test_exporter_choice_honours_config_then_otel_variables(configured, env, expected):
    assert exporter_name(TracingConfig(exporter=configured), env) == expected


def test_exporters_and_sdk_disabled():
    assert isinstance(_exporter("otlp_grpc", "http://127.0.0.1:4317"), GrpcSpanExporter)
    # Exporters that only know the SDK's spans get the routing path's records expanded first.
    assert isinstance(_exporter("otlp_http", "http://127.0.0.1:4318/v1/traces").inner, HttpExporter)
    assert isinstance(_exporter("console", None).inner, ConsoleSpanExporter)
    on = build_telemetry(ObservabilityConfig(tracing=TracingConfig(exporter="console")), environ={})
    assert on.tracing
    off = build_telemetry(
        ObservabilityConfig(tracing=TracingConfig(exporter="console")), environ={"OTEL_SDK_DISABLED": "true"}
    )
    assert not off.tracing


def test_cost_and_tokens_from_pricing():
    telemetry = build_telemetry(ObservabilityConfig(), environ={})
    model = Model("m", "m-1", "http://127.0.0.1:1/v1", pricing=Pricing(prompt_per_1m=2.0, completion_per_1m=8.0))
    recorder = RequestRecorder(telemetry)
    recorder.add_usage(model, Usage(1000, 500, 1500))
    registry = telemetry.metrics.registry
    assert registry.get_sample_value("quorum_cost_total", {"model": "m", "currency": "USD"}) == pytest.approx(0.006)
    assert registry.get_sample_value("quorum_tokens_total", {"model": "m", "direction": "output"}) == 500
    assert (recorder.usage_in, recorder.usage_out) == (1000, 500)


def test_access_log_line(caplog):
    telemetry = build_telemetry(ObservabilityConfig(), environ={})
    recorder = RequestRecorder(telemetry)
    recorder.start({":method": "POST", ":path": "/v1/chat/completions?x=1", "x-request-id": "rid-9"})
    recorder.decided("coding", 100, 1.0, "demo-coder", "route")
    with caplog.at_level(logging.INFO, logger="quorum.access"):
        recorder.finish()
        recorder.finish()  # emitted exactly once
    [record] = [r for r in caplog.records if r.name == "quorum.access"]
    line = orjson.loads(record.getMessage())
    assert line["request_id"] == "rid-9" and line["path"] == "/v1/chat/completions"
    assert (line["decision"], line["model"], line["status"], line["kind"]) == (
        "coding",
        "demo-coder",
        "forwarded",
        "route",
    )
    assert line["latency_ms"] >= 0 and line["trace_id"] is None  # tracing off
    assert telemetry.metrics.registry.get_sample_value("quorum_inflight_streams") == 0


def test_missing_embedding_model_is_a_config_error_at_start():
    from extproc.config import ConfigError

    pytest.importorskip("onnxruntime")
    with pytest.raises(ConfigError) as info:  # an unknown local model: at parse time
        parse_config(
            """
providers: {models: [{name: m, base_url: "http://127.0.0.1:1/v1"}]}
routing:
  embedding: {domain_model: no-such-model}
  signals: {domain: [{name: law, examples: ["contract law"]}]}
  decisions: [{name: d, rules: {type: domain, name: law}, modelRefs: [{model: m}]}]
"""
        )
    assert info.value.problems[0].startswith("routing.embedding: ")


def _recorded_request(ratio: float, traceparent: str | None):
    """One routed request through a recorder with an in-memory exporter, sampled at `ratio`."""
    telemetry, exporter = traced_telemetry(ratio)
    recorder = RequestRecorder(telemetry)
    headers = {":method": "POST", ":path": "/v1/chat/completions", "x-request-id": "r-1"}
    if traceparent:
        headers["traceparent"] = traceparent
    recorder.start(headers)
    recorder.signals({("keyword", "code"): 1.0, ("keyword", "other"): None}, 0.0)
    recorder.decided("coding", 100, 1.0, "coder", "route")
    with recorder.stage("quorum.fusion.panel"):  # an SDK span under the written request span
        pass
    recorder.answered(200)
    recorder.finish()
    return {s.name: s for s in exporter.get_finished_spans()}


def test_routing_spans_form_one_tree_under_the_clients_trace():
    client_trace, client_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    spans = _recorded_request(1.0, f"00-{client_trace}-{client_span}-01")
    assert set(spans) == {"quorum.request", "quorum.signals", "quorum.decision", "quorum.fusion.panel"}
    root = spans["quorum.request"]
    assert format(root.context.trace_id, "032x") == client_trace
    assert root.parent is not None and root.parent.is_remote and format(root.parent.span_id, "016x") == client_span
    for name in ("quorum.signals", "quorum.decision", "quorum.fusion.panel"):
        assert spans[name].context.trace_id == root.context.trace_id
        assert spans[name].parent.span_id == root.context.span_id
    assert root.start_time <= spans["quorum.decision"].start_time <= root.end_time
    assert root.attributes["quorum.decision.name"] == "coding" and root.attributes["http.response.status_code"] == 200
    assert list(spans["quorum.signals"].attributes["quorum.signals.matched"]) == ["keyword:code"]


def test_sampling_applies_to_written_spans_and_their_sdk_children():
    assert _recorded_request(0.0, None) == {}  # the ratio sampler said no: nothing at all is exported
    # ParentBased: a sampled client trace is kept even at ratio 0, and an unsampled one is not.
    assert len(_recorded_request(0.0, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")) == 4
    assert _recorded_request(1.0, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00") == {}
