"""What Istio and Envoy Gateway do with the generated manifests, emulated on a real Envoy config.

A gateway's generated config is stood in for by the standalone bootstrap of a config without the
fast path, with its clusters renamed as the gateway names them and Quorum's ext_proc filter taken
out (Istio: the ext_proc EnvoyFilter puts it back; Envoy Gateway: put back its way, disabled in the
chain and enabled per route). The manifests' patches are then applied with the semantics of the
operations they use, and only those:
- Istio EnvoyFilter: HTTP_FILTER INSERT_BEFORE a sub-filter, HTTP_ROUTE INSERT_FIRST without a
  route match (prepend to every virtual host), CLUSTER ADD, EnvoyFilters applied by ascending
  priority;
- Envoy Gateway EnvoyPatchPolicy: RFC 6902 `add` on the Listener and the RouteConfiguration named
  `<namespace>/<gateway>/<listener>`, whose HTTP connection manager sits in default_filter_chain,
  and `add` at the empty path, which adds a whole new resource (a Cluster).
The result runs in a real Envoy, so the patched typed configs are checked by Envoy itself. A cluster
added by a patch resolves the models' Service names by DNS; here the cluster's DNS is stood in for
(`kube_dns`): every `*.svc.cluster.local` name is loopback, where the test's backends listen.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from extproc.bootstrap import EXTPROC_CLUSTER
from extproc.config import Config
from extproc.manifests import Settings
from extproc.manifests.envoy_gateway import routed_models, rule_cluster
from extproc.manifests.istio import cluster_name, outbound_cluster

EXT_PROC = "envoy.filters.http.ext_proc"
# Envoy Gateway names each ext_proc filter after the policy that attached it.
GATEWAY_EXT_PROC = f"{EXT_PROC}/envoyextensionpolicy/envoy-gateway-system/quorum/extproc/0"


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def hcm_of(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    chain = listener.get("default_filter_chain") or listener["filter_chains"][0]
    return chain["filters"][0]["typed_config"]


def _rename_clusters(bootstrap: dict[str, Any], names: dict[str, str]) -> None:
    for cluster in bootstrap["static_resources"]["clusters"]:
        if cluster["name"] in names:
            cluster["name"] = cluster["load_assignment"]["cluster_name"] = names[cluster["name"]]
    for vhost in hcm_of(bootstrap)["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            target = route.get("route", {})
            if target.get("cluster") in names:
                target["cluster"] = names[target["cluster"]]


def kube_dns(cluster: dict[str, Any]) -> dict[str, Any]:
    """`cluster` with its Service host names resolved as the stand-in cluster DNS does (loopback)."""
    cluster = copy.deepcopy(cluster)
    for locality in cluster["load_assignment"]["endpoints"]:
        for entry in locality["lb_endpoints"]:
            socket = entry["endpoint"]["address"]["socket_address"]
            if socket["address"].endswith(".svc.cluster.local"):
                socket["address"] = "127.0.0.1"
    if cluster.get("type") == "STRICT_DNS":
        cluster["type"] = "STATIC"
    return cluster


def _without_ext_proc(base: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    gateway = copy.deepcopy(base)
    filters = hcm_of(gateway)["http_filters"]
    (ext_proc,) = [f for f in filters if f["name"] == EXT_PROC]
    filters.remove(ext_proc)
    return gateway, ext_proc


def istio_gateway(base: dict[str, Any], mesh: Config, manifests: dict[str, str], settings: Settings) -> dict[str, Any]:
    """`base` as Istio's ingress gateway would run it with deploy/istio/ applied."""
    gateway, _ = _without_ext_proc(base)
    names = {m.cluster_name: outbound_cluster(m, settings) for m in mesh.providers.models}
    names = {old: new for old, new in names.items() if new} | {EXTPROC_CLUSTER: cluster_name(mesh, settings)}
    _rename_clusters(gateway, names)
    filters = documents(manifests["istio/envoyfilter.yaml"])
    filters += documents(manifests.get("istio/envoyfilter-fallbacks.yaml", ""))
    filters += documents(manifests.get("istio/envoyfilter-fast-path.yaml", ""))
    hcm = hcm_of(gateway)
    for envoy_filter in sorted(filters, key=lambda f: f["spec"].get("priority", 0)):
        for patch in envoy_filter["spec"]["configPatches"]:
            operation, value = patch["patch"]["operation"], copy.deepcopy(patch["patch"]["value"])
            if patch["applyTo"] == "HTTP_FILTER" and operation == "INSERT_BEFORE":
                before = patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
                names_now = [f["name"] for f in hcm["http_filters"]]
                hcm["http_filters"].insert(names_now.index(before), value)
            elif patch["applyTo"] == "CLUSTER" and operation == "ADD":
                gateway["static_resources"]["clusters"].append(kube_dns(value))
            elif patch["applyTo"] == "HTTP_ROUTE" and operation == "INSERT_FIRST":
                assert "vhost" not in patch["match"]["routeConfiguration"], "only a route-free match is emulated"
                for vhost in hcm["route_config"]["virtual_hosts"]:
                    vhost["routes"].insert(0, value)
            else:
                raise AssertionError(f"not emulated: {patch['applyTo']} {operation}")
    return gateway


