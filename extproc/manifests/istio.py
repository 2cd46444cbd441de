"""Istio: an EnvoyFilter that puts Quorum's ext_proc filter before the router of an ingress gateway,
and a DestinationRule with the same outlier detection as the rendered quorum_extproc cluster.

Istio builds the cluster for the `quorum` Service itself (`outbound|PORT||HOST`, HTTP/2 because the
port's appProtocol is grpc) and keeps its endpoints to the ready pods, so readiness (gRPC health)
does what Envoy's active health checks do in the standalone bootstrap.
"""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.extproc_cluster import outlier_detection
from extproc.bootstrap.listener import extproc_filter
from extproc.config import Config, split_host_port
from extproc.manifests.settings import Settings

# Envoy's outlier_detection field -> Istio's DestinationRule field.
_ISTIO_OUTLIER_FIELDS = {
    "split_external_local_origin_errors": "splitExternalLocalOriginErrors",
    "consecutive_local_origin_failure": "consecutiveLocalOriginFailures",
    "consecutive_gateway_failure": "consecutiveGatewayErrors",
    "consecutive_5xx": "consecutive5xxErrors",
    "interval": "interval",
    "base_ejection_time": "baseEjectionTime",
    "max_ejection_percent": "maxEjectionPercent",
}


def cluster_name(config: Config, settings: Settings) -> str:
    """The name Istio gives the outbound cluster of the `quorum` Service."""
    port = split_host_port(config.server.listen)[1]
    return f"outbound|{port}||{settings.service_host}"


def envoy_filter(config: Config, settings: Settings) -> dict[str, Any]:
    value = extproc_filter(config, cluster_name(config, settings))
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": settings.metadata(f"{settings.name}-ext-proc", settings.istio_namespace),
        "spec": {
            "workloadSelector": {"labels": dict(settings.istio_gateway_labels)},
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": "GATEWAY",
                        "listener": {
                            "filterChain": {
                                "filter": {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "subFilter": {"name": "envoy.filters.http.router"},
                                }
                            }
                        },
                    },
                    "patch": {"operation": "INSERT_BEFORE", "value": value},
                }
            ],
        },
    }


def destination_rule(config: Config, settings: Settings) -> dict[str, Any]:
    envoy_outlier = outlier_detection()
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": settings.metadata(),
        "spec": {
            "host": settings.service_host,
            "trafficPolicy": {
                "outlierDetection": {istio: envoy_outlier[envoy] for envoy, istio in _ISTIO_OUTLIER_FIELDS.items()},
            },
        },
    }
