"""The `quorum_extproc` cluster: Envoy's gRPC connections to the Quorum worker processes."""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.common import address, seconds
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
                "explicit_http_config": {"http2_protocol_options": {"connection_keepalive": stall_keepalive(config)}},
            }
        },
    }


def stall_keepalive(config: Config) -> dict[str, str]:
    """HTTP/2 pings that find a Quorum process that stopped answering within `envoy.stall_timeout`.

    A frozen process (SIGSTOP, a stuck host, a partition) keeps its TCP connection open, and in
    full-duplex mode Envoy's per-message timeout does not apply; a missed ping closes the
    connection, every stream on it fails, and the client gets a 504 (`local_replies`). A live
    Quorum answers the pings, so a fusion run longer than the stall timeout is not cut.
    """
    half = seconds(config.envoy.stall_timeout / 2)
    return {"interval": half, "timeout": half}
