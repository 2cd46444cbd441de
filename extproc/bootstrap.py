"""Render a complete Envoy bootstrap for a Quorum config (`quorum envoy-config`).

What it wires, and why:
- one cluster per model `cluster`, addressed from the model's `base_url`; Envoy does the load
  balancing, retries and outlier detection;
- one route per model matching the routing header Quorum sets, plus a catch-all that answers 404 in
  OpenAI shape, so a request Quorum did not route can never reach a model by accident;
- the ext_proc filter fail-closed, request body BUFFERED (or FULL_DUPLEX_STREAMED for streamed
  fusion answers), a per-message timeout, and a request buffer limit that fits
  `server.max_body_bytes` plus the growth of a rewritten `model`;
- the client's response carries the routing headers, copied from the request by Envoy itself, so
  routed responses cost no extra ext_proc round trip;
- Envoy's own local replies (timeouts, Quorum unreachable) rewritten as OpenAI error objects.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from extproc.bootstrap_policy import edge_filters, fast_path_filters, fast_path_routes
from extproc.config import EXTPROC_CLUSTER, GUARDS_HEADER, Config, ModelConfig, split_host_port
from extproc.policy import fastpath
from extproc.server import worker_addresses

_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
DEBUG_HEADERS = ("x-quorum-signals", "x-quorum-confidence")  # set only with observability.debug_headers
BODY_SLACK_BYTES = 64 * 1024  # room for the rewritten model name and header growth


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def render(config: Config, workers: int | None = None) -> dict[str, Any]:
    env = config.envoy
    listen_host, listen_port = split_host_port(env.listen)
    admin_host, admin_port = split_host_port(env.admin)
    return {
        "admin": {"address": _address(admin_host, admin_port)},
        "static_resources": {
            "listeners": [_listener(config, listen_host, listen_port)],
            "clusters": [*_model_clusters(config), _extproc_cluster(config, workers or config.server.workers)],
        },
    }


def render_yaml(config: Config, workers: int | None = None) -> str:
    header = "# Rendered by `quorum envoy-config`; edit the Quorum config and render again.\n"
    return header + yaml.safe_dump(render(config, workers), sort_keys=False, width=120)


def _listener(config: Config, host: str, port: int) -> dict[str, Any]:
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": "quorum",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "preserve_external_request_id": True,  # a client's own x-request-id is kept and echoed
        "stream_idle_timeout": _seconds(config.envoy.upstream_timeout),
        "request_timeout": "0s",  # streamed answers may run long; the route timeout bounds upstream waits
        "route_config": _routes(config),
        "local_reply_config": _local_replies(),
        "http_filters": [
            *edge_filters(config),
            *fast_path_filters(fastpath.plan(config)),
            _extproc_filter(config),
            _router_filter(),
        ],
    }
    return {
        "name": "quorum_listener",
        "address": _address(host, port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _routes(config: Config) -> dict[str, Any]:
    server = config.server
    copy_back = [
        {"header": {"key": name, "value": f"%REQ({name})%"}, "keep_empty_value": False}
        for name in (server.route_header, server.decision_header, GUARDS_HEADER, *DEBUG_HEADERS)
    ]
    routes = fast_path_routes(config, fastpath.plan(config), lambda model: _model_route(config, model))
    for model in config.providers.models:
        routes.append(
            {
                "name": f"model_{model.name}",
                "match": {
                    "prefix": "/v1/",
                    "headers": [{"name": server.route_header, "string_match": {"exact": model.name}}],
                },
                "route": _model_route(config, model),
                "response_headers_to_add": copy_back,
            }
        )
    routes.append(
        {
            "name": "unrouted",
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body": {
                    "inline_string": '{"error":{"message":"No route for this request.",'
                    '"type":"invalid_request_error","param":null,"code":"unknown_url"}}'
                },
            },
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
        }
    )
    limit = server.max_body_bytes + BODY_SLACK_BYTES
    return {
        "name": "quorum_routes",
        "virtual_hosts": [{"name": "openai", "domains": ["*"], "routes": routes, "request_body_buffer_limit": limit}],
    }


def _model_route(config: Config, model: ModelConfig) -> dict[str, Any]:
    """Where a request for `model` goes: its cluster, timeout, retries and path/host rewrites."""
    env = config.envoy
    route: dict[str, Any] = {
        "cluster": model.cluster_name,
        "timeout": _seconds(env.upstream_timeout),
        "retry_policy": {
            "retry_on": "connect-failure,refused-stream,reset-before-request",
            "num_retries": env.retries,
        },
    }
    parts = urlsplit(model.base_url)
    base_path = parts.path.rstrip("/")
    if base_path != "/v1":
        route["regex_rewrite"] = {"pattern": {"regex": "^/v1/"}, "substitution": f"{base_path}/"}
    if not _is_ip(parts.hostname or ""):
        route["host_rewrite_literal"] = parts.hostname
    return route


def _extproc_filter(config: Config) -> dict[str, Any]:
    env = config.envoy
    duplex = env.request_body_mode == "full_duplex_streamed"
    usage = config.observability.usage.enabled
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {
                    "cluster_name": EXTPROC_CLUSTER,
                    "max_receive_message_length": config.server.max_body_bytes + (1 << 20),
                },
                "timeout": _seconds(env.max_message_timeout),
            },
            "failure_mode_allow": False,  # fail closed: no request reaches a model unrouted
            "message_timeout": _seconds(env.message_timeout),
            "max_message_timeout": _seconds(env.max_message_timeout),
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


def _local_replies() -> dict[str, Any]:
    """Envoy's own errors (Quorum unreachable, timeouts, overflow) as OpenAI error objects.

    Quorum's ImmediateResponses are local replies too; their response code details start with
    `quorum` (see `envoy.immediate`), and the filter below leaves them alone.
    """
    not_quorum = {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "!response.code_details.startsWith('quorum')",
            },
        }
    }
    return {
        "mappers": [
            {
                "filter": not_quorum,
                "body_format_override": {
                    "json_format": {
                        "error": {
                            "message": "%LOCAL_REPLY_BODY%",
                            "type": "server_error",
                            "param": None,
                            "code": "%RESPONSE_CODE_DETAILS%",
                        }
                    }
                },
            }
        ]
    }


def _model_clusters(config: Config) -> list[dict[str, Any]]:
    clusters: dict[str, dict[str, Any]] = {}
    for model in config.providers.models:
        clusters.setdefault(model.cluster_name, _model_cluster(model))
    return list(clusters.values())


def _model_cluster(model: ModelConfig) -> dict[str, Any]:
    parts = urlsplit(model.base_url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    cluster: dict[str, Any] = {
        "name": model.cluster_name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "5s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": model.cluster_name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
        "outlier_detection": {
            "consecutive_5xx": 5,
            "interval": "10s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 50,
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
            },
        }
    return cluster


def _extproc_cluster(config: Config, workers: int) -> dict[str, Any]:
    endpoints = []
    for address in worker_addresses(config, workers):
        host, port = split_host_port(address)
        endpoints.append({"endpoint": {"address": _address(host, port)}})
    return {
        "name": EXTPROC_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",  # spreads streams over the worker processes, one port each
        "load_assignment": {"cluster_name": EXTPROC_CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "10s"}}
                },
            }
        },
    }
