"""The rendered Envoy bootstrap: clusters, routes, the ext_proc filter, and Envoy's own validation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.bootstrap import EXTPROC_CLUSTER, render, render_yaml
from extproc.cli import main
from extproc.config import Config, ConfigError, load_config, parse_config
from extproc.dev.stack import find_envoy

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo.yaml"
ENVOY_FILES = sorted((REPO / "envoy").glob("*.yaml"))
CONFIG_FILES = sorted((REPO / "config").glob("*.yaml"))


def config(models: list[dict[str, Any]], **top: Any) -> Config:
    return parse_config(json.dumps({"providers": {"models": models}, **top}))


def clusters(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


def hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (network_filter,) = chain["filters"]
    assert network_filter["name"] == "envoy.filters.network.http_connection_manager"
    return network_filter["typed_config"]


def virtual_host(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (vhost,) = hcm(bootstrap)["route_config"]["virtual_hosts"]
    return vhost


def routes(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    return virtual_host(bootstrap)["routes"]


def model_route(bootstrap: dict[str, Any], model: str) -> dict[str, Any]:
    return next(r for r in routes(bootstrap) if r["name"] == f"model_{model}")


def endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    (group,) = cluster["load_assignment"]["endpoints"]
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in group["lb_endpoints"]
    ]


def ext_proc_filter(bootstrap: dict[str, Any]) -> dict[str, Any]:
    return hcm(bootstrap)["http_filters"][0]


# ---------------------------------------------------------------- the demo config


def test_demo_clusters() -> None:
    bootstrap = render(load_config(DEMO))
    by_name = clusters(bootstrap)
    assert list(by_name) == [
        "demo_small",
        "demo_coder",
        "demo_large",
        "fallback_demo-coder__demo-small",
        EXTPROC_CLUSTER,
    ]
    for name, port in (("demo_small", 9001), ("demo_coder", 9002), ("demo_large", 9003)):
        cluster = by_name[name]
        assert cluster["type"] == "STATIC"
        assert cluster["load_assignment"]["cluster_name"] == name
        assert endpoints(cluster) == [("127.0.0.1", port)]
        assert "transport_socket" not in cluster
    extproc = by_name[EXTPROC_CLUSTER]
    options = extproc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert endpoints(extproc) == [("127.0.0.1", 50051)]


def test_one_cluster_per_distinct_model_cluster() -> None:
    bootstrap = render(
        config(
            [
                {"name": "a", "cluster": "shared", "base_url": "http://10.0.0.1:8000/v1"},
                {"name": "b", "cluster": "shared", "base_url": "http://10.0.0.1:8000/other"},
                {"name": "org/c:1", "base_url": "http://10.0.0.2:8000/v1"},
            ]
        )
    )
    assert list(clusters(bootstrap)) == ["shared", "org_c_1", EXTPROC_CLUSTER]
    assert model_route(bootstrap, "a")["route"]["cluster"] == "shared"
    assert model_route(bootstrap, "b")["route"]["cluster"] == "shared"
    assert model_route(bootstrap, "org/c:1")["route"]["cluster"] == "org_c_1"


def test_ext_proc_filter_is_fail_closed_and_streams_the_request_body_full_duplex() -> None:
    bootstrap = render(load_config(DEMO))
    filters = hcm(bootstrap)["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    ext_proc = ext_proc_filter(bootstrap)["typed_config"]
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"] == EXTPROC_CLUSTER
    mode = ext_proc["processing_mode"]
    assert mode["request_header_mode"] == "SEND"
    assert mode["request_body_mode"] == "FULL_DUPLEX_STREAMED"  # the default: one round trip per request
    assert mode["request_trailer_mode"] == "SEND"  # Envoy rejects full duplex without it
    assert (mode["response_header_mode"], mode["response_body_mode"]) == ("SKIP", "NONE")
    assert ext_proc["message_timeout"] == "5.000s"


@pytest.mark.parametrize(
    ("body_mode", "request_mode", "response_body_mode"),
    [("buffered", "BUFFERED", "NONE"), ("full_duplex_streamed", "FULL_DUPLEX_STREAMED", "STREAMED")],
)
def test_usage_accounting_reads_responses_in_either_body_mode(body_mode, request_mode, response_body_mode) -> None:
    cfg = load_config(DEMO)
    cfg = cfg.model_copy(
        update={
            "envoy": cfg.envoy.model_copy(update={"request_body_mode": body_mode}),
            "observability": cfg.observability.model_copy(
                update={"usage": cfg.observability.usage.model_copy(update={"enabled": True})}
            ),
        }
    )
    mode = ext_proc_filter(render(cfg))["typed_config"]["processing_mode"]
    assert mode["request_body_mode"] == request_mode
    assert mode["response_header_mode"] == "SEND"
    # Buffered mode asks per response with mode_override; Envoy ignores that under full duplex.
    assert mode["response_body_mode"] == response_body_mode


def test_route_per_model_matches_the_route_header() -> None:
    cfg = load_config(DEMO)
    bootstrap = render(cfg)
    model_routes = [r for r in routes(bootstrap) if r["name"].startswith("model_")]
    assert [r["name"] for r in model_routes] == ["model_demo-small", "model_demo-coder", "model_demo-large"]
    for route, model in zip(model_routes, cfg.providers.models, strict=True):
        assert route["match"]["headers"] == [{"name": "x-quorum-model", "string_match": {"exact": model.name}}]
        assert route["route"]["cluster"] == model.cluster_name
        assert "regex_rewrite" not in route["route"]  # base_url path is /v1
        assert "host_rewrite_literal" not in route["route"]  # an IP address needs no Host rewrite
        copied = {h["header"]["key"] for h in route["response_headers_to_add"]}
        assert copied == {
            "x-quorum-model",
            "x-quorum-decision",
            "x-quorum-guards",
            "x-quorum-signals",
            "x-quorum-confidence",
        }


def test_custom_route_header_is_matched() -> None:
    bootstrap = render(config([{"name": "a", "base_url": "http://127.0.0.1:1/v1"}], server={"route_header": "x-pick"}))
    assert model_route(bootstrap, "a")["match"]["headers"][0]["name"] == "x-pick"


def test_catch_all_answers_404_in_openai_shape() -> None:
    catch_all = routes(render(load_config(DEMO)))[-1]
    assert catch_all["match"] == {"prefix": "/"}
    assert "route" not in catch_all
    response = catch_all["direct_response"]
    assert response["status"] == 404
    error = json.loads(response["body"]["inline_string"])["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "unknown_url")
    assert {"header": {"key": "content-type", "value": "application/json"}} in catch_all["response_headers_to_add"]


@pytest.mark.parametrize("max_body", [1024, 1 << 20, 8 * 1024 * 1024, 100 * 1024 * 1024])
def test_request_buffer_limit_fits_max_body_bytes(max_body: int) -> None:
    bootstrap = render(
        config([{"name": "a", "base_url": "http://127.0.0.1:1/v1"}], server={"max_body_bytes": max_body})
    )
    assert virtual_host(bootstrap)["request_body_buffer_limit"] >= max_body
    grpc = ext_proc_filter(bootstrap)["typed_config"]["grpc_service"]["envoy_grpc"]
    assert grpc["max_receive_message_length"] >= max_body


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_workers_are_listed_on_consecutive_ports(workers: int) -> None:
    cfg = load_config(DEMO)
    extproc = clusters(render(cfg, workers=workers))[EXTPROC_CLUSTER]
    assert endpoints(extproc) == [("127.0.0.1", 50051 + i) for i in range(workers)]
    assert extproc["lb_policy"] == "ROUND_ROBIN"


def test_workers_default_to_server_workers() -> None:
    cfg = config([{"name": "a", "base_url": "http://127.0.0.1:1/v1"}], server={"listen": "0.0.0.0:7000", "workers": 3})
    assert endpoints(clusters(render(cfg))[EXTPROC_CLUSTER]) == [
        ("0.0.0.0", 7000),
        ("0.0.0.0", 7001),
        ("0.0.0.0", 7002),
    ]


def test_https_base_url_gets_tls_with_sni_and_host_rewrite() -> None:
    bootstrap = render(config([{"name": "gpt", "base_url": "https://api.example.com/v1"}]))
    cluster = clusters(bootstrap)["gpt"]
    assert cluster["type"] == "STRICT_DNS"
    assert endpoints(cluster) == [("api.example.com", 443)]
    socket = cluster["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    assert socket["typed_config"]["@type"].endswith("UpstreamTlsContext")
    assert socket["typed_config"]["sni"] == "api.example.com"
    route = model_route(bootstrap, "gpt")["route"]
    assert route["host_rewrite_literal"] == "api.example.com"
    assert "regex_rewrite" not in route


@pytest.mark.parametrize(
    ("base_url", "address", "tls"),
    [
        ("http://backend.internal/v1", ("backend.internal", 80), False),
        ("http://backend.internal:8080/v1", ("backend.internal", 8080), False),
        ("https://backend.internal:8443/v1", ("backend.internal", 8443), True),
        ("http://[::1]:9000/v1", ("::1", 9000), False),
    ],
)
def test_cluster_address_from_base_url(base_url: str, address: tuple[str, int], tls: bool) -> None:
    cluster = clusters(render(config([{"name": "a", "base_url": base_url}])))["a"]
    assert endpoints(cluster) == [address]
    assert ("transport_socket" in cluster) is tls


@pytest.mark.parametrize(
    ("base_url", "substitution"),
    [
        ("https://api.example.com/v1", None),
        ("https://api.example.com/v1/", None),
        ("https://api.example.com/openai/v1", "/openai/v1/"),
        ("https://api.example.com/api/v2/", "/api/v2/"),
        ("http://127.0.0.1:8000", "/"),
    ],
)
def test_base_url_path_other_than_v1_is_rewritten(base_url: str, substitution: str | None) -> None:
    route = model_route(render(config([{"name": "a", "base_url": base_url}])), "a")["route"]
    if substitution is None:
        assert "regex_rewrite" not in route
    else:
        assert route["regex_rewrite"] == {"pattern": {"regex": "^/v1/"}, "substitution": substitution}


def test_render_yaml_is_the_rendered_dict() -> None:
    cfg = load_config(DEMO)
    text = render_yaml(cfg, workers=2)
    assert text.startswith("# Rendered by `quorum envoy-config`")
    assert yaml.safe_load(text) == render(cfg, workers=2)


# Checked-in bootstraps known to be stale (remove the entry after `make envoy-configs`).
STALE_BOOTSTRAPS: dict[str, str] = {}
RENDERED_PAIRS = [
    pytest.param(
        p,
        id=f"envoy/{p.name}",
        marks=[pytest.mark.xfail(strict=True, reason=STALE_BOOTSTRAPS[p.name])] if p.name in STALE_BOOTSTRAPS else [],
    )
    for p in ENVOY_FILES
    if (REPO / "config" / p.name).exists()
]


@pytest.mark.parametrize("envoy_file", RENDERED_PAIRS)
def test_checked_in_bootstrap_is_up_to_date(envoy_file: Path, tmp_path: Path) -> None:
    """envoy/NAME.yaml is exactly what `quorum envoy-config -c config/NAME.yaml` renders."""
    out = tmp_path / envoy_file.name
    assert main(["envoy-config", "-c", str(REPO / "config" / envoy_file.name), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == envoy_file.read_text(encoding="utf-8"), (
        f"{envoy_file.relative_to(REPO)} is stale: run `quorum envoy-config` again"
    )


# ---------------------------------------------------------------- Envoy's own validation


def envoy_validate(path: Path) -> None:
    proc = subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"envoy rejected {path}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_there_is_something_to_validate() -> None:
    assert ENVOY_FILES, "no envoy/*.yaml"
    assert CONFIG_FILES, "no config/*.yaml"


@pytest.mark.parametrize("path", ENVOY_FILES, ids=lambda p: f"envoy/{p.name}")
def test_envoy_accepts_checked_in_bootstrap(path: Path) -> None:
    envoy_validate(path)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"config/{p.name}")
def test_envoy_accepts_rendered_bootstrap(path: Path, tmp_path: Path) -> None:
    out = tmp_path / f"bootstrap-{path.stem}.yaml"
    out.write_text(render_yaml(load_config(path), workers=2), encoding="utf-8")
    envoy_validate(out)


EDGE_CONFIGS: list[Any] = [
    pytest.param(
        {
            "providers": {
                "models": [
                    {"name": "gpt", "base_url": "https://api.example.com/openai/v1", "api_key_env": "K"},
                    {"name": "org/local:7b", "cluster": "local", "base_url": "http://localhost:8000"},
                    {"name": "local-2", "cluster": "local", "base_url": "http://localhost:8000/v1"},
                    {"name": "tls-ip", "base_url": "https://10.1.2.3:8443/v1"},
                ]
            },
            "server": {"workers": 4, "max_body_bytes": 64 * 1024 * 1024, "route_header": "x-route"},
            "envoy": {"message_timeout": "250ms", "upstream_timeout": "5m", "retries": 0},
        },
        id="https-paths-shared-cluster-workers",
    ),
    pytest.param(
        {
            "server": {"listen": "[::1]:50051", "workers": 2},
            "envoy": {"listen": "[::1]:8080", "admin": "[::1]:9901"},
            "providers": {"models": [{"name": "a", "base_url": "http://[::1]:9000/v1"}]},
        },
        id="ipv6",
    ),
    pytest.param(
        {"providers": {"models": [{"name": "a", "cluster": EXTPROC_CLUSTER, "base_url": "http://127.0.0.1:1/v1"}]}},
        id="model-cluster-named-like-the-ext-proc-cluster",
    ),
    pytest.param(
        {"providers": {"models": [{"name": EXTPROC_CLUSTER, "base_url": "http://127.0.0.1:1/v1"}]}},
        id="model-named-like-the-ext-proc-cluster",
    ),
    pytest.param(
        {
            "server": {"listen": "127.0.0.1:65535", "workers": 2},
            "providers": {"models": [{"name": "a", "base_url": "http://127.0.0.1:1/v1"}]},
        },
        id="worker-ports-past-65535",
    ),
]


@pytest.mark.parametrize("raw", EDGE_CONFIGS)
def test_every_accepted_config_renders_a_bootstrap_envoy_accepts(raw: dict[str, Any], tmp_path: Path) -> None:
    """Either `parse_config` rejects the config, or Envoy accepts what we render for it."""
    try:
        cfg = parse_config(json.dumps(raw))
    except ConfigError:
        return  # rejected up front with a path-naming problem: also fine
    out = tmp_path / "bootstrap.yaml"
    out.write_text(render_yaml(cfg), encoding="utf-8")
    envoy_validate(out)


# ---------------------------------------------------------------- policy: identity edge and fast path


def _policy_bootstrap(extra: str = "", envoy_extra: str = "  fast_path: true\n") -> dict[str, Any]:
    from builders import config_text

    return render(parse_config(config_text(envoy_extra=envoy_extra, extra=extra)))


def test_fast_path_routes_only_models_without_policy_and_turns_ext_proc_off_there() -> None:
    from builders import POLICY

    routes = {r["name"]: r for r in virtual_host(_policy_bootstrap())["routes"]}
    # demo-large carries an API key that Quorum injects: it stays on Quorum's path.
    assert [n for n in routes if n.startswith("fast_")] == ["fast_demo-small", "fast_demo-coder"]
    fast = routes["fast_demo-small"]
    assert fast["match"]["path"] == "/v1/chat/completions"
    assert fast["match"]["dynamic_metadata"][0]["value"] == {"string_match": {"exact": "demo-small"}}
    assert "headers" not in fast["match"]  # a client header never selects a fast route
    per_filter = fast["typed_per_filter_config"]
    assert per_filter["envoy.filters.http.ext_proc"]["disabled"] is True
    body_format = per_filter["envoy.filters.http.transform"]["request_transformation"]["body_transformation"]
    assert body_format["body_format"]["json_format"] == {"model": "small-v1"}
    assert fast["route"] == routes["model_demo-small"]["route"]
    # A reload can turn the route off in the running Envoy: a runtime key per model, an admin layer.
    fraction = fast["match"]["runtime_fraction"]
    assert fraction == {
        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
        "runtime_key": "quorum.fast_path.demo-small",
    }
    assert {"name": "admin", "admin_layer": {}} in _policy_bootstrap()["layered_runtime"]["layers"]
    # With guards and access rules on every model, nothing is fast-pathed and no extra filter runs.
    guarded = _policy_bootstrap(extra=POLICY)
    assert [layer["name"] for layer in guarded["layered_runtime"]["layers"]] == ["static"]
    assert not [r for r in virtual_host(guarded)["routes"] if r["name"].startswith("fast_")]
    assert "envoy.filters.http.json_to_metadata" not in [f["name"] for f in hcm(guarded)["http_filters"]]


def test_identity_header_is_removed_before_the_trusted_filters_run() -> None:
    from builders import IDENTITY_FILTER, POLICY

    filters = hcm(_policy_bootstrap(extra=POLICY, envoy_extra=IDENTITY_FILTER))["http_filters"]
    names = [f["name"] for f in filters]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.lua",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    assert filters[0]["typed_config"]["mutations"]["request_mutations"] == [{"remove": "x-client-id"}]


def test_envoy_accepts_the_policy_and_fast_path_bootstrap(tmp_path: Path) -> None:
    from builders import IDENTITY_FILTER, POLICY, config_text

    scoped = POLICY.replace("action: block\n", "action: block\n    applies_to: [demo-small]\n")
    scoped = scoped.replace("action: route\n", "action: route\n    applies_to: [demo-small]\n")
    text = config_text(envoy_extra="  fast_path: true\n" + IDENTITY_FILTER, extra=scoped)
    out = tmp_path / "policy.yaml"
    bootstrap = render_yaml(parse_config(text))
    assert "fast_demo-coder" in bootstrap and "fast_demo-small" not in bootstrap
    out.write_text(bootstrap, encoding="utf-8")
    envoy_validate(out)


def test_validate_lists_the_fast_path_and_what_it_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from builders import config_text

    monkeypatch.setenv("QUORUM_TEST_LARGE_KEY", "k")
    extra = "guards:\n  - {name: g, rules: {type: keyword, name: code}, action: block, applies_to: [demo-coder]}\n"
    path = tmp_path / "q.yaml"
    path.write_text(config_text(envoy_extra="  fast_path: true\n", extra=extra), encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fast path (Envoy routes these by name, no Quorum): demo-small\n" in out
    assert "body validation" in out and "usage" in out
    assert "demo-coder: kept on Quorum because of guard g" in out
    assert "demo-large: kept on Quorum because of API key injection (api_key_env)" in out


# ---------------------------------------------------------------- TLS to https backends


def tls_context(cfg: Config, cluster: str = "gpt") -> dict[str, Any]:
    return clusters(render(cfg))[cluster]["transport_socket"]["typed_config"]


HTTPS_MODEL = [{"name": "gpt", "base_url": "https://api.example.com/v1"}]


def test_https_backends_are_verified_against_the_system_bundle_by_default() -> None:
    validation = tls_context(config(HTTPS_MODEL))["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": "api.example.com"}}]


def test_an_ip_backend_is_matched_on_its_ip_san() -> None:
    cfg = config([{"name": "gpt", "base_url": "https://10.0.0.7:8443/v1"}])
    (san,) = tls_context(cfg)["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert san == {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.7"}}


def test_ca_bundle_and_verify_keys() -> None:
    custom = config(HTTPS_MODEL, envoy={"tls": {"ca_bundle": "/etc/quorum/ca.pem"}})
    validation = tls_context(custom)["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"] == "/etc/quorum/ca.pem"
    off = tls_context(config(HTTPS_MODEL, envoy={"tls": {"verify": False}}))
    assert "common_tls_context" not in off
    assert off["sni"] == "api.example.com"


def test_validate_warns_when_tls_verification_is_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(
        json.dumps({"providers": {"models": HTTPS_MODEL}, "envoy": {"tls": {"verify": False}}}), encoding="utf-8"
    )
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "envoy.tls.verify is false" in err and "gpt" in err
    path.write_text(json.dumps({"providers": {"models": HTTPS_MODEL}}), encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_envoy_loads_a_verifying_tls_context(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    for tls in ({}, {"ca_bundle": str(ca_file)}):
        out = tmp_path / "bootstrap.yaml"
        out.write_text(render_yaml(config(HTTPS_MODEL, envoy={"tls": tls})), encoding="utf-8")
        envoy_validate(out)


# ---------------------------------------------------------------- client credentials


def test_client_credentials_are_removed_unless_forwarded() -> None:
    bootstrap = render(
        config(
            [
                {"name": "plain", "base_url": "http://127.0.0.1:1/v1"},
                {"name": "keyed", "base_url": "http://127.0.0.1:2/v1", "api_key_env": "KEY"},
                {"name": "opted", "base_url": "http://127.0.0.1:3/v1", "forward_client_auth": True},
            ]
        )
    )
    everything = ["authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"]
    assert model_route(bootstrap, "plain")["request_headers_to_remove"] == everything
    # Quorum sets the model's own key in `authorization`; Envoy removes the rest after ext_proc.
    assert model_route(bootstrap, "keyed")["request_headers_to_remove"] == everything[1:]
    assert "request_headers_to_remove" not in model_route(bootstrap, "opted")


def test_validate_names_models_that_get_the_client_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.yaml"
    models = [{"name": "passthrough", "base_url": "http://127.0.0.1:1/v1", "forward_client_auth": True}]
    path.write_text(json.dumps({"providers": {"models": models}}), encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert "forward_client_auth: the client's credential headers reach passthrough" in capsys.readouterr().err


# ---------------------------------------------------------------- local replies


def mapper_expressions(bootstrap: dict[str, Any]) -> list[str]:
    mappers = hcm(bootstrap)["local_reply_config"]["mappers"]
    return [m["filter"]["extension_filter"]["typed_config"]["expression"] for m in mappers]


def test_every_local_reply_mapper_leaves_quorum_and_direct_responses_alone() -> None:
    expressions = mapper_expressions(render(load_config(DEMO)))
    assert expressions
    for expression in expressions:
        assert expression.startswith(
            "!(response.code_details.startsWith('quorum') || response.code_details == 'direct_response') && "
        )


def test_ext_proc_failures_are_remapped_before_the_status_rules() -> None:
    mappers = hcm(render(load_config(DEMO)))["local_reply_config"]["mappers"]
    shed, stalled, unavailable = mappers[0], mappers[1], mappers[2]
    assert shed["body_format_override"]["json_format"]["error"]["code"] == "router_overloaded"
    assert stalled["status_code"] == 504
    assert stalled["body_format_override"]["json_format"]["error"]["code"] == "router_timeout"
    assert unavailable["status_code"] == 503
    assert unavailable["headers_to_add"][0]["header"] == {"key": "retry-after", "value": "1"}
    for mapper in mappers:
        error = mapper["body_format_override"]["json_format"]["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"].strip()
        assert error["type"] in {
            "authentication_error",
            "permission_error",
            "invalid_request_error",
            "rate_limit_error",
            "server_error",
        }


# ---------------------------------------------------------------- limits, stall detection, access log


def test_limits_come_from_the_config() -> None:
    limits = {
        "request_headers_timeout": "3s",
        "max_request_headers_kb": 32,
        "max_request_headers_count": 40,
        "per_connection_buffer_bytes": 65536,
        "idle_connection_timeout": "90s",
        "max_downstream_connections": 500,
        "max_heap_bytes": 268435456,
        "http2_max_concurrent_streams": 16,
    }
    bootstrap = render(config(HTTPS_MODEL, envoy={"limits": limits, "fusion_timeout": "120s"}))
    manager = hcm(bootstrap)
    assert manager["request_headers_timeout"] == "3.000s"
    assert manager["max_request_headers_kb"] == 32
    common = manager["common_http_protocol_options"]
    assert common == {"idle_timeout": "90.000s", "max_headers_count": 40, "max_stream_duration": "120.000s"}
    assert manager["http2_protocol_options"]["max_concurrent_streams"] == 16
    assert bootstrap["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] == 65536
    monitors = {m["name"]: m["typed_config"] for m in bootstrap["overload_manager"]["resource_monitors"]}
    connections = monitors["envoy.resource_monitors.global_downstream_max_connections"]
    assert connections["max_active_downstream_connections"] == 500
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == 268435456
    actions = {a["name"] for a in bootstrap["overload_manager"]["actions"]}
    assert "envoy.overload_actions.stop_accepting_requests" in actions


def test_heap_shedding_can_be_turned_off() -> None:
    manager = render(config(HTTPS_MODEL, envoy={"limits": {"max_heap_bytes": None}}))["overload_manager"]
    (monitor,) = manager["resource_monitors"]
    assert monitor["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    assert manager["actions"] == []


def test_model_routes_are_not_capped_by_fusion_timeout() -> None:
    route = model_route(render(config(HTTPS_MODEL)), "gpt")["route"]
    assert route["max_stream_duration"] == {"max_stream_duration": "0s"}


def extproc_stream_cap(cfg: Config, workers: int | None = None) -> int:
    (thresholds,) = clusters(render(cfg, workers=workers))[EXTPROC_CLUSTER]["circuit_breakers"]["thresholds"]
    return thresholds["max_requests"]


@pytest.mark.parametrize(
    ("server", "envoy", "observability", "workers", "cap"),
    [
        ({}, {}, {}, 1, 80),  # the admission budgets: 64 routing + 16 fusion
        ({}, {}, {}, 3, 240),  # per worker
        ({"admission": {"max_in_flight": 10, "max_fusion_runs": 2}}, {}, {}, 2, 24),
        ({}, {"extproc_endpoints": ["10.0.0.1:50051", "10.0.0.2:50051"]}, {}, 1, 160),
        # streams that live as long as whole requests, or no budget to size from: the connection limit
        ({}, {"request_body_mode": "buffered"}, {}, 1, 10_000),
        ({}, {}, {"usage": {"enabled": True}}, 1, 10_000),
        ({"admission": {"max_in_flight": 0}}, {}, {}, 1, 10_000),
        ({}, {"extproc_endpoints": ["quorum.svc:50051"]}, {}, 1, 10_000),
        ({}, {"limits": {"max_extproc_streams": 7}}, {"usage": {"enabled": True}}, 4, 7),  # the key wins
    ],
)
def test_extproc_stream_cap(
    server: dict[str, Any], envoy: dict[str, Any], observability: dict[str, Any], workers: int, cap: int
) -> None:
    cfg = config(HTTPS_MODEL, server=server, envoy=envoy, observability=observability)
    assert extproc_stream_cap(cfg, workers) == cap


def test_extproc_host_health_changes_reach_the_load_balancer_at_once() -> None:
    """A killed worker is ejected at once; Envoy's default 1 s merge window would hold that back."""
    extproc = clusters(render(config(HTTPS_MODEL), workers=2))[EXTPROC_CLUSTER]
    assert extproc["common_lb_config"]["update_merge_window"] == "0s"


