"""Fallback chains on a mesh gateway: the standalone bootstrap's chain clusters and chain routes
(`extproc.bootstrap.fallbacks`), unchanged. Istio and Envoy Gateway only differ in how they add
them to the config they generate.

A chain cannot be a gateway's own route to a Service: it is one cluster whose endpoints are the
models' backends at priorities, with upstream filters that rewrite `model` per attempt, so it goes
in whole. Its endpoints are resolved by DNS from the gateway (STRICT_DNS on the models' host
names), outside the gateway's service discovery; see docs/envoy.md for what that means per mesh.
"""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.fallbacks import PREFIX, chain_clusters
from extproc.bootstrap.routes import route_config
from extproc.config import Config


def clusters(config: Config) -> list[dict[str, Any]]:
    return chain_clusters(config)


def routes(config: Config) -> list[dict[str, Any]]:
    """The chain routes as the bootstrap's route table has them (after the model routes)."""
    (vhost,) = route_config(config)["virtual_hosts"]
    return [route for route in vhost["routes"] if is_chain_route(route)]


def is_chain_route(route: dict[str, Any]) -> bool:
    return str(route.get("name", "")).startswith(PREFIX)
