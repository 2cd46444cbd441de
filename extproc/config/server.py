"""`server` (Quorum's gRPC listener) and `envoy` (what `quorum envoy-config` renders)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from extproc.config.base import (
    Seconds,
    SecondsOrZero,
    Strict,
    split_host_port,
)


class AdmissionConfig(Strict):
    """Per-worker budgets past which Quorum refuses at once with a 503 (see extproc/admission.py)."""

    max_in_flight: int = Field(64, ge=0)  # chat requests being routed at once; 0: no limit
    max_fusion_runs: int = Field(16, ge=0)  # fusion runs at once; 0: no limit
    retry_after: int = Field(1, ge=0, le=3600)  # seconds, sent as retry-after with every refusal


class SupervisionConfig(Strict):
    """How `--workers N` restarts a worker that died (see extproc/supervisor.py)."""

    max_restarts: int = Field(5, ge=0)  # more restarts than this within restart_window: exit 1
    restart_window: Seconds = 60.0
    backoff: Seconds = 0.5  # first wait before a restart; doubles while the worker keeps dying quickly
    max_backoff: Seconds = 10.0
    stable_after: Seconds = 30.0  # a worker up this long is healthy again: its backoff starts over


class ServerConfig(Strict):
    listen: str = "127.0.0.1:50051"
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, le=1024 * 1024 * 1024)
    workers: int = Field(1, ge=1, le=64)
    route_header: str = "x-quorum-model"
    decision_header: str = "x-quorum-decision"
    grace_period: Seconds = 10.0  # SIGTERM: how long in-flight streams may still finish
    # SIGTERM: keep serving this long after reporting NOT_SERVING, so Envoy's health checks see it
    # and stop sending new streams before the listener closes.
    drain_delay: SecondsOrZero = 3.0  # above the rendered health check: every 1 s, 2 s timeout
    # How often the config file (or directory) is checked for changes; 0 = only on SIGHUP.
    watch_interval: SecondsOrZero = 1.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    admission: AdmissionConfig = AdmissionConfig()
    supervision: SupervisionConfig = SupervisionConfig()

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_host_port(v)
        return v

    @model_validator(mode="after")
    def _worker_ports(self) -> ServerConfig:
        _, port = split_host_port(self.listen)
        if port + self.workers - 1 > 65535:
            raise ValueError(f"workers listen on consecutive ports from {port}: {self.workers} do not fit below 65536")
        return self

    @field_validator("route_header", "decision_header")
    @classmethod
    def _header_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9-]+", v):
            raise ValueError("a header name is lower-case letters, digits and dashes")
        return v


class EnvoyLimits(Strict):
    """Envoy's protections against slow, large or hostile clients (docs/envoy.md, "Limits")."""

    request_headers_timeout: Seconds = 10.0  # a client must finish its headers within this
    max_request_headers_kb: int = Field(60, ge=1, le=8192)
    max_request_headers_count: int = Field(100, ge=1, le=10_000)
    per_connection_buffer_bytes: int = Field(1024 * 1024, ge=32 * 1024, le=1024 * 1024 * 1024)
    idle_connection_timeout: Seconds = 300.0  # a keep-alive connection with no stream is closed
    max_downstream_connections: int = Field(10_000, ge=1)
    max_heap_bytes: int | None = Field(2 * 1024 * 1024 * 1024, ge=1024 * 1024)  # None: no heap shedding
    http2_max_concurrent_streams: int = Field(100, ge=1, le=2_147_483_647)
    # ext_proc streams Envoy keeps open to Quorum at once (circuit breaker of the quorum_extproc
    # cluster); past it a request gets a 503 at once instead of queueing in front of a busy Quorum.
    # None: derived from server.admission (extproc/bootstrap/extproc_cluster.py).
    max_extproc_streams: int | None = Field(None, ge=1)


class UpstreamTls(Strict):
    """How Envoy checks `https` model backends."""

    verify: bool = True
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"  # Debian/Ubuntu/Alpine system bundle


class EnvoyConfig(Strict):
    """Settings used only by `quorum envoy-config` when it renders the Envoy bootstrap."""

    listen: str = "127.0.0.1:8080"
    admin: str = "127.0.0.1:9901"
    # full_duplex_streamed (the default): Envoy sends the body without waiting for the headers
    # answer, so routing costs one ext_proc round trip instead of two, and fusion can stream its
    # answer token by token. buffered: Envoy buffers the body and enforces its own size limit
    # first; the routed upstream request keeps its content-length instead of going out chunked.
    request_body_mode: Literal["buffered", "full_duplex_streamed"] = "full_duplex_streamed"
    message_timeout: Seconds = 5.0
    max_message_timeout: Seconds = 600.0
    upstream_timeout: Seconds = 600.0
    retries: int = Field(2, ge=0, le=10)
    # A Quorum process that stops answering (frozen, partitioned) is detected by HTTP/2 pings on
    # the ext_proc connection within this time; its requests get a 504.
    stall_timeout: Seconds = 10.0
    # The longest a request Quorum answers itself (fusion, errors) may take end to end.
    fusion_timeout: Seconds = 360.0
    access_log: str | None = "/dev/stdout"  # one JSON object per line; null turns it off
    tls: UpstreamTls = UpstreamTls()
    limits: EnvoyLimits = EnvoyLimits()
    # The quorum_extproc cluster's endpoints (host:port; a DNS name is resolved to all its addresses).
    # Empty: the worker ports of server.listen.
    extproc_endpoints: list[str] = []
    # A fallback chain moves to the next model when an attempt sends nothing for this long.
    fallback_idle_timeout: Seconds = 60.0
    # Explicit-model requests for models no policy covers are routed by Envoy alone (docs/envoy.md).
    fast_path: bool = False
    # HTTP filters (Envoy config, as mappings) that establish the client identity for `access`,
    # e.g. jwt_authn with claim_to_headers; they run after the client-sent identity header is removed.
    identity_filters: list[dict[str, Any]] = []

    @field_validator("listen", "admin")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_host_port(v)
        return v

    @field_validator("extproc_endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for endpoint in v:
            split_host_port(endpoint)
        if len(set(v)) != len(v):
            raise ValueError("an endpoint is listed twice")
        return v
