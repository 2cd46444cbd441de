"""deploy/: generated from deploy/config.yaml by the code behind `quorum envoy-config`, and valid offline."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import pytest
import yaml
from mesh import GATEWAY_EXT_PROC, envoy_gateway, hcm_of, istio_gateway
from test_bootstrap import envoy_validate

from extproc.bootstrap import EXTPROC_CLUSTER, render
from extproc.bootstrap.extproc_cluster import outlier_detection
from extproc.bootstrap.listener import extproc_filter
from extproc.bootstrap.routes import unrouted_route
from extproc.cli import main
from extproc.config import load_config, parse_config
from extproc.manifests import Settings, render_manifests
from extproc.manifests.envoy_gateway import duration
from extproc.manifests.istio import cluster_name
from extproc.manifests.kubernetes import CONFIG_PATH, RUN_AS
from extproc.pb import SERVICE_NAME

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SOURCE = DEPLOY / "config.yaml"
CONFIG = load_config(SOURCE)
KUBERNETES_VERSION = "1.33"
CHAIN = "modelRefs: [{model: coder}, {model: small}]"  # the shipped example's one fallback chain
NO_CHAIN = "modelRefs: [{model: coder}]"


def documents(relative: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / relative).read_text(encoding="utf-8")) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    paths = [str(path.relative_to(DEPLOY)) for path in sorted(DEPLOY.rglob("*.yaml"))]
    return [d for path in paths for d in documents(path) if d.get("kind") == kind]


def ext_proc_envoy_filter() -> dict[str, Any]:
    (envoy_filter,) = [f for f in by_kind("EnvoyFilter") if f["metadata"]["name"] == "quorum-ext-proc"]
    return envoy_filter


def container() -> dict[str, Any]:
    (deployment,) = by_kind("Deployment")
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


# ---------------------------------------------------------------- one source of truth


def test_committed_files_are_what_the_generator_renders(tmp_path: Path) -> None:
    assert main(["deploy-manifests", "--config", str(SOURCE), "--output", str(tmp_path)]) == 0
    rendered = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.yaml")}
    committed = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*.yaml")} - {"config.yaml"}
    assert committed == rendered, "run `make deploy-manifests`"
    for relative in sorted(rendered):
        assert (DEPLOY / relative).read_text(encoding="utf-8") == (tmp_path / relative).read_text(encoding="utf-8"), (
            f"deploy/{relative} is stale: run `make deploy-manifests`"
        )


def test_the_istio_filter_is_the_rendered_ext_proc_filter_under_istios_cluster_name() -> None:
    (patch,) = ext_proc_envoy_filter()["spec"]["configPatches"]
    assert patch["patch"]["value"] == extproc_filter(CONFIG, "outbound|50051||quorum.quorum.svc.cluster.local")
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    # The same filter as the standalone bootstrap, apart from the cluster's name.
    standalone = extproc_filter(CONFIG)
    standalone["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = cluster_name(CONFIG, Settings())
    assert patch["patch"]["value"] == standalone


def test_the_istio_routes_are_the_rendered_routes_for_in_cluster_models() -> None:
    (service,) = by_kind("VirtualService")
    http = service["spec"]["http"]
    assert [r["name"] for r in http] == ["model-small", "model-coder", "unrouted"]  # frontier is outside
    small = http[0]
    assert small["match"] == [{"uri": {"prefix": "/v1/"}, "headers": {"x-quorum-model": {"exact": "small"}}}]
    destination = {"host": "vllm-small.models.svc.cluster.local", "port": {"number": 8000}}
    assert small["route"] == [{"destination": destination}]
    # The same 404 as the standalone bootstrap's catch-all, last.
    bootstrap = render(CONFIG)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    unrouted = hcm["route_config"]["virtual_hosts"][0]["routes"][-1]["direct_response"]
    assert http[-1]["directResponse"] == {"status": 404, "body": {"string": unrouted["body"]["inline_string"]}}


def test_a_model_base_path_becomes_an_istio_rewrite() -> None:
    text = (
        SOURCE.read_text(encoding="utf-8")
        .replace("vllm-coder.models.svc.cluster.local:8000/v1", "vllm-coder.models.svc.cluster.local:8000/openai/v1")
        .replace(CHAIN, NO_CHAIN)
    )  # a chain's models must share their base path
    files = render_manifests(text, Settings())
    service = yaml.safe_load(files["istio/virtualservice.yaml"])
    coder = next(r for r in service["spec"]["http"] if r["name"] == "model-coder")
    assert coder["rewrite"] == {"uriRegexRewrite": {"match": "^/v1/", "rewrite": "/openai/v1/"}}


def test_the_istio_destination_rule_ejects_like_the_rendered_cluster() -> None:
    (rule,) = by_kind("DestinationRule")
    outlier = rule["spec"]["trafficPolicy"]["outlierDetection"]
    envoy = outlier_detection()
    assert outlier["consecutiveLocalOriginFailures"] == envoy["consecutive_local_origin_failure"]
    assert outlier["splitExternalLocalOriginErrors"] is True
    assert outlier["consecutiveGatewayErrors"] == envoy["consecutive_gateway_failure"]
    assert rule["spec"]["host"] == "quorum.quorum.svc.cluster.local"


def test_the_envoy_gateway_policy_carries_the_rendered_filter_settings() -> None:
    (policy,) = by_kind("EnvoyExtensionPolicy")
    (ext_proc,) = policy["spec"]["extProc"]
    typed = extproc_filter(CONFIG)["typed_config"]
    assert ext_proc["failOpen"] is typed["failure_mode_allow"] is False
    assert CONFIG.envoy.message_timeout == 5
    assert ext_proc["messageTimeout"] == "5s"
    assert ext_proc["processingMode"]["request"] == {"body": "FullDuplexStreamed"}
    assert ext_proc["processingMode"]["allowModeOverride"] is True
    assert "response" not in ext_proc["processingMode"]  # usage accounting is off: responses skip Quorum
    assert ext_proc["backendRefs"] == [{"name": "quorum", "namespace": "quorum", "port": 50051}]
    (grant,) = [g for g in by_kind("ReferenceGrant") if g["spec"]["from"][0]["kind"] == "EnvoyExtensionPolicy"]
    assert grant["spec"]["from"][0]["namespace"] == policy["metadata"]["namespace"]
    assert grant["metadata"]["namespace"] == "quorum"


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (0.25, "250ms"), (600, "600s"), (1.5, "1500ms")])
def test_gateway_api_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_the_envoy_gateway_routes_are_the_rendered_routes_for_in_cluster_models() -> None:
    (route,) = by_kind("HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": "eg"}]
    assert route["metadata"]["namespace"] == by_kind("EnvoyExtensionPolicy")[0]["metadata"]["namespace"]
    *rules, catch_all = route["spec"]["rules"]
    assert [r["matches"][0]["headers"] for r in rules] == [
        [{"type": "Exact", "name": "x-quorum-model", "value": "small"}],
        [{"type": "Exact", "name": "x-quorum-model", "value": "coder"}],
    ]
    assert rules[0]["backendRefs"] == [{"name": "vllm-small", "namespace": "models", "port": 8000}]
    # Everything else: the policy covers this route too, so Quorum sees requests before any header is
    # set; what Quorum does not route gets the standalone bootstrap's OpenAI-shaped 404.
    assert catch_all["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert "backendRefs" not in catch_all
    (ref,) = [f["extensionRef"] for f in catch_all["filters"]]
    filters = {f["metadata"]["name"]: f["spec"] for f in by_kind("HTTPRouteFilter")}
    direct = filters[ref["name"]]["directResponse"]
    unrouted = unrouted_route()["direct_response"]
    assert (direct["statusCode"], direct["body"]["inline"]) == (unrouted["status"], unrouted["body"]["inline_string"])
    assert direct["contentType"] == "application/json"
    grants = [g for g in by_kind("ReferenceGrant") if g["spec"]["from"][0]["kind"] == "HTTPRoute"]
    assert [g["metadata"]["namespace"] for g in grants] == ["models"]


def test_a_buffered_config_gives_buffered_policies() -> None:
    text = SOURCE.read_text(encoding="utf-8").replace("envoy:\n", "envoy:\n  request_body_mode: buffered\n", 1)
    files = render_manifests(text, Settings())
    policy = yaml.safe_load(files["envoy-gateway/envoyextensionpolicy.yaml"].split("\n", 1)[1].split("---")[0])
    assert policy["spec"]["extProc"][0]["processingMode"]["request"] == {"body": "Buffered"}
    istio = yaml.safe_load(files["istio/envoyfilter.yaml"])
    value = istio["spec"]["configPatches"][0]["patch"]["value"]
    assert value["typed_config"]["processing_mode"]["request_body_mode"] == "BUFFERED"


def test_the_configmap_carries_the_config_file_verbatim() -> None:
    (configmap,) = by_kind("ConfigMap")
    assert configmap["data"]["config.yaml"] == SOURCE.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the pods


def test_probes_ask_the_grpc_health_service_on_the_configured_port() -> None:
    pod = container()
    assert pod["readinessProbe"]["grpc"] == {"port": 50051, "service": SERVICE_NAME}
    assert pod["startupProbe"]["grpc"] == {"port": 50051, "service": SERVICE_NAME}
    assert pod["livenessProbe"]["grpc"]["port"] == 50051
    assert {p["name"]: p["containerPort"] for p in pod["ports"]} == {"grpc": 50051, "metrics": 9190}


def test_provider_keys_come_from_a_secret_never_from_the_manifests() -> None:
    env = container()["env"]
    secret = {"secretKeyRef": {"name": "quorum-provider-keys", "key": "OPENAI_API_KEY"}}
    assert env == [{"name": "OPENAI_API_KEY", "valueFrom": secret}]
    assert not by_kind("Secret")


def test_the_pod_runs_the_image_as_built() -> None:
    commands = dockerfile.parse_file(str(REPO / "Dockerfile"))
    (cmd,) = [c for c in commands if c.cmd == "CMD"]
    assert list(cmd.value) == container()["args"] == ["serve", "--config", CONFIG_PATH]
    user = [c for c in commands if c.cmd == "USER"][-1].value[0]
    assert user == f"{RUN_AS}:{RUN_AS}"
    (deployment,) = by_kind("Deployment")
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == RUN_AS
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_grace_period_covers_the_drain_and_quorums_own_grace() -> None:
    (deployment,) = by_kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    drain = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > drain + CONFIG.server.drain_delay + CONFIG.server.grace_period


def test_services_for_the_mesh_and_for_a_standalone_envoy() -> None:
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind("Service")}
    assert services["quorum"]["ports"][0]["appProtocol"] == "grpc"  # HTTP/2 in Istio and Envoy Gateway
    assert services["quorum-headless"]["clusterIP"] == "None"
    # The standalone bootstrap resolves the headless Service to every pod.
    cluster = next(c for c in render(CONFIG)["static_resources"]["clusters"] if c["name"] == EXTPROC_CLUSTER)
    assert cluster["type"] == "STRICT_DNS"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address["address"].startswith("quorum-headless.quorum.svc")


# ---------------------------------------------------------------- offline validation


CORE = [
    pytest.param(doc, id=f"{doc['kind']}/{doc['metadata']['name']}")
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    for doc in documents(f"kubernetes/{path.name}")
    if doc["kind"] != "Kustomization"
]


def test_every_core_kind_is_there() -> None:
    kinds = {p.values[0]["kind"] for p in CORE}
    assert kinds == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


@pytest.mark.parametrize("doc", CORE)
def test_kubernetes_accepts_the_object(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_rejects_a_broken_object() -> None:
    broken = copy.deepcopy(by_kind("Deployment")[0])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_envoy_accepts_the_standalone_bootstrap() -> None:
    envoy_validate(DEPLOY / "envoy" / "bootstrap.yaml")


def test_envoy_accepts_the_istio_filter_in_a_gateway_listener(tmp_path: Path) -> None:
    """The EnvoyFilter's value in a real HTTP connection manager, next to a cluster named as Istio names it."""
    value = ext_proc_envoy_filter()["spec"]["configPatches"][0]["patch"]["value"]
    bootstrap = render(CONFIG)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0] = value
    for cluster in bootstrap["static_resources"]["clusters"]:
        if cluster["name"] == EXTPROC_CLUSTER:
            cluster["name"] = cluster["load_assignment"]["cluster_name"] = cluster_name(CONFIG, Settings())
    out = tmp_path / "istio-gateway.yaml"
    out.write_text(yaml.safe_dump(bootstrap), encoding="utf-8")
    envoy_validate(out)


