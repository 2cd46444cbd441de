"""Envoy Gateway: an EnvoyExtensionPolicy that attaches Quorum to a Gateway, and the ReferenceGrant
that lets it point at the `quorum` Service in Quorum's namespace; the rendered model routes as an
HTTPRoute; when the config has fallback chains, an EnvoyPatchPolicy that adds their clusters and
routes (Envoy Gateway's own Backend fallback moves to another backend but cannot rewrite the body's
`model` per attempt); and, when the config turns the fast path on, an EnvoyPatchPolicy with the
fast-path filters and routes of the standalone bootstrap.

Envoy Gateway writes the ext_proc filter itself from a smaller API, so this carries the settings
that API has, read from the same config and the same filter `quorum envoy-config` renders. The
Gateway API cannot match dynamic metadata, so the fast path goes in as a JSON patch of the xDS
resources Envoy Gateway generates (EnvoyPatchPolicy, off unless the operator enables it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.listener import extproc_filter
from extproc.bootstrap.policy import EXT_PROC, FAST_ROUTE_PREFIX
from extproc.bootstrap.routes import route_config, unrouted_route
from extproc.config import Config, ModelConfig, split_host_port
from extproc.manifests import fallbacks, fast_path
from extproc.manifests.istio import in_cluster
from extproc.manifests.settings import Settings

# Envoy's body send mode -> Envoy Gateway's ExtProcBodyProcessingMode.
_GATEWAY_API = "gateway.networking.k8s.io"
_BODY_MODES = {"BUFFERED": "Buffered", "STREAMED": "Streamed", "FULL_DUPLEX_STREAMED": "FullDuplexStreamed"}
_XDS = "type.googleapis.com/envoy.config"
_LISTENER, _ROUTES, _CLUSTER = (
    f"{_XDS}.{t}" for t in ("listener.v3.Listener", "route.v3.RouteConfiguration", "cluster.v3.Cluster")
)
# Where a plain HTTP Gateway listener keeps its HTTP connection manager in Envoy Gateway's xDS.
HCM_PATH = "/default_filter_chain/filters/0/typed_config"


def duration(seconds: float) -> str:
    """A Gateway API duration (`5s`, `250ms`): whole seconds or milliseconds, no fractions."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def objects(config: Config, settings: Settings) -> list[dict[str, Any]]:
    return [policy(config, settings), reference_grant(settings)]


def routes(config: Config, settings: Settings) -> list[dict[str, Any]]:
    """The rendered model routes as an HTTPRoute on the Gateway (in-cluster models only), plus a
    ReferenceGrant in each models' namespace so the route may send there."""
    rules, namespaces = [], set()
    for model, route in routed_models(config):
        parts = urlsplit(model.base_url)
        name, _, rest = (parts.hostname or "").partition(".")
        namespace = rest.split(".")[0] if rest else settings.gateway_namespace
        namespaces.add(namespace)
        (header,) = route["match"]["headers"]
        model_name = header["string_match"]["exact"]
        rule: dict[str, Any] = {
            "matches": [
                {
                    "path": {"type": "PathPrefix", "value": route["match"]["prefix"]},
                    "headers": [{"type": "Exact", "name": header["name"], "value": model_name}],
                }
            ],
            "backendRefs": [{"name": name, "namespace": namespace, "port": parts.port or 80}],
            "timeouts": {"request": duration(config.envoy.upstream_timeout)},
        }
        rewrite = route["route"].get("regex_rewrite")
        if rewrite:
            path = {"type": "ReplacePrefixMatch", "replacePrefixMatch": rewrite["substitution"]}
            rule["filters"] = [{"type": "URLRewrite", "urlRewrite": {"path": path}}]
        rules.append(rule)
    # Last (the least specific match): every other request. Envoy Gateway runs a policy's ext_proc
    # only on the routes the policy covers, so without a route here a request that does not carry
    # Quorum's header yet (all of them) would get Envoy Gateway's 404 and never reach Quorum.
    unrouted = {"group": "gateway.envoyproxy.io", "kind": "HTTPRouteFilter", "name": f"{settings.name}-unrouted"}
    everything = [{"path": {"type": "PathPrefix", "value": "/"}}]
    rules.append({"matches": everything, "filters": [{"type": "ExtensionRef", "extensionRef": unrouted}]})
    http_route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": settings.metadata(f"{settings.name}-models", settings.gateway_namespace),
        "spec": {"parentRefs": [{"name": settings.gateway_name}], "rules": rules},
    }
    grants = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": settings.metadata(f"{settings.name}-routes-from-{settings.gateway_namespace}", namespace),
            "spec": {
                "from": [{"group": _GATEWAY_API, "kind": "HTTPRoute", "namespace": settings.gateway_namespace}],
                "to": [{"group": "", "kind": "Service"}],
            },
        }
        for namespace in sorted(namespaces - {settings.gateway_namespace})
    ]
    return [http_route, unrouted_filter(settings), *grants]


def unrouted_filter(settings: Settings) -> dict[str, Any]:
    """The standalone bootstrap's OpenAI-shaped 404, as Envoy Gateway's direct response."""
    response = unrouted_route()["direct_response"]
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "HTTPRouteFilter",
        "metadata": settings.metadata(f"{settings.name}-unrouted", settings.gateway_namespace),
        "spec": {
            "directResponse": {
                "contentType": "application/json",
                "statusCode": response["status"],
                "body": {"type": "Inline", "inline": response["body"]["inline_string"]},
            }
        },
    }


