"""Fallback chains: which configs are accepted, what Quorum sends, and what Envoy is told."""

from __future__ import annotations

import orjson
import pytest
from builders import body_msg, chat, chat_headers, config_text, set_headers
from test_handler import exchange

from extproc.bootstrap import render
from extproc.config import ConfigError, parse_config
from extproc.handler import StreamHandler
from extproc.runtime import build_runtime

ENV = {"QUORUM_TEST_LARGE_KEY": "k"}


def with_fallbacks(text: str) -> str:
    text = text.replace("cluster: demo_small\n", "cluster: demo_small\n      fallbacks: [demo-coder]\n")
    return text.replace("modelRefs: [{model: demo-coder}]", "modelRefs: [{model: demo-coder}, {model: demo-small}]")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (("fallbacks: [demo-coder]", "fallbacks: [nope]"), "providers.models[0].fallbacks[0]: unknown model 'nope'"),
        (("fallbacks: [demo-coder]", "fallbacks: [demo-small]"), "providers.models[0].fallbacks[0]: a model cannot"),
        (
            ("fallbacks: [demo-coder]", "fallbacks: [demo-large]"),
            "providers.models[0].fallbacks: models demo-small, demo-large differ in api_key_env",
        ),
        (
            (
                "base_url: http://127.0.0.1:1/v1\n    - name: demo-large",
                "base_url: http://127.0.0.1:1/api/v1\n    - name: demo-large",
            ),
            "routing.decisions[0].modelRefs: models demo-coder, demo-small differ in base_url path",
        ),
    ],
)
def test_chains_that_cannot_share_a_cluster_are_refused(edit, problem):
    with pytest.raises(ConfigError) as caught:
        parse_config(with_fallbacks(config_text()).replace(*edit))
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


async def test_quorum_names_the_chain_and_writes_model_first():
    runtime = build_runtime(parse_config(with_fallbacks(config_text())), environ=ENV)
    responses = await exchange(StreamHandler(runtime), chat_headers(), body_msg(chat("python", temperature=0)))
    sent = set_headers(responses[-1])
    assert sent["x-quorum-model"] == "demo-coder>demo-small"  # the decision's modelRefs
    assert responses[-1].request_body.response.body_mutation.body.startswith(b'{"model":"coder-v1",')
    # an explicit model's own fallbacks make its chain
    responses = await exchange(
        StreamHandler(runtime), chat_headers(), body_msg({"temperature": 0, **chat("hi", model="demo-small")})
    )
    assert set_headers(responses[-1])["x-quorum-model"] == "demo-small>demo-coder"
    body = responses[-1].request_body.response.body_mutation.body
    assert body.startswith(b'{"model":"small-v1",') and orjson.loads(body)["temperature"] == 0


def test_envoy_gets_one_prioritised_cluster_and_route_per_chain():
    bootstrap = render(parse_config(with_fallbacks(config_text())))
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    chain = clusters["fallback_demo-coder__demo-small"]
    priorities = [
        (e["priority"], e["lb_endpoints"][0]["metadata"]["filter_metadata"]["quorum"])
        for e in chain["load_assignment"]["endpoints"]
    ]
    assert priorities == [
        (0, {"name": "demo-coder", "model": '"coder-v1"'}),
        (1, {"name": "demo-small", "model": '"small-v1"'}),
    ]
    filters = chain["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "http_filters"
    ]
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.lua",
        "envoy.filters.http.upstream_codec",
    ]
    routes = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"][0]["routes"]
    [route] = [r for r in routes if r["name"] == "fallback_demo-coder>demo-small"]
    assert route["match"]["headers"] == [{"name": "x-quorum-model", "string_match": {"exact": "demo-coder>demo-small"}}]
    retry = route["route"]["retry_policy"]
    assert retry["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    assert "retriable-status-codes" in retry["retry_on"] and retry["retriable_status_codes"] == [429]
    assert "fallback_demo-small__demo-coder" in clusters  # demo-small's own fallbacks
    [model_route] = [r for r in routes if r["name"] == "model_demo-coder"]
    # Routed like a model: its own timeout, not the cap on requests Quorum answers itself.
    assert route["route"]["max_stream_duration"] == model_route["route"]["max_stream_duration"]
    assert route["route"]["timeout"] == model_route["route"]["timeout"]


@pytest.mark.parametrize(
    ("opted_in", "authorization_removed"), [((), True), (("demo-small",), True), (("demo-small", "demo-coder"), False)]
)
def test_a_chain_route_forwards_client_credentials_only_if_every_model_takes_them(opted_in, authorization_removed):
    text = with_fallbacks(config_text())
    for name in opted_in:
        cluster = name.replace("demo-", "demo_")
        text = text.replace(f"cluster: {cluster}\n", f"cluster: {cluster}\n      forward_client_auth: true\n")
    routes = render(parse_config(text))["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    [route] = [r for r in routes if r["name"] == "fallback_demo-small>demo-coder"]
    removed = route.get("request_headers_to_remove", [])
    assert ("authorization" in removed) is authorization_removed
    assert ("x-api-key" in removed) is authorization_removed
