"""The `quorum_extproc` cluster: Envoy's gRPC connections to the Quorum worker processes."""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.common import address
from extproc.config import EXTPROC_CLUSTER, Config, split_host_port
from extproc.server import worker_addresses


def extproc_cluster(config: Config, workers: int) -> dict[str, Any]:
    endpoints = []
    for worker in worker_addresses(config, workers):
        host, port = split_host_port(worker)
        endpoints.append({"endpoint": {"address": address(host, port)}})
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
