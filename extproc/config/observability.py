"""`observability`: tracing, metrics, the access log, usage accounting, debug headers."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from extproc.config.base import (
    Strict,
    split_host_port,
)


class TracingConfig(Strict):
    # none: no spans (the default unless OTEL_TRACES_EXPORTER says otherwise); otlp_grpc / otlp_http
    # honour the standard OTEL_EXPORTER_OTLP_* variables when `endpoint` is not set.
    exporter: Literal["none", "otlp_grpc", "otlp_http", "console"] | None = None
    endpoint: str | None = None
    service_name: str = "quorum"
    sample_ratio: float = Field(1.0, ge=0, le=1)
    capture_content: bool = False  # record prompt and answer text on model-call spans


class MetricsConfig(Strict):
    enabled: bool = True
    listen: str = "127.0.0.1:9190"  # worker i serves on port + i

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_host_port(v)
        return v


class UsageConfig(Strict):
    # Read routed responses (JSON bodies, SSE streams) for token usage: costs ext_proc messages
    # on the response path, so it is off unless asked for.
    enabled: bool = False
    # Ask streaming backends for a usage chunk, and remove it for clients that did not ask.
    request_stream_usage: bool = False


class ObservabilityConfig(Strict):
    tracing: TracingConfig = TracingConfig()
    metrics: MetricsConfig = MetricsConfig()
    access_log: bool = True  # one JSON line per request on the quorum.access logger
    usage: UsageConfig = UsageConfig()
    debug_headers: bool = False  # x-quorum-signals / x-quorum-confidence on responses
