"""Build the process-wide telemetry: an OpenTelemetry tracer, Prometheus instruments, the access log."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from extproc.config import ObservabilityConfig, TracingConfig
from extproc.telemetry.metrics import Metrics
from extproc.telemetry.spans import RecordExpandingExporter, SpanWriter

log = logging.getLogger("quorum.telemetry")
ACCESS_LOG = logging.getLogger("quorum.access")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, access_stream: TextIO | None = None) -> None:
    """Process logs as text lines on stderr; the access log as bare JSON lines (one object per line,
    nothing around it) on stdout, so a log shipper can parse it as is."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for handler in list(ACCESS_LOG.handlers):
        ACCESS_LOG.removeHandler(handler)
    handler = logging.StreamHandler(access_stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ACCESS_LOG.addHandler(handler)
    ACCESS_LOG.setLevel(level.upper())
    ACCESS_LOG.propagate = False


@dataclass
class Telemetry:
    tracer: trace.Tracer
    metrics: Metrics | None
    capture_content: bool = False
    access_log: bool = True
    debug_headers: bool = False
    provider: TracerProvider | None = None
    spans: SpanWriter | None = None  # writes the routing spans to the provider's span processor

    @property
    def tracing(self) -> bool:
        return self.spans is not None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()  # flushes spans still queued in the batch processor


def build_telemetry(
    config: ObservabilityConfig, environ: Mapping[str, str] | None = None, metrics: Metrics | None = None
) -> Telemetry:
    env = os.environ if environ is None else environ
    provider, processor = _tracer_provider(config.tracing, env)
    tracer = provider.get_tracer("quorum") if provider is not None else trace.NoOpTracer()
    if metrics is None and config.metrics.enabled:
        metrics = Metrics()
    return Telemetry(
        tracer=tracer,
        metrics=metrics,
        capture_content=config.tracing.capture_content,
        access_log=config.access_log,
        debug_headers=config.debug_headers,
        provider=provider,
        spans=SpanWriter(provider, processor, config.tracing.sample_ratio) if processor is not None else None,
    )


def exporter_name(cfg: TracingConfig, env: Mapping[str, str]) -> str:
    """The config wins; otherwise the standard OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_PROTOCOL."""
    if cfg.exporter is not None:
        return cfg.exporter
    name = env.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip().lower()
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        return "otlp_http" if protocol.startswith("http") else "otlp_grpc"
    return name if name in ("console", "none") else "none"


def _tracer_provider(
    cfg: TracingConfig, env: Mapping[str, str]
) -> tuple[TracerProvider, BatchSpanProcessor] | tuple[None, None]:
    name = exporter_name(cfg, env)
    if name == "none" or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None, None
    exporter = _exporter(name, cfg.endpoint)
    attributes: dict[str, Any] = {"service.name": env.get("OTEL_SERVICE_NAME") or cfg.service_name}
    provider = TracerProvider(
        resource=Resource.create(attributes),  # also merges OTEL_RESOURCE_ATTRIBUTES
        sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
    )
    processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    log.info("tracing: exporting spans with %s%s", name, f" to {cfg.endpoint}" if cfg.endpoint else "")
    return provider, processor


def _exporter(name: str, endpoint: str | None) -> SpanExporter:
    """The exporter for `name`; all of them accept the routing path's RequestSpans records."""
    if name == "console":
        return RecordExpandingExporter(ConsoleSpanExporter())
    if name == "otlp_http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return RecordExpandingExporter(HttpExporter(endpoint=endpoint) if endpoint else HttpExporter())
    from extproc.telemetry.otlp import GrpcSpanExporter as GrpcExporter

    if endpoint:
        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    return GrpcExporter()


NO_TELEMETRY = Telemetry(tracer=trace.NoOpTracer(), metrics=None, access_log=False)
