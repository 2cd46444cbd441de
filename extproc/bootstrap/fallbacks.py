"""Fallback chains in Envoy: one cluster per chain, its models at priorities 0, 1, 2, ...

Quorum names the chain in the route header (`a>b`); the chain's route sends the request to the
chain's cluster, and Envoy's retry policy with the `previous_priorities` retry priority moves each
retry to the next model when an attempt fails to connect, is reset, answers 429/502/503/504, or
sends nothing for `envoy.fallback_idle_timeout`. A priority whose hosts are all ejected or down is
skipped from the start, like any Envoy priority failover.

The body must name the model of whichever backend the attempt goes to, and ext_proc has run by
then, so the rewrite happens per attempt in the cluster's upstream filters (verified on Envoy
1.40): `header_mutation` copies the chosen endpoint's metadata (its provider model id, JSON-encoded)
into a header, and a few lines of Lua put it in place of the `"model"` that Quorum writes first in
the body. An aggregate cluster would pick the sub-cluster per attempt too, but upstream filters
come from the aggregate cluster, so they cannot know which model was picked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from extproc.bootstrap.common import address, is_ip, seconds
from extproc.bootstrap.credentials import credential_headers_to_remove
from extproc.bootstrap.model_clusters import tls_socket
from extproc.config import Config, ModelConfig
from extproc.config.fallbacks import routed_chains
from extproc.config.server import UpstreamTls

PREFIX = "fallback_"  # the name of every chain's route and cluster starts with it
UPSTREAM_MODEL_HEADER = "x-quorum-upstream-model"
METADATA = "quorum"
TLS_MATCH = "envoy.transport_socket_match"  # endpoint metadata that picks its transport socket

# `model` is the first key of a body Quorum rewrote (ChatRequest.with_model): replace its value.
REWRITE_LUA = f"""
function envoy_on_request(handle)
  local id = handle:headers():get("{UPSTREAM_MODEL_HEADER}")
  handle:headers():remove("{UPSTREAM_MODEL_HEADER}")
  if id == nil or id == "" then return end
  local body = handle:body()
  if body == nil then return end
  local raw = body:getBytes(0, body:length())
  local _, stop = string.find(raw, '^{{"model":"[^"]*"')
  if stop ~= nil then body:setBytes('{{"model":' .. id .. string.sub(raw, stop + 1)) end
end
"""


def chain_clusters(config: Config) -> list[dict[str, Any]]:
    models = {m.name: m for m in config.providers.models}
    tls = config.envoy.tls
    return [_cluster(key, [models[n] for n in chain], tls) for key, (chain, _) in routed_chains(config).items()]


def chain_routes(config: Config, copy_back: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One route per chain; the response's route header names the model that answered."""
    env = config.envoy
    models = {m.name: m for m in config.providers.models}
    answered = {
        "header": {"key": config.server.route_header, "value": f'%UPSTREAM_METADATA(["{METADATA}", "name"])%'},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    kept = [h for h in copy_back if h["header"]["key"] != config.server.route_header]
    routes = []
    for key, (chain, _) in routed_chains(config).items():
        first = models[chain[0]]
        retry: dict[str, Any] = {
            "retry_on": "connect-failure,refused-stream,reset,gateway-error,retriable-status-codes",
            "retriable_status_codes": [429],
            "num_retries": len(chain) - 1 + env.retries,
            "per_try_idle_timeout": seconds(env.fallback_idle_timeout),
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
                    "PreviousPrioritiesConfig",
                    "update_frequency": 1,
                },
            },
        }
        route: dict[str, Any] = {
            "cluster": _name(key),
            "timeout": seconds(env.upstream_timeout),
            "retry_policy": retry,
            # As on a model's route: bounded by `timeout`, not by the listener's fusion_timeout cap.
            "max_stream_duration": {"max_stream_duration": "0s"},
        }
        base_path = urlsplit(first.base_url).path.rstrip("/")
        if base_path != "/v1":
            route["regex_rewrite"] = {"pattern": {"regex": "^/v1/"}, "substitution": f"{base_path}/"}
        if not all(is_ip(urlsplit(m.base_url).hostname or "") for m in (models[n] for n in chain)):
            route["auto_host_rewrite"] = True  # each attempt's Host is its endpoint's hostname
        entry: dict[str, Any] = {
            "name": f"{PREFIX}{key}",
            "match": {
                "prefix": "/v1/",
                "headers": [{"name": config.server.route_header, "string_match": {"exact": key}}],
            },
            "route": route,
            "response_headers_to_add": [*kept, answered],
        }
        removed = credential_headers_to_remove(models[n] for n in chain)
        if removed:
            entry["request_headers_to_remove"] = removed
        routes.append(entry)
    return routes


def _name(key: str) -> str:
    return PREFIX + key.replace(">", "__")


def _cluster(key: str, chain: list[ModelConfig], tls_config: UpstreamTls) -> dict[str, Any]:
    hosts = [urlsplit(m.base_url) for m in chain]
    tls = hosts[0].scheme == "https"
    localities = []
    for priority, (model, parts) in enumerate(zip(chain, hosts, strict=True)):
        host = parts.hostname or ""
        endpoint: dict[str, Any] = {"address": address(host, parts.port or (443 if tls else 80))}
        if not is_ip(host):
            endpoint["hostname"] = host
        provider_id = orjson.dumps(model.upstream_model).decode()
        metadata: dict[str, Any] = {METADATA: {"name": model.name, "model": provider_id}}
        if tls:
            metadata[TLS_MATCH] = {"host": host}
        entry = {"endpoint": endpoint, "metadata": {"filter_metadata": metadata}}
        localities.append({"priority": priority, "lb_endpoints": [entry]})
    copy_model = {
        "append": {
            "header": {"key": UPSTREAM_MODEL_HEADER, "value": f'%UPSTREAM_METADATA(["{METADATA}", "model"])%'},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    }
    cluster: dict[str, Any] = {
        "name": _name(key),
        "type": "STATIC" if all(is_ip(p.hostname or "") for p in hosts) else "STRICT_DNS",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": _name(key), "endpoints": localities},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": [
                    _http_filter("header_mutation", "HeaderMutation", mutations={"request_mutations": [copy_model]}),
                    _http_filter("lua", "Lua", default_source_code={"inline_string": REWRITE_LUA}),
                    _http_filter("upstream_codec", "UpstreamCodec"),
                ],
            }
        },
    }
    if tls:  # each endpoint verified like a model's own cluster, with its own SNI: a provider API key travels on it
        names = list(dict.fromkeys(p.hostname or "" for p in hosts))
        cluster["transport_socket"] = tls_socket(names[0], tls_config)  # never plaintext, whatever matches
        cluster["transport_socket_matches"] = [
            {"name": name, "match": {"host": name}, "transport_socket": tls_socket(name, tls_config)} for name in names
        ]
    return cluster


def _http_filter(name: str, message: str, **config: Any) -> dict[str, Any]:
    type_url = f"type.googleapis.com/envoy.extensions.filters.http.{name}.v3.{message}"
    return {"name": f"envoy.filters.http.{name}", "typed_config": {"@type": type_url, **config}}
