"""The route table: one route per model, matched on Quorum's routing header, and a 404 catch-all."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.common import is_ip, seconds
from extproc.bootstrap.fallbacks import chain_routes
from extproc.bootstrap.limits import request_body_buffer_limit
from extproc.config import Config, ModelConfig

DEBUG_HEADERS = ("x-quorum-signals", "x-quorum-confidence")  # set only with observability.debug_headers


def route_config(config: Config) -> dict[str, Any]:
    server = config.server
    copy_back = [
        {"header": {"key": name, "value": f"%REQ({name})%"}, "keep_empty_value": False}
        for name in (server.route_header, server.decision_header, *DEBUG_HEADERS)
    ]
    routes = [_model_route(config, model, copy_back) for model in config.providers.models]
    routes += chain_routes(config, copy_back)
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


def _model_route(config: Config, model: ModelConfig, copy_back: list[dict[str, Any]]) -> dict[str, Any]:
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
    return {
        "name": f"model_{model.name}",
        "match": {
            "prefix": "/v1/",
            "headers": [{"name": config.server.route_header, "string_match": {"exact": model.name}}],
        },
        "route": route,
        "response_headers_to_add": copy_back,
    }


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