def routed_models(config: Config) -> list[tuple[ModelConfig, dict[str, Any]]]:
    """The in-cluster models with their header route, in the order of the HTTPRoute's rules."""
    models = {m.cluster_name: m for m in config.providers.models}
    (vhost,) = route_config(config)["virtual_hosts"]
    out = []
    for route in vhost["routes"]:
        model = models.get(route.get("route", {}).get("cluster", ""))
        if model is not None and in_cluster(model) and not route["name"].startswith(FAST_ROUTE_PREFIX):
            out.append((model, route))
    return out


def ext_proc_filter_name(settings: Settings) -> str:
    """The name Envoy Gateway gives the ext_proc filter of `policy` (kind/namespace/name/extproc/index).

    Envoy Gateway puts it in the chain disabled and enables it per route; a request's filter chain
    is built for the route matched on its headers (the catch-all, before json_to_metadata has read
    the body), so the fast-path route must disable this filter by this name."""
    return f"{EXT_PROC}/envoyextensionpolicy/{settings.gateway_namespace}/{settings.name}/extproc/0"


def rule_cluster(settings: Settings, index: int) -> str:
    """The cluster Envoy Gateway builds for rule `index` of the generated HTTPRoute."""
    return f"httproute/{settings.gateway_namespace}/{settings.name}-models/rule/{index}"


def fast_path_policy(config: Config, settings: Settings) -> dict[str, Any] | None:
    """The fast path on the Gateway's listener as JSON patches, or None when no model takes it.

    Each `add` at index 0 goes above what is there, hence the reversed order: the filters end up
    first in the listener's chain (json_to_metadata, then transform, before Envoy Gateway's own
    filters and its ext_proc), the routes first in the virtual host, in the bootstrap's order."""
    rule_of = {model.name: i for i, (model, _) in enumerate(routed_models(config))}
    routes = fast_path.routes(
        config, lambda model: rule_cluster(settings, rule_of[model.name]) if model.name in rule_of else None
    )
    if not routes:
        return None
    for route in routes:  # Envoy Gateway's ext_proc filter has a name of its own; per-route config is keyed by it
        per_filter = route["typed_per_filter_config"]
        per_filter[ext_proc_filter_name(settings)] = per_filter.pop(EXT_PROC)
    name = _listener_name(settings)
    patches = [
        {"type": _LISTENER, "name": name, "operation": {"op": "add", "path": f"{HCM_PATH}/http_filters/0", "value": f}}
        for f in reversed(fast_path.filters(config))
    ]
    patches += _first_routes(settings, routes)
    return _patch_policy(settings, f"{settings.name}-fast-path", patches)


def fallback_policy(config: Config, settings: Settings) -> dict[str, Any] | None:
    """The fallback chains on the Gateway, or None when the config has none: each chain's cluster
    added as a new xDS resource (`add` at the empty path), each chain's route first in the
    Gateway listener's virtual host, in the bootstrap's order. Those routes match only the chain's
    exact `x-quorum-model`, which Quorum sets after the catch-all rule has enabled ext_proc."""
    clusters = fallbacks.clusters(config)
    if not clusters:
        return None
    patches = [
        {"type": _CLUSTER, "name": c["name"], "operation": {"op": "add", "path": "", "value": c}} for c in clusters
    ]
    patches += _first_routes(settings, fallbacks.routes(config))
    return _patch_policy(settings, f"{settings.name}-fallbacks", patches)


def _listener_name(settings: Settings) -> str:
    """Envoy Gateway's name for the Gateway listener's Listener and RouteConfiguration."""
    return f"{settings.gateway_namespace}/{settings.gateway_name}/{settings.gateway_listener}"


def _first_routes(settings: Settings, routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patches that put `routes` first in the virtual host, in this order (each `add` at 0 goes above)."""
    path = "/virtual_hosts/0/routes/0"
    name = _listener_name(settings)
    return [
        {"type": _ROUTES, "name": name, "operation": {"op": "add", "path": path, "value": r}} for r in reversed(routes)
    ]


def _patch_policy(settings: Settings, name: str, patches: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyPatchPolicy",
        "metadata": settings.metadata(name, settings.gateway_namespace),
        "spec": {
            "targetRef": {"group": _GATEWAY_API, "kind": "Gateway", "name": settings.gateway_name},
            "type": "JSONPatch",
            "jsonPatches": patches,
        },
    }


def policy(config: Config, settings: Settings) -> dict[str, Any]:
    typed = extproc_filter(config)["typed_config"]
    mode = typed["processing_mode"]
    processing: dict[str, Any] = {"request": {"body": _BODY_MODES[mode["request_body_mode"]]}}
    if mode["response_header_mode"] == "SEND":
        response_body = mode["response_body_mode"]
        processing["response"] = {"body": _BODY_MODES[response_body]} if response_body != "NONE" else {}
    processing["allowModeOverride"] = typed["allow_mode_override"]
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": settings.metadata(settings.name, settings.gateway_namespace),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": settings.gateway_name}],
            "extProc": [
                {
                    "backendRefs": [
                        {
                            "name": settings.name,
                            "namespace": settings.namespace,
                            "port": split_host_port(config.server.listen)[1],
                        }
                    ],
                    "messageTimeout": duration(config.envoy.message_timeout),
                    "failOpen": typed["failure_mode_allow"],
                    "processingMode": processing,
                }
            ],
        },
    }


def reference_grant(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": settings.metadata(f"{settings.name}-from-{settings.gateway_namespace}"),
        "spec": {
            "from": [
                {
                    "group": "gateway.envoyproxy.io",
                    "kind": "EnvoyExtensionPolicy",
                    "namespace": settings.gateway_namespace,
                }
            ],
            "to": [{"group": "", "kind": "Service", "name": settings.name}],
        },
    }