# ---------------------------------------------------------------- the fast path on the gateways


FAST_FILES = ("istio/envoyfilter-fast-path.yaml", "envoy-gateway/envoypatchpolicy-fast-path.yaml")
FAST_FILTERS = ("envoy.filters.http.json_to_metadata", "envoy.filters.http.transform")


def _text(fast_path: str = "true", extra: str = "") -> str:
    text = SOURCE.read_text(encoding="utf-8").replace("  fast_path: true\n", f"  fast_path: {fast_path}\n")
    return text + extra


def _fast_route_models(files: dict[str, str]) -> dict[str, list[str]]:
    istio_filter = yaml.safe_load(files[FAST_FILES[0]])
    policy = yaml.safe_load(files[FAST_FILES[1]])
    istio = [p["patch"]["value"] for p in istio_filter["spec"]["configPatches"] if p["applyTo"] == "HTTP_ROUTE"]
    gateway = [p["operation"]["value"] for p in policy["spec"]["jsonPatches"] if "routes" in p["operation"]["path"]]
    return {"istio": [_fast_model(r) for r in istio], "envoy-gateway": [_fast_model(r) for r in gateway]}


def _fast_model(route: dict[str, Any]) -> str:
    return route["match"]["dynamic_metadata"][0]["value"]["string_match"]["exact"]