def envoy_gateway(base: dict[str, Any], mesh: Config, manifests: dict[str, str], settings: Settings) -> dict[str, Any]:
    """`base` as Envoy Gateway would run it with deploy/envoy-gateway/ applied (EnvoyPatchPolicy on)."""
    gateway, ext_proc = _without_ext_proc(base)
    rules = {model.cluster_name: rule_cluster(settings, i) for i, (model, _) in enumerate(routed_models(mesh))}
    _rename_clusters(gateway, rules)
    listener = gateway["static_resources"]["listeners"][0]
    listener["default_filter_chain"] = listener.pop("filter_chains")[0]
    hcm = hcm_of(gateway)
    # Envoy Gateway's way: every policy filter is in the chain disabled, and enabled per route it applies to
    # (all the HTTPRoute's rules, the catch-all one included: the base's `unrouted` route stands for it).
    hcm["http_filters"].insert(len(hcm["http_filters"]) - 1, {**ext_proc, "name": GATEWAY_EXT_PROC, "disabled": True})
    enable = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}
    for vhost in hcm["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            route.setdefault("typed_per_filter_config", {})[GATEWAY_EXT_PROC] = copy.deepcopy(enable)
    name = f"{settings.gateway_namespace}/{settings.gateway_name}/{settings.gateway_listener}"
    resources = {"Listener": listener, "RouteConfiguration": hcm["route_config"]}
    policies = documents(manifests.get("envoy-gateway/envoypatchpolicy-fallbacks.yaml", ""))
    policies += documents(manifests.get("envoy-gateway/envoypatchpolicy-fast-path.yaml", ""))
    for policy in policies:
        for patch in policy["spec"]["jsonPatches"]:
            operation, kind = patch["operation"], patch["type"].rsplit(".", 1)[1]
            assert operation["op"] == "add", "only `add` is emulated"
            if operation["path"] == "":  # a whole new resource
                assert kind == "Cluster" and patch["name"] == operation["value"]["name"], patch
                gateway["static_resources"]["clusters"].append(kube_dns(operation["value"]))
                continue
            assert patch["name"] == name, patch["name"]
            json_patch_add(resources[kind], operation["path"], operation["value"])
    return gateway


def json_patch_add(document: Any, pointer: str, value: Any) -> None:
    """RFC 6902 `add`: into an array at an index (or `-`), or a member of an object."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    target = document
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target.insert(len(target) if last == "-" else int(last), copy.deepcopy(value))
    else:
        target[last] = copy.deepcopy(value)


def move_to(bootstrap: dict[str, Any], listen_port: int, admin_port: int) -> dict[str, Any]:
    """The same gateway on other loopback ports (next to the stack's own Envoy)."""
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen_port
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    return bootstrap
