"""The LLM listener: HTTP connection manager, the ext_proc filter and the router."""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.access_log import access_logs
from extproc.bootstrap.common import address, seconds
from extproc.bootstrap.extproc_cluster import stream_retry_policy
from extproc.bootstrap.limits import connection_limits
from extproc.bootstrap.local_replies import local_replies
from extproc.bootstrap.policy import edge_filters, fast_path_filters
from extproc.bootstrap.routes import route_config
from extproc.config import EXTPROC_CLUSTER, Config
from extproc.policy import fastpath

_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def listener(config: Config, host: str, port: int) -> dict[str, Any]:
    env = config.envoy
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": "quorum",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "preserve_external_request_id": True,  # a client's own x-request-id is kept and echoed
        "stream_idle_timeout": seconds(env.upstream_timeout),
        "request_timeout": "0s",  # streamed answers may run long; the route timeout bounds upstream waits
        **connection_limits(config),
        "route_config": route_config(config),
        "local_reply_config": local_replies(config.server.admission.retry_after),
        **access_logs(config),
        "http_filters": [
            *edge_filters(config),
            *fast_path_filters(fastpath.plan(config)),
            extproc_filter(config),
            _router_filter(),
        ],
    }
    return {
        "name": "quorum_listener",
        "address": address(host, port),
        "per_connection_buffer_limit_bytes": env.limits.per_connection_buffer_bytes,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def extproc_filter(config: Config, cluster_name: str = EXTPROC_CLUSTER) -> dict[str, Any]:
    """The ext_proc filter; also what deploy/ attaches to Istio's gateway (under Istio's cluster name)."""
    env = config.envoy
    duplex = env.request_body_mode == "full_duplex_streamed"
    usage = config.observability.usage.enabled
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {
                    "cluster_name": cluster_name,
                    "max_receive_message_length": config.server.max_body_bytes + (1 << 20),
                },
                "timeout": seconds(env.max_message_timeout),
                "retry_policy": stream_retry_policy(),
            },
            "failure_mode_allow": False,  # fail closed: no request reaches a model unrouted
            "message_timeout": seconds(env.message_timeout),
            "max_message_timeout": seconds(env.max_message_timeout),
            "allow_mode_override": True,
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "FULL_DUPLEX_STREAMED" if duplex else "BUFFERED",
                # Usage accounting reads routed responses; otherwise they never touch Quorum.
                "response_header_mode": "SEND" if usage else "SKIP",
                # Buffered mode asks for a response body per response (mode_override); Envoy 1.40
                # ignores mode_override when the request body mode is FULL_DUPLEX_STREAMED, so there
                # every response body streams through Quorum when usage accounting is on.
                "response_body_mode": "STREAMED" if usage and duplex else "NONE",
                "request_trailer_mode": "SEND" if duplex else "SKIP",  # Envoy requires SEND with full duplex
                "response_trailer_mode": "SKIP",
            },
        },
    }


def _router_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