def test_shed_ext_proc_streams_are_openai_503s_with_the_admission_retry_after() -> None:
    cfg = config(HTTPS_MODEL, server={"admission": {"retry_after": 3}})
    mappers = hcm(render(cfg))["local_reply_config"]["mappers"]
    shed = next(m for m in mappers if "overflow" in m["filter"]["extension_filter"]["typed_config"]["expression"])
    assert shed["status_code"] == 503
    assert shed["headers_to_add"][0]["header"] == {"key": "retry-after", "value": "3"}
    error = shed["body_format_override"]["json_format"]["error"]
    assert (error["type"], error["code"]) == ("server_error", "router_overloaded")
    assert mappers.index(shed) == 0  # before the generic ext_proc rules that would call it unavailable


def test_stall_timeout_sets_the_ext_proc_keepalive() -> None:
    extproc = clusters(render(config(HTTPS_MODEL, envoy={"stall_timeout": "6s"})))[EXTPROC_CLUSTER]
    options = extproc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    keepalive = options["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]
    assert keepalive == {"interval": "3.000s", "timeout": "3.000s"}


def test_access_log_is_json_without_credentials() -> None:
    (log,) = hcm(render(load_config(DEMO)))["access_log"]
    assert log["typed_config"]["path"] == "/dev/stdout"
    fields = log["typed_config"]["log_format"]["json_format"]
    assert {"request_id", "status", "model", "decision", "duration_ms", "upstream_cluster"} <= set(fields)
    assert not any(secret in str(fields).lower() for secret in ("authorization", "api-key", "api_key"))
    assert "access_log" not in hcm(render(config(HTTPS_MODEL, envoy={"access_log": None})))


def test_extproc_streams_are_closed_gracefully_in_every_bootstrap() -> None:
    """Envoy resets finished ext_proc streams unless told otherwise (tests/integration/test_routing.py)."""
    layers = render(config(HTTPS_MODEL))["layered_runtime"]["layers"]
    assert layers[0]["static_layer"]["envoy.reloadable_features.ext_proc_graceful_grpc_close"] is True