def test_the_shipped_example_fast_paths_the_in_cluster_models_without_policy() -> None:
    files = render_manifests(SOURCE.read_text(encoding="utf-8"), Settings())
    # INSERT_FIRST / add-at-0 prepend, so the patches list the routes last-first.
    assert _fast_route_models(files) == {"istio": ["coder", "small"], "envoy-gateway": ["coder", "small"]}


@pytest.mark.parametrize(
    ("fast_path", "extra"),
    [
        ("false", ""),  # off: every request goes through Quorum
        ("true", "guards:\n  - {name: no_secrets, rules: {type: keyword, name: code}, action: block}\n"),
    ],
    ids=["off", "every-model-guarded"],
)
def test_no_fast_path_files_when_no_model_takes_the_fast_path(fast_path: str, extra: str) -> None:
    files = render_manifests(_text(fast_path, extra), Settings())
    assert not set(FAST_FILES) & set(files)
    service = yaml.safe_load(files["istio/virtualservice.yaml"])
    assert [r["name"] for r in service["spec"]["http"]] == ["model-small", "model-coder", "unrouted"]


def test_a_model_with_policy_or_outside_the_cluster_gets_no_fast_route() -> None:
    guard = "guards:\n  - {name: no_code, rules: {type: keyword, name: code}, action: block, applies_to: [small]}\n"
    assert _fast_route_models(render_manifests(_text(extra=guard), Settings())) == {
        "istio": ["coder"],
        "envoy-gateway": ["coder"],
    }
    # Opted in per model: only `small`; `frontier` (outside the cluster, and keyed) never.
    opt_in = "cluster: vllm_small\n      fast_path: true\n"
    per_model = _text("false").replace("cluster: vllm_small\n", opt_in)
    per_model = per_model.replace("api_key_env: OPENAI_API_KEY", "fast_path: true")
    only_small = {"istio": ["small"], "envoy-gateway": ["small"]}
    assert _fast_route_models(render_manifests(per_model, Settings())) == only_small


