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
    Strict,
    split_host_port,
)


class ServerConfig(Strict):
    listen: str = "127.0.0.1:50051"
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, le=1024 * 1024 * 1024)
    workers: int = Field(1, ge=1, le=64)
    route_header: str = "x-quorum-model"
    decision_header: str = "x-quorum-decision"
    grace_period: Seconds = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
