"""Size limits Envoy enforces before a request reaches Quorum or a model."""

from __future__ import annotations

from extproc.config import Config

BODY_SLACK_BYTES = 64 * 1024  # room for the rewritten model name and header growth


def request_body_buffer_limit(config: Config) -> int:
    """Envoy buffers at most this much request body: Quorum's own limit plus the rewrite slack."""
    return config.server.max_body_bytes + BODY_SLACK_BYTES
