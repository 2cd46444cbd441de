"""The Envoy side of operator policy: the edge that makes the identity header trustworthy, and the
fast path that routes explicit-model requests without Quorum.

Filter chain, in order (each piece only when configured):
  header_mutation       removes the client-sent identity header (and Quorum's routing headers)
  identity_filters      the operator's trusted filters (jwt_authn, ext_authz, ...) set the identity
  json_to_metadata      body `model` -> dynamic metadata quorum.model, and clears the route cache
  transform             per fast-path route only: `model` rewritten to the provider's id
  ext_proc              Quorum; disabled on fast-path routes
  router
Routes: one fast-path route per fast-path model (exact chat path + metadata match; a client
cannot set dynamic metadata), then the header routes Quorum steers, then the 404 catch-all.
A body that is not JSON, has no `model`, names another name or is over the buffer limit produces
no metadata, so the request takes Quorum's path.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from extproc.config import GUARDS_HEADER, Config, ModelConfig
from extproc.policy.fastpath import FastPathPlan, runtime_key

METADATA_NAMESPACE = "quorum"
FAST_PATH_DECISION = "fast_path"  # the x-quorum-decision a fast-path response carries
FAST_PATH_PATHS = ("/v1/chat/completions",)
FAST_ROUTE_PREFIX = "fast_"  # the name of every fast-path route starts with it
EXT_PROC = "envoy.filters.http.ext_proc"
TRANSFORM = "envoy.filters.http.transform"
_TYPES = "type.googleapis.com/envoy.extensions.filters.http"


def edge_filters(config: Config) -> list[dict[str, Any]]:
    """Strip what only the mesh or Quorum may set, then let the trusted filters set the identity."""
    if not config.access.rules and not config.envoy.identity_filters:
        return []
    strip = {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": f"{_TYPES}.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": config.access.identity_header}]},
        },
    }
    return [strip, *config.envoy.identity_filters]


def fast_path_filters(plan: FastPathPlan) -> list[dict[str, Any]]:
    if not plan.models:
        return []
    to_metadata = {
        "name": "envoy.filters.http.json_to_metadata",
        "typed_config": {
            "@type": f"{_TYPES}.json_to_metadata.v3.JsonToMetadata",
            "request_rules": {
                "rules": [
                    {
                        "selectors": [{"key": "model"}],
                        "on_present": {"metadata_namespace": METADATA_NAMESPACE, "key": "model", "type": "STRING"},
                    }
                ]
            },
        },
    }
    # No transformation here: only fast-path routes configure one (per route), so no other request is touched.
    transform = {"name": TRANSFORM, "typed_config": {"@type": f"{_TYPES}.transform.v3.TransformConfig"}}
    return [to_metadata, transform]


def fast_path_routes(
    config: Config, plan: FastPathPlan, header_routes: Iterable[tuple[ModelConfig, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One route per fast-path model, derived from the route Quorum steers to with its header (same
    cluster, timeouts, retries, rewrites and credential removal), matched on metadata instead."""
    server = config.server
    routes = []
    for model, header_route in header_routes:
        if model.name not in plan.models:
            continue
        per_filter: dict[str, Any] = {EXT_PROC: {"@type": f"{_TYPES}.ext_proc.v3.ExtProcPerRoute", "disabled": True}}
        if model.upstream_model != model.name:
            per_filter[TRANSFORM] = {
                "@type": f"{_TYPES}.transform.v3.TransformConfig",
                "request_transformation": {
                    "body_transformation": {"body_format": {"json_format": {"model": model.upstream_model}}}
                },
            }
        # Quorum's own headers are never forwarded from a client; the answer names the route.
        internal = [server.route_header, server.decision_header, GUARDS_HEADER]
        routes += [
            {
                **copy.deepcopy(header_route),
                "name": f"{FAST_ROUTE_PREFIX}{model.name}{'' if i == 0 else f'_{i}'}",
                "match": {
                    "path": path,
                    # Off at run time (admin /runtime_modify) when a reload puts policy on the model.
                    "runtime_fraction": {
                        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                        "runtime_key": runtime_key(model.name),
                    },
                    "dynamic_metadata": [
                        {
                            "filter": METADATA_NAMESPACE,
                            "path": [{"key": "model"}],
                            "value": {"string_match": {"exact": model.name}},
                        }
                    ],
                },
                "typed_per_filter_config": per_filter,
                "request_headers_to_remove": [*header_route.get("request_headers_to_remove", []), *internal],
                "response_headers_to_add": [
                    {"header": {"key": server.route_header, "value": model.name}},
                    {"header": {"key": server.decision_header, "value": FAST_PATH_DECISION}},
                ],
            }
            for i, path in enumerate(FAST_PATH_PATHS)
        ]
    return routes
