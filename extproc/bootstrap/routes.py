"""The route table: one route per model, matched on Quorum's routing header, and a 404 catch-all."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.common import is_ip, seconds
from extproc.bootstrap.limits import request_body_buffer_limit
from extproc.bootstrap.policy import fast_path_routes
from extproc.config import GUARDS_HEADER, Config, ModelConfig
from extproc.policy import fastpath

DEBUG_HEADERS = ("x-quorum-signals", "x-quorum-confidence")  # set only with observability.debug_headers


def route_config(config: Config) -> dict[str, Any]:
    server = config.server
    copy_back = [
        {"header": {"key": name, "value": f"%REQ({name})%"}, "keep_empty_value": False}
        for name in (server.route_header, server.decision_header, GUARDS_HEADER, *DEBUG_HEADERS)
    ]
    routes = fast_path_routes(config, fastpath.plan(config), lambda model: upstream(config, model))
    routes += [
        {
            "name": f"model_{model.name}",
            "match": {
                "prefix": "/v1/",
                "headers": [{"name": server.route_header, "string_match": {"exact": model.name}}],
            },
            "route": upstream(config, model),
            "response_headers_to_add": copy_back,
        }
        for model in config.providers.models
    ]
    routes.append(_unrouted())
    return {
        "name": "quorum_routes",
        "virtual_hosts": [
            {
                "name": "openai",
                "domains": ["*"],
                "routes": routes,
                "request_body_buffer_limit": request_body_buffer_limit(config),
            }
        ],
    }


def upstream(config: Config, model: ModelConfig) -> dict[str, Any]:
    """Where a request for `model` goes: its cluster, timeout, retries and path/host rewrites."""
    env = config.envoy
    route: dict[str, Any] = {
        "cluster": model.cluster_name,
        "timeout": seconds(env.upstream_timeout),
        "retry_policy": {
            "retry_on": "connect-failure,refused-stream,reset-before-request",
            "num_retries": env.retries,
        },
    }
    parts = urlsplit(model.base_url)
    base_path = parts.path.rstrip("/")
    if base_path != "/v1":
        route["regex_rewrite"] = {"pattern": {"regex": "^/v1/"}, "substitution": f"{base_path}/"}
    if not is_ip(parts.hostname or ""):
        route["host_rewrite_literal"] = parts.hostname
    return route


def _unrouted() -> dict[str, Any]:
    return {
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
