"""Istio: an EnvoyFilter that puts Quorum's ext_proc filter before the router of an ingress gateway,
and a DestinationRule with the same outlier detection as the rendered quorum_extproc cluster.

Istio builds the cluster for the `quorum` Service itself (`outbound|PORT||HOST`, HTTP/2 because the
port's appProtocol is grpc) and keeps its endpoints to the ready pods, so readiness (gRPC health)
does what Envoy's active health checks do in the standalone bootstrap.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.extproc_cluster import outlier_detection
from extproc.bootstrap.listener import extproc_filter
from extproc.bootstrap.routes import route_config
from extproc.config import Config, ModelConfig, split_host_port
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


def in_cluster(model: ModelConfig) -> bool:
    """A backend reached as a Kubernetes Service name (Istio knows it without a ServiceEntry)."""
    host = urlsplit(model.base_url).hostname or ""
    return host.endswith((".svc", ".svc.cluster.local")) or "." not in host


def virtual_service(config: Config, settings: Settings) -> dict[str, Any]:
    """The rendered route table (one route per model on the routing header, then the 404 catch-all)
    in Istio's terms, for the models served inside the cluster."""
    models = {m.cluster_name: m for m in config.providers.models}
    (vhost,) = route_config(config)["virtual_hosts"]
    http: list[dict[str, Any]] = []
    for route in vhost["routes"]:
        if "direct_response" in route:
            response = route["direct_response"]
            body = {"string": response["body"]["inline_string"]}
            http.append(
                {
                    "name": route["name"],
                    "directResponse": {"status": response["status"], "body": body},
                    "headers": {"response": {"set": {"content-type": "application/json"}}},
                }
            )
            continue
        model = models[route["route"]["cluster"]]
        if not in_cluster(model):
            continue
        http.append(_model_route(route, model))
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": settings.metadata(f"{settings.name}-models", settings.istio_namespace),
        "spec": {"hosts": ["*"], "gateways": [settings.istio_gateway], "http": http},
    }


def _model_route(route: dict[str, Any], model: ModelConfig) -> dict[str, Any]:
    (header,) = route["match"]["headers"]
    parts = urlsplit(model.base_url)
    envoy_route = route["route"]
    out: dict[str, Any] = {
        "name": route["name"].replace("_", "-"),
        "match": [
            {
                "uri": {"prefix": route["match"]["prefix"]},
                "headers": {header["name"]: {"exact": header["string_match"]["exact"]}},
            }
        ],
        "route": [{"destination": {"host": parts.hostname, "port": {"number": parts.port or 80}}}],
        "timeout": envoy_route["timeout"],
        "retries": {
            "attempts": envoy_route["retry_policy"]["num_retries"],
            "retryOn": envoy_route["retry_policy"]["retry_on"],
        },
    }
    rewrite = envoy_route.get("regex_rewrite")
    if rewrite:
        out["rewrite"] = {"uriRegexRewrite": {"match": rewrite["pattern"]["regex"], "rewrite": rewrite["substitution"]}}
    return out
