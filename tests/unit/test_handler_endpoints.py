"""The handler with every endpoint processor: what routes, what is refused, and with which error."""

from __future__ import annotations

import orjson
import pytest
from builders import body_msg, config_text, headers_msg, set_headers
from test_handler import error_of, exchange

from extproc.config import parse_config
from extproc.handler import StreamHandler
from extproc.runtime import Runtime, build_runtime

ENV = {"QUORUM_TEST_LARGE_KEY": "k"}


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    # demo-large serves chat and responses only.
    text = config_text().replace(
        "api_key_env: QUORUM_TEST_LARGE_KEY", "api_key_env: QUORUM_TEST_LARGE_KEY\n      endpoints: [chat, responses]"
    )
    return build_runtime(parse_config(text), environ=ENV)


def post(path: str) -> object:
    return headers_msg({":method": "POST", ":path": path, "content-type": "application/json", "x-request-id": "r"})


async def send(runtime: Runtime, path: str, body: dict) -> list:
    return await exchange(StreamHandler(runtime), post(path), body_msg(body))


@pytest.mark.parametrize(
    ("path", "body", "model", "decision"),
    [
        ("/v1/responses", {"model": "quorum/auto", "input": "fix my python"}, "demo-coder", "coding"),
        (
            "/v1/responses",
            {"model": "quorum/auto", "input": [{"role": "user", "content": "hello"}]},
            "demo-small",
            "default",
        ),
        ("/v1/responses", {"model": "demo-large", "input": "x", "stream": True}, "demo-large", "explicit"),
        ("/v1/completions", {"model": "quorum/auto", "prompt": "def f(): # python"}, "demo-coder", "coding"),
        ("/v1/completions", {"model": "demo-small", "prompt": [1, 2]}, "demo-small", "explicit"),
        ("/v1/embeddings", {"model": "demo-coder", "input": ["a", "b"]}, "demo-coder", "explicit"),
    ],
)
async def test_endpoints_route_like_chat(runtime, path, body, model, decision):
    responses = await send(runtime, path, body)
    assert [r.WhichOneof("response") for r in responses] == ["request_headers", "request_body"]
    common = responses[1].request_body.response
    assert common.clear_route_cache
    sent = set_headers(responses[1])
    assert (sent["x-quorum-model"], sent["x-quorum-decision"]) == (model, decision)
    new_body = orjson.loads(common.body_mutation.body)
    assert new_body == {**body, "model": runtime.models[model].upstream_model}


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        # embeddings are never chosen by a decision: the vector space is the client's choice
        ("/v1/embeddings", {"model": "quorum/auto", "input": "x"}, 400, "model_required"),
        ("/v1/embeddings", {"model": "quorum/fusion", "input": "x"}, 400, "model_required"),
        # a model configured without the endpoint
        ("/v1/embeddings", {"model": "demo-large", "input": "x"}, 404, "model_not_found"),
        ("/v1/completions", {"model": "demo-large", "prompt": "x"}, 404, "model_not_found"),
        # ... also when a decision picks it (premium routes to demo-large)
        ("/v1/completions", {"model": "quorum/auto", "prompt": "ticket ABC-1"}, 404, "model_not_found"),
        ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "model_not_found"),
        # a fusion decision cannot answer in the legacy completions format
        ("/v1/completions", {"model": "quorum/auto", "prompt": "compare a and b"}, 400, "fusion_unsupported_endpoint"),
        ("/v1/responses", {"model": "quorum/auto"}, 400, "missing_required_parameter"),
    ],
)
async def test_endpoint_refusals_are_openai_errors(runtime, path, body, status, code):
    responses = await send(runtime, path, body)
    got, err = error_of(responses[-1])
    assert (got, err["code"], err["param"]) == (
        status,
        code,
        "model" if code != "missing_required_parameter" else "input",
    )
    assert err["type"] == "invalid_request_error"


async def test_model_id_in_the_path_is_url_decoded(runtime):
    """The openai SDK sends `client.models.retrieve("quorum/auto")` as /v1/models/quorum%2Fauto."""
    [one] = await exchange(StreamHandler(runtime), headers_msg({":method": "GET", ":path": "/v1/models/quorum%2Fauto"}))
    assert one.immediate_response.status.code == 200
    assert orjson.loads(one.immediate_response.body)["id"] == "quorum/auto"


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("path", ["/v1/responses", "/v1/embeddings", "/v1/completions"])
async def test_endpoints_take_post_only(runtime, path, method):
    [response] = await exchange(StreamHandler(runtime), headers_msg({":method": method, ":path": path}))
    assert error_of(response)[0] == 405


FUSION = {"id": "fusion", "analysis_models": ["demo-small", "demo-coder"]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        # the fusion plugin cannot act on a request routed to one model (by decision, default or name)
        ({"model": "quorum/auto", "plugins": [FUSION]}, "plugins[0]"),
        ({"model": "demo-small", "plugins": [{"id": "web"}, FUSION]}, "plugins[1]"),
        # a fusion answer cannot honour another plugin, nor n > 1
        ({"model": "quorum/fusion", "plugins": [FUSION, {"id": "web"}]}, "plugins[1]"),
        ({"model": "quorum/auto", "n": 2, "messages": [{"role": "user", "content": "compare a and b"}]}, "n"),
        ({"model": "quorum/fusion", "n": 3, "plugins": [FUSION]}, "n"),
        ({"model": "quorum/auto", "plugins": "fusion"}, "plugins"),
        ({"model": "quorum/auto", "plugins": [3]}, "plugins[0].id"),
    ],
)
async def test_what_cannot_take_effect_is_a_400_naming_it(runtime, body, param):
    body = {"messages": [{"role": "user", "content": "hello"}], **body}
    got, err = error_of((await send(runtime, "/v1/chat/completions", body))[-1])
    assert (got, err["param"]) == (400, param)


@pytest.mark.parametrize(
    "extra", [{"n": 2}, {"plugins": [{"id": "web", "max_results": 2}]}, {"x_vendor": {"a": [1, None]}}]
)
async def test_routed_requests_keep_what_the_backend_judges(runtime, extra):
    body = {"model": "quorum/auto", "messages": [{"role": "user", "content": "hello"}], **extra}
    responses = await send(runtime, "/v1/chat/completions", body)
    assert responses[-1].WhichOneof("response") == "request_body"
    assert orjson.loads(responses[-1].request_body.response.body_mutation.body) == {**body, "model": "small-v1"}