def _bootstrap_fast_path() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    hcm = render(CONFIG)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f for f in hcm["http_filters"] if f["name"] in FAST_FILTERS]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r["name"].startswith("fast_")}
    return filters, routes


def test_the_istio_fast_path_is_the_bootstraps_filters_and_routes_on_istios_clusters() -> None:
    filters, routes = _bootstrap_fast_path()
    (envoy_filter,) = [f for f in by_kind("EnvoyFilter") if f["metadata"]["name"] == "quorum-fast-path"]
    spec = envoy_filter["spec"]
    assert spec["priority"] > ext_proc_envoy_filter()["spec"].get("priority", 0)  # after ext_proc is in place
    filter_patches = [p for p in spec["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    assert [p["patch"]["value"] for p in filter_patches] == filters
    for patch in filter_patches:
        assert patch["patch"]["operation"] == "INSERT_BEFORE"
        assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.ext_proc"
    route_patches = [p for p in spec["configPatches"] if p["applyTo"] == "HTTP_ROUTE"]
    assert {p["match"]["routeConfiguration"]["gateway"] for p in route_patches} == {"istio-system/llm-gateway"}
    for patch in route_patches:
        value = patch["patch"]["value"]
        expected = copy.deepcopy(routes[value["name"]])
        host = expected["route"]["host_rewrite_literal"]
        expected["route"]["cluster"] = f"outbound|8000||{host}"  # the Service the VirtualService routes to
        assert value == expected
        assert patch["patch"]["operation"] == "INSERT_FIRST"


def test_the_envoy_gateway_fast_path_is_the_bootstraps_filters_and_routes_on_its_clusters() -> None:
    filters, routes = _bootstrap_fast_path()
    (policy,) = [p for p in by_kind("EnvoyPatchPolicy") if p["metadata"]["name"] == "quorum-fast-path"]
    assert policy["metadata"]["namespace"] == "envoy-gateway-system"  # the Gateway's own namespace
    assert policy["spec"]["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}
    patches = policy["spec"]["jsonPatches"]
    assert {p["name"] for p in patches} == {"envoy-gateway-system/eg/http"}
    listener = [p["operation"] for p in patches if p["type"].endswith("listener.v3.Listener")]
    assert [op["value"] for op in reversed(listener)] == filters
    assert {op["path"] for op in listener} == {"/default_filter_chain/filters/0/typed_config/http_filters/0"}
    (http_route,) = by_kind("HTTPRoute")
    backends = [rule["backendRefs"][0]["name"] for rule in http_route["spec"]["rules"] if "backendRefs" in rule]
    for patch in patches:
        if not patch["type"].endswith("RouteConfiguration"):
            continue
        value = patch["operation"]["value"]
        expected = copy.deepcopy(routes[value["name"]])
        rule = int(value["route"]["cluster"].rsplit("/", 1)[1])
        # The cluster Envoy Gateway builds for the HTTPRoute rule of the same model's Service.
        assert value["route"]["cluster"] == f"httproute/envoy-gateway-system/quorum-models/rule/{rule}"
        assert expected["route"]["host_rewrite_literal"].startswith(f"{backends[rule]}.")
        expected["route"]["cluster"] = value["route"]["cluster"]
        per_filter = expected["typed_per_filter_config"]
        per_filter[GATEWAY_EXT_PROC] = per_filter.pop("envoy.filters.http.ext_proc")
        assert value == expected
        assert patch["operation"]["path"] == "/virtual_hosts/0/routes/0"


@pytest.mark.parametrize("gateway", ["istio", "envoy-gateway"])
def test_envoy_accepts_each_gateway_with_the_fast_path_and_fallback_patches_applied(
    gateway: str, tmp_path: Path
) -> None:
    """The patches applied with each gateway's semantics (tests/mesh.py) to a stand-in for its generated
    config (no fast path, no chain): the fast-path filters run before ext_proc, the fast routes come
    first, then the chain's, and Envoy takes it."""
    base = render(parse_config(_text("false").replace(CHAIN, NO_CHAIN)))
    manifests = render_manifests(SOURCE.read_text(encoding="utf-8"), Settings())
    apply = istio_gateway if gateway == "istio" else envoy_gateway
    patched = apply(base, CONFIG, manifests, Settings())
    hcm = hcm_of(patched)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[:2] == list(FAST_FILTERS)
    assert names[2].startswith("envoy.filters.http.ext_proc") and names[3] == "envoy.filters.http.router"
    routes = [r["name"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"]]
    assert routes[:4] == ["fast_small", "fast_coder", "fallback_coder>small", "model_small"]
    clusters = [c["name"] for c in patched["static_resources"]["clusters"]]
    assert clusters.count("fallback_coder__small") == 1
    out = tmp_path / f"{gateway}.yaml"
    out.write_text(yaml.safe_dump(patched), encoding="utf-8")
    envoy_validate(out)


# ---------------------------------------------------------------- fallback chains


def _bootstrap_chains() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    bootstrap = render(CONFIG)
    clusters = [c for c in bootstrap["static_resources"]["clusters"] if c["name"].startswith("fallback_")]
    routes = hcm_of(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
    return clusters, [r for r in routes if r["name"].startswith("fallback_")]


def test_the_shipped_example_has_a_chain_and_the_mesh_files_for_it() -> None:
    clusters, routes = _bootstrap_chains()
    assert [c["name"] for c in clusters] == ["fallback_coder__small"]
    assert [r["name"] for r in routes] == ["fallback_coder>small"]
    # Neither the VirtualService nor the HTTPRoute can name the chain's cluster: the patches carry it.
    (service,) = by_kind("VirtualService")
    assert [r["name"] for r in service["spec"]["http"]] == ["model-small", "model-coder", "unrouted"]
    (http_route,) = by_kind("HTTPRoute")
    assert all("coder>small" not in str(rule) for rule in http_route["spec"]["rules"])


def test_the_istio_fallbacks_are_the_bootstraps_chain_clusters_and_routes() -> None:
    clusters, routes = _bootstrap_chains()
    (envoy_filter,) = [f for f in by_kind("EnvoyFilter") if f["metadata"]["name"] == "quorum-fallbacks"]
    patches = envoy_filter["spec"]["configPatches"]
    added = [p for p in patches if p["applyTo"] == "CLUSTER"]
    assert [p["patch"] for p in added] == [{"operation": "ADD", "value": c} for c in clusters]
    assert {p["match"]["context"] for p in patches} == {"GATEWAY"}
    route_patches = [p for p in patches if p["applyTo"] == "HTTP_ROUTE"]
    assert [p["patch"]["value"] for p in reversed(route_patches)] == routes  # INSERT_FIRST: listed last-first
    assert {p["patch"]["operation"] for p in route_patches} == {"INSERT_FIRST"}
    assert {p["match"]["routeConfiguration"]["gateway"] for p in route_patches} == {"istio-system/llm-gateway"}


def test_the_envoy_gateway_fallbacks_are_the_bootstraps_chain_clusters_and_routes() -> None:
    clusters, routes = _bootstrap_chains()
    (policy,) = [p for p in by_kind("EnvoyPatchPolicy") if p["metadata"]["name"] == "quorum-fallbacks"]
    assert policy["spec"]["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}
    patches = policy["spec"]["jsonPatches"]
    added = [p for p in patches if p["type"].endswith("cluster.v3.Cluster")]
    # Envoy Gateway adds a whole resource for `add` at the empty path.
    assert [(p["name"], p["operation"]) for p in added] == [
        (c["name"], {"op": "add", "path": "", "value": c}) for c in clusters
    ]
    route_patches = [p for p in patches if p["type"].endswith("RouteConfiguration")]
    assert [p["operation"]["value"] for p in reversed(route_patches)] == routes
    assert {(p["name"], p["operation"]["path"]) for p in route_patches} == {
        ("envoy-gateway-system/eg/http", "/virtual_hosts/0/routes/0")
    }


def test_no_fallback_files_without_a_chain() -> None:
    files = render_manifests(_text().replace(CHAIN, NO_CHAIN), Settings())
    assert not {"istio/envoyfilter-fallbacks.yaml", "envoy-gateway/envoypatchpolicy-fallbacks.yaml"} & set(files)


@pytest.mark.parametrize("config", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_deploy_manifests_renders_every_shipped_config(config: Path, tmp_path: Path, capsys) -> None:
    """Any exception (a traceback for the operator) fails; config/demo.yaml has a chain."""
    assert main(["deploy-manifests", "--config", str(config), "--output", str(tmp_path)]) == 0, capsys.readouterr()
    chains = [
        c for c in render(load_config(config))["static_resources"]["clusters"] if c["name"].startswith("fallback_")
    ]
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.yaml")}
    has_files = {"istio/envoyfilter-fallbacks.yaml", "envoy-gateway/envoypatchpolicy-fallbacks.yaml"} <= written
    assert has_files == bool(chains)


def test_an_output_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "out").write_text("a file, not a directory", encoding="utf-8")
    assert main(["deploy-manifests", "--config", str(SOURCE), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_every_generated_file_names_the_config_it_came_from() -> None:
    files = render_manifests(SOURCE.read_text(encoding="utf-8"), Settings(), source="team/llm.yaml")
    assert all(
        text.startswith("# Generated by `quorum deploy-manifests` from team/llm.yaml;")
        for path, text in files.items()
        if path != "envoy/bootstrap.yaml"
    ), [path for path, text in files.items() if "team/llm.yaml" not in text]
