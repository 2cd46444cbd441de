"""Istio: an EnvoyFilter that puts Quorum's ext_proc filter before the router of an ingress gateway,
a DestinationRule with the same outlier detection as the rendered quorum_extproc cluster, the
rendered model routes as a VirtualService, an EnvoyFilter with the fallback chains' clusters and
routes when the config has chains (a VirtualService cannot express them) and, when the config
turns the fast path on, one with the fast-path filters and routes of the standalone bootstrap.

Istio builds the cluster for the `quorum` Service itself (`outbound|PORT||HOST`, HTTP/2 because the
port's appProtocol is grpc) and keeps its endpoints to the ready pods, so readiness (gRPC health)
does what Envoy's active health checks do in the standalone bootstrap.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.extproc_cluster import outlier_detection
from extproc.bootstrap.listener import extproc_filter
from extproc.bootstrap.policy import EXT_PROC, FAST_ROUTE_PREFIX
from extproc.bootstrap.routes import route_config
from extproc.config import Config, ModelConfig, split_host_port
from extproc.manifests import fallbacks, fast_path
from extproc.manifests.settings import Settings

_HCM = "envoy.filters.network.http_connection_manager"
# Applied after the ext_proc EnvoyFilter (priority 0), whose filter the fast-path filters go before.
FAST_PATH_PRIORITY = 10

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
    patch = {"applyTo": "HTTP_FILTER", "match": _before("envoy.filters.http.router"), "patch": _insert_before(value)}
    return _envoy_filter(settings, f"{settings.name}-ext-proc", [patch])


def fast_path_filter(config: Config, settings: Settings) -> dict[str, Any] | None:
    """The fast path on the gateway, or None when no model takes it.

    Istio applies the patches in order: json_to_metadata then transform, each inserted right before
    ext_proc (so they run before it, in that order), then each fast-path route at the top of every
    virtual host of the Gateway's route configurations. INSERT_FIRST puts each route above the
    previous ones, hence the reversed order, which leaves them in the bootstrap's order."""
    routes = fast_path.routes(config, lambda model: outbound_cluster(model, settings))
    if not routes:
        return None
    patches = [
        {"applyTo": "HTTP_FILTER", "match": _before(EXT_PROC), "patch": _insert_before(value)}
        for value in fast_path.filters(config)
    ]
    patches += [_first_route(settings, route) for route in reversed(routes)]
    return _envoy_filter(settings, f"{settings.name}-fast-path", patches, priority=FAST_PATH_PRIORITY)


def fallback_filter(config: Config, settings: Settings) -> dict[str, Any] | None:
    """The fallback chains on the gateway, or None when the config has none: each chain's cluster
    added (CLUSTER ADD) and each chain's route at the top of every virtual host of the Gateway's
    route configurations, like the fast-path routes. Their matches (the chain's exact
    `x-quorum-model`) meet no other route's, so their place above the VirtualService's is safe."""
    clusters = fallbacks.clusters(config)
    if not clusters:
        return None
    patches = [
        {"applyTo": "CLUSTER", "match": {"context": "GATEWAY"}, "patch": {"operation": "ADD", "value": cluster}}
        for cluster in clusters
    ]
    patches += [_first_route(settings, route) for route in reversed(fallbacks.routes(config))]
    return _envoy_filter(settings, f"{settings.name}-fallbacks", patches)


def _first_route(settings: Settings, route: dict[str, Any]) -> dict[str, Any]:
    gateway = f"{settings.istio_namespace}/{settings.istio_gateway}"
    return {
        "applyTo": "HTTP_ROUTE",
        "match": {"context": "GATEWAY", "routeConfiguration": {"gateway": gateway}},
        "patch": {"operation": "INSERT_FIRST", "value": route},
    }


def _envoy_filter(
    settings: Settings, name: str, patches: list[dict[str, Any]], priority: int | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"workloadSelector": {"labels": dict(settings.istio_gateway_labels)}}
    if priority is not None:
        spec["priority"] = priority
    spec["configPatches"] = patches
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": settings.metadata(name, settings.istio_namespace),
        "spec": spec,
    }


def _before(http_filter: str) -> dict[str, Any]:
    chain = {"filter": {"name": _HCM, "subFilter": {"name": http_filter}}}
    return {"context": "GATEWAY", "listener": {"filterChain": chain}}


def _insert_before(value: dict[str, Any]) -> dict[str, Any]:
    return {"operation": "INSERT_BEFORE", "value": value}


def destination(model: ModelConfig, settings: Settings) -> tuple[str, int]:
    """The model's Service as Istio names it (fully qualified) and its port."""
    parts = urlsplit(model.base_url)
    host = parts.hostname or ""
    if "." not in host:  # a short name resolves in the namespace of the routes (the gateway's)
        host = f"{host}.{settings.istio_namespace}.svc.cluster.local"
    elif host.endswith(".svc"):
        host += ".cluster.local"
    return host, parts.port or 80


def outbound_cluster(model: ModelConfig, settings: Settings) -> str | None:
    """The cluster Istio builds for an in-cluster model's Service; None for a model outside the cluster."""
    if not in_cluster(model):
        return None
    host, port = destination(model, settings)
    return f"outbound|{port}||{host}"


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
        if route["name"].startswith(FAST_ROUTE_PREFIX):
            continue  # matched on metadata, which a VirtualService cannot express: fast_path_filter patches them in
        if fallbacks.is_chain_route(route):
            continue  # to a cluster of its own, which a VirtualService cannot name: fallback_filter patches them in
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
