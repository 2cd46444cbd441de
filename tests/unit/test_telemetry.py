"""Telemetry set-up and the per-request recorder: exporter choice, cost, the access-log line."""

from __future__ import annotations

import logging

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from extproc.config import ObservabilityConfig, Pricing, TracingConfig, parse_config
from extproc.models import Usage
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
    assert isinstance(_exporter("otlp_http", "http://127.0.0.1:4318/v1/traces"), HttpExporter)
    assert isinstance(_exporter("console", None), ConsoleSpanExporter)
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
    from extproc.runtime import build_runtime

    pytest.importorskip("onnxruntime")
    config = parse_config(
        """
providers: {models: [{name: m, base_url: "http://127.0.0.1:1/v1"}]}
routing:
  embedding: {model: no-such-model}
  signals: {domain: [{name: law, examples: ["contract law"]}]}
  decisions: [{name: d, rules: {type: domain, name: law}, modelRefs: [{model: m}]}]
"""
    )
    with pytest.raises(ConfigError) as info:
        build_runtime(config, environ={})
    assert info.value.problems[0].startswith("routing.embedding: ")
