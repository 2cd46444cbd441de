"""Limits Envoy enforces before a request reaches Quorum or a model (docs/envoy.md, "Limits").

Slow clients (headers timeout, idle connections), large ones (header size and count, body and
connection buffers), HTTP/2 abuse (concurrent streams, flood protections that Envoy keeps on by
default) and overload of Envoy itself (connection count, heap), whose shed replies are
OpenAI-shaped by `local_replies`.
"""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.common import seconds
from extproc.config import Config

BODY_SLACK_BYTES = 64 * 1024  # room for the rewritten model name and header growth


def request_body_buffer_limit(config: Config) -> int:
    """Envoy buffers at most this much request body: Quorum's own limit plus the rewrite slack."""
    return config.server.max_body_bytes + BODY_SLACK_BYTES


def connection_limits(config: Config) -> dict[str, Any]:
    """HTTP connection manager fields bounding what one client connection or stream may hold."""
    env = config.envoy
    limits = env.limits
    return {
        "request_headers_timeout": seconds(limits.request_headers_timeout),
        "max_request_headers_kb": limits.max_request_headers_kb,
        "common_http_protocol_options": {
            "idle_timeout": seconds(limits.idle_connection_timeout),
            "max_headers_count": limits.max_request_headers_count,
            # Requests Quorum answers itself (fusion, errors) have no route timeout: this caps them.
            # Model routes turn it off and keep their own timeouts.
            "max_stream_duration": seconds(env.fusion_timeout),
        },
        "http2_protocol_options": {
            "max_concurrent_streams": limits.http2_max_concurrent_streams,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
    }


def overload_manager(config: Config) -> dict[str, Any]:
    """Shed load when Envoy itself runs out of connections or heap, instead of falling over."""
    limits = config.envoy.limits
    monitors: list[dict[str, Any]] = [
        {
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": limits.max_downstream_connections,
            },
        }
    ]
    actions: list[dict[str, Any]] = []
    if limits.max_heap_bytes is not None:
        heap = "envoy.resource_monitors.fixed_heap"
        monitors.append(
            {
                "name": heap,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": limits.max_heap_bytes,
                },
            }
        )
        actions = [
            _action("envoy.overload_actions.shrink_heap", heap, 0.90),
            _action("envoy.overload_actions.disable_http_keepalive", heap, 0.92),
            _action("envoy.overload_actions.stop_accepting_requests", heap, 0.95),
        ]
    return {"refresh_interval": "0.25s", "resource_monitors": monitors, "actions": actions}


def _action(name: str, monitor: str, threshold: float) -> dict[str, Any]:
    return {"name": name, "triggers": [{"name": monitor, "threshold": {"value": threshold}}]}
