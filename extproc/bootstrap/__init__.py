"""Render a complete Envoy bootstrap for a Quorum config (`quorum envoy-config`).

What it wires, and why:
- one cluster per model `cluster`, addressed from the model's `base_url`; Envoy does the load
  balancing, retries and outlier detection (`model_clusters`);
- one cluster and route per fallback chain, where Envoy fails over between models (`fallbacks`);
- one route per model matching the routing header Quorum sets, plus a catch-all that answers 404 in
  OpenAI shape, so a request Quorum did not route can never reach a model by accident (`routes`);
- the ext_proc filter fail-closed, request body BUFFERED (or FULL_DUPLEX_STREAMED for streamed
  fusion answers), a per-message timeout, and a request buffer limit that fits
  `server.max_body_bytes` plus the growth of a rewritten `model` (`listener`, `limits`);
- the client's response carries the routing headers, copied from the request by Envoy itself, so
  routed responses cost no extra ext_proc round trip;
- Envoy's own local replies (timeouts, Quorum unreachable, 4xx) rewritten as OpenAI error objects
  (`local_replies`); limits against slow, large or hostile clients and an overload manager
  (`limits`); a JSON access log (`access_log`);
- the `quorum_extproc` cluster of Quorum worker processes (`extproc_cluster`);
- runtime flags: ext_proc streams closed gracefully, not reset, and the fast path's admin layer
  (`runtime`).
"""

from __future__ import annotations

from typing import Any

import yaml

from extproc.bootstrap.common import address
from extproc.bootstrap.extproc_cluster import extproc_cluster
from extproc.bootstrap.fallbacks import chain_clusters
from extproc.bootstrap.limits import BODY_SLACK_BYTES, overload_manager
from extproc.bootstrap.listener import listener
from extproc.bootstrap.model_clusters import model_clusters
from extproc.bootstrap.routes import DEBUG_HEADERS
from extproc.bootstrap.runtime import layered_runtime
from extproc.config import EXTPROC_CLUSTER, Config, split_host_port
from extproc.policy import fastpath

__all__ = ["BODY_SLACK_BYTES", "DEBUG_HEADERS", "EXTPROC_CLUSTER", "render", "render_yaml"]


def render(config: Config, workers: int | None = None) -> dict[str, Any]:
    env = config.envoy
    listen_host, listen_port = split_host_port(env.listen)
    admin_host, admin_port = split_host_port(env.admin)
    return {
        "admin": {"address": address(admin_host, admin_port)},
        "static_resources": {
            "listeners": [listener(config, listen_host, listen_port)],
            "clusters": [
                *model_clusters(config),
                *chain_clusters(config),
                extproc_cluster(config, workers or config.server.workers),
            ],
        },
        "overload_manager": overload_manager(config),
        **layered_runtime(fastpath.plan(config)),
    }


def render_yaml(config: Config, workers: int | None = None) -> str:
    header = "# Rendered by `quorum envoy-config`; edit the Quorum config and render again.\n"
    return header + yaml.safe_dump(render(config, workers), sort_keys=False, width=120)
