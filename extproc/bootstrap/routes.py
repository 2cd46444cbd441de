"""The route table: one route per model, matched on Quorum's routing header, and a 404 catch-all."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.common import is_ip, seconds
from extproc.bootstrap.credentials import credential_headers_to_remove
from extproc.bootstrap.fallbacks import chain_routes
from extproc.bootstrap.limits import request_body_buffer_limit
from extproc.bootstrap.policy import fast_path_routes
from extproc.config import GUARDS_HEADER, Config, ModelConfig
from extproc.policy import fastpath

DEBUG_HEADERS = ("x-quorum-signals", "x-quorum-confidence")  # set only with observability.debug_headers


def route_config(config: Config) -> dict[str, Any]:
    copy_back = _copy_back(config)
    routes = [*fast_routes(config), *model_routes(config, copy_back), *chain_routes(config, copy_back)]
    routes.append(unrouted_route())
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


def fast_routes(config: Config) -> list[dict[str, Any]]:
    """The fast-path routes alone, as `route_config` puts them first; the Istio and Envoy Gateway
    manifests patch these same routes into the gateway's route table."""
    header_routes = zip(config.providers.models, model_routes(config), strict=True)
    return fast_path_routes(config, fastpath.plan(config), header_routes)


def model_routes(config: Config, copy_back: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One route per model, matched on the routing header Quorum sets, in the models' order."""
    copy_back = _copy_back(config) if copy_back is None else copy_back
    return [_model_route(config, model, copy_back) for model in config.providers.models]


def _copy_back(config: Config) -> list[dict[str, Any]]:
    server = config.server
    return [
        {"header": {"key": name, "value": f"%REQ({name})%"}, "keep_empty_value": False}
        for name in (server.route_header, server.decision_header, GUARDS_HEADER, *DEBUG_HEADERS)
    ]


def _model_route(config: Config, model: ModelConfig, copy_back: list[dict[str, Any]]) -> dict[str, Any]:
    env = config.envoy
    route: dict[str, Any] = {
        "cluster": model.cluster_name,
        "timeout": seconds(env.upstream_timeout),
        "retry_policy": {
            "retry_on": "connect-failure,refused-stream,reset-before-request",
            "num_retries": env.retries,
        },
        # Routed requests are bounded by `timeout` and the idle timeout, not by the listener's
        # fusion_timeout cap on requests Quorum answers itself (0s turns that cap off here).
        "max_stream_duration": {"max_stream_duration": "0s"},
    }
    parts = urlsplit(model.base_url)
    base_path = parts.path.rstrip("/")
    if base_path != "/v1":
        route["regex_rewrite"] = {"pattern": {"regex": "^/v1/"}, "substitution": f"{base_path}/"}
    if not is_ip(parts.hostname or ""):
        route["host_rewrite_literal"] = parts.hostname
    entry: dict[str, Any] = {
        "name": f"model_{model.name}",
        "match": {
            "prefix": "/v1/",
            "headers": [{"name": config.server.route_header, "string_match": {"exact": model.name}}],
        },
        "route": route,
        "response_headers_to_add": copy_back,
    }
    removed = credential_headers_to_remove([model])
    if removed:
        entry["request_headers_to_remove"] = removed
    return entry


def unrouted_route() -> dict[str, Any]:
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
