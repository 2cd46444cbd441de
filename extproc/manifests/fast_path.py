"""The fast path on a mesh gateway: the same filters and metadata-matched routes as the standalone
bootstrap (`extproc.bootstrap.policy`), each route sent to the cluster the gateway itself builds for
the model. Istio and Envoy Gateway only differ in how they patch these into their generated config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from extproc.bootstrap.policy import fast_path_filters, fast_path_routes
from extproc.bootstrap.routes import model_routes
from extproc.config import Config, ModelConfig
from extproc.policy import fastpath


def filters(config: Config) -> list[dict[str, Any]]:
    """json_to_metadata and transform, in the order they must run (both before ext_proc)."""
    return fast_path_filters(fastpath.plan(config))


def routes(config: Config, cluster_for: Callable[[ModelConfig], str | None]) -> list[dict[str, Any]]:
    """The fast-path routes, in the bootstrap's order, with the gateway's cluster name for each model.

    A model the gateway has no cluster for (`cluster_for` gives None: a provider outside the mesh,
    which needs the operator's own ServiceEntry or Backend) gets no fast route, so its requests keep
    going through Quorum."""
    plan = fastpath.plan(config)
    out = []
    for model, header_route in zip(config.providers.models, model_routes(config), strict=True):
        cluster = cluster_for(model)
        if cluster is None:
            continue
        for route in fast_path_routes(config, plan, [(model, header_route)]):
            route["route"]["cluster"] = cluster
            out.append(route)
    return out
