"""The `quorum_extproc` cluster: Envoy's gRPC connections to the Quorum processes.

Its endpoints are `envoy.extproc_endpoints` when set (replicas on other hosts, or one DNS name such
as a Kubernetes headless Service that resolves to every pod), else the worker ports of
`server.listen` (`server.workers` consecutive ports). Envoy learns about a replica that is going
away or gone in two ways, so new ext_proc streams stop going there:

- active gRPC health checks on the ext_proc service name, every second: a replica that reports
  NOT_SERVING (Quorum does on SIGTERM, then keeps serving for `server.drain_delay`, which must be
  longer than the interval) is taken out at the next check; one that does not answer, after two;
- outlier detection: connections refused or reset (a killed replica) eject it at once, and
  repeated gateway errors (gRPC UNAVAILABLE, ...) after a few. "At once" needs
  `update_merge_window: 0s`: by default Envoy holds host health changes back for a second.

A circuit breaker caps the ext_proc streams open at once (`max_extproc_streams`): when Quorum's
event loop falls behind, requests would otherwise wait inside gRPC before any admission budget of
Quorum's sees them (measured: half a second at twice capacity, and Envoy's default cap of 1024
streams was the only bound). Past the cap Envoy refuses at once, without a round trip to Quorum,
and `local_replies` makes that an OpenAI 503 with `retry-after`.

Until then, the ext_proc filter's stream retry (`stream_retry_policy`) opens a stream that could
not reach a replica on another one.

A replica comes back after its ejection time once its health check passes again. When fewer than
half the replicas are healthy Envoy's panic mode sends to all of them, so a lone Quorum is never
cut off by its own health check.
"""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.common import address, is_ip, seconds
from extproc.config import EXTPROC_CLUSTER, Config, split_host_port
from extproc.pb import SERVICE_NAME
from extproc.server import worker_addresses

HEALTH_INTERVAL = 1.0  # seconds between checks; shorter than server.drain_delay
HEALTH_TIMEOUT = 2.0  # generous: a busy 2-core machine must not fail checks of a working Quorum


def extproc_endpoints(config: Config, workers: int) -> list[tuple[str, int]]:
    listed = config.envoy.extproc_endpoints or worker_addresses(config, workers)
    return [split_host_port(endpoint) for endpoint in listed]


def extproc_cluster(config: Config, workers: int) -> dict[str, Any]:
    hosts = extproc_endpoints(config, workers)
    lb_endpoints = [{"endpoint": {"address": address(host, port)}} for host, port in hosts]
    cluster: dict[str, Any] = {
        "name": EXTPROC_CLUSTER,
        # STRICT_DNS resolves a name to every address behind it (one endpoint per pod of a headless Service).
        "type": "STATIC" if all(is_ip(host) for host, _ in hosts) else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",  # spreads streams over the processes, one port each
        # Envoy batches health changes of a cluster's hosts for `update_merge_window` (1 s by default)
        # before its load balancers see them, so a killed worker, ejected at once, could keep getting
        # new streams (each retried on another worker) for up to that second. Apply them at once.
        "common_lb_config": {"update_merge_window": "0s"},
        "load_assignment": {"cluster_name": EXTPROC_CLUSTER, "endpoints": [{"lb_endpoints": lb_endpoints}]},
        # Envoy allows 3 concurrent retries per cluster by default: too few when a replica dies
        # under load and every new stream that picked it is retried on another one.
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_requests": max_extproc_streams(config, len(hosts)),
                    "retry_budget": {"budget_percent": {"value": 100.0}, "min_retry_concurrency": 16},
                }
            ]
        },
        "health_checks": [health_check()],
        "outlier_detection": outlier_detection(),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {"connection_keepalive": stall_keepalive(config)}},
            }
        },
    }
    return cluster


def max_extproc_streams(config: Config, endpoints: int) -> int:
    """The most ext_proc streams Envoy opens to Quorum at once: `envoy.limits.max_extproc_streams`,
    or each endpoint's admission budgets (`max_in_flight` + `max_fusion_runs`) summed.

    In full-duplex mode without usage accounting a routed request's stream ends once its route is
    answered, so open streams are exactly the work Quorum's budgets count plus what queues in
    front of them. In buffered mode, or with usage accounting, every request keeps its stream
    until its answer ends, so streams count whole requests (model time included): then, as when
    a budget is unlimited or an endpoint is a DNS name of unknown size, the cap is only the
    downstream connection limit.
    """
    limits = config.envoy.limits
    if limits.max_extproc_streams is not None:
        return limits.max_extproc_streams
    admission = config.server.admission
    short_streams = config.envoy.request_body_mode == "full_duplex_streamed" and not config.observability.usage.enabled
    named = bool(config.envoy.extproc_endpoints) and not all(is_ip(h) for h, _ in extproc_endpoints(config, 1))
    if not short_streams or named or not (admission.max_in_flight and admission.max_fusion_runs):
        return limits.max_downstream_connections
    return endpoints * (admission.max_in_flight + admission.max_fusion_runs)


def stall_keepalive(config: Config) -> dict[str, str]:
    """HTTP/2 pings that find a Quorum process that stopped answering within `envoy.stall_timeout`.

    A frozen process (SIGSTOP, a stuck host, a partition) keeps its TCP connection open, and in
    full-duplex mode Envoy's per-message timeout does not apply; a missed ping closes the
    connection, every stream on it fails, and the client gets a 504 (`local_replies`). A live
    Quorum answers the pings, so a fusion run longer than the stall timeout is not cut.
    """
    half = seconds(config.envoy.stall_timeout / 2)
    return {"interval": half, "timeout": half}


def stream_retry_policy() -> dict[str, Any]:
    """The ext_proc filter's retry of a stream that never reached a replica (refused connection,
    refused stream) on another replica: a dead replica costs only the streams it was serving."""
    return {
        "retry_on": "connect-failure,refused-stream,reset-before-request",
        "num_retries": 2,
        "retry_back_off": {"base_interval": "0.010s", "max_interval": "0.100s"},
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def health_check() -> dict[str, Any]:
    """gRPC health of the ext_proc service: NOT_SERVING takes a replica out at the next check."""
    return {
        "timeout": seconds(HEALTH_TIMEOUT),
        "interval": seconds(HEALTH_INTERVAL),
        "no_traffic_interval": seconds(HEALTH_INTERVAL),  # Envoy's default is 60 s for an idle cluster
        "unhealthy_threshold": 2,  # network failures; NOT_SERVING counts at once
        "healthy_threshold": 1,
        "grpc_health_check": {"service_name": SERVICE_NAME},
    }


def outlier_detection() -> dict[str, Any]:
    """Eject a replica that refuses or resets connections (killed), or keeps failing streams."""
    return {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 1,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,  # Envoy enforces none by default
        "consecutive_5xx": 5,
        "enforcing_success_rate": 0,  # success rate needs volume per replica; consecutive errors do not
        "interval": "2s",
        "base_ejection_time": "5s",
        "max_ejection_time": "60s",
        "max_ejection_percent": 100,  # with all out, panic mode still sends to every replica
    }
