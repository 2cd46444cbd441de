"""StreamHandler phase by phase: ext_proc messages in, ext_proc messages out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from builders import body_msg, chat, chat_headers, config_text, error_of, exchange, headers_msg, set_headers
from opentelemetry import trace

from extproc.config import parse_config
from extproc.handler import StreamHandler
from extproc.pb import ep, pm
from extproc.route import RouteContext
from extproc.runtime import Runtime, build_runtime
from extproc.telemetry.metrics import Metrics
from extproc.telemetry.setup import Telemetry

SECRET = "sk-test-secret-value"


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return build_runtime(parse_config(config_text(max_body=4096)), environ={"QUORUM_TEST_LARGE_KEY": SECRET})


async def route(runtime: Runtime, body: dict, **headers: str) -> ep.ProcessingResponse:
    responses = await exchange(StreamHandler(runtime), chat_headers(**headers), body_msg(body))
    assert len(responses) == 2
    return responses[1]


@pytest.mark.parametrize(
    ("body", "headers", "model", "decision"),
    [
        (chat("why does my Python code fail"), {}, "demo-coder", "coding"),
        (chat("read the stack trace"), {}, "demo-coder", "coding"),
        (chat("hello"), {"x-user-tier": "gold"}, "demo-large", "premium"),
        (chat("see ticket ABC-123"), {}, "demo-large", "premium"),
        (chat("hello"), {}, "demo-small", "default"),
        (chat("python", model="auto"), {}, "demo-coder", "coding"),
        (chat("python and more", model="demo-small"), {}, "demo-small", "explicit"),
    ],
)
async def test_body_routes_to_decision_model(runtime, body, headers, model, decision):
    response = await route(runtime, body, **headers)
    assert response.WhichOneof("response") == "request_body"
    common = response.request_body.response
    assert common.clear_route_cache is True
    sent = set_headers(response)
    assert sent["x-quorum-model"] == model
    assert sent["x-quorum-decision"] == decision
    new_body = common.body_mutation.body
    assert orjson.loads(new_body)["model"] == runtime.models[model].upstream_model
    assert sent["content-length"] == str(len(new_body))
    assert orjson.loads(new_body)["messages"] == body["messages"]


async def test_priority_beats_lower_decision(runtime):
    # "python" matches coding (100) and a ticket id matches premium (150): premium wins.
    response = await route(runtime, chat("python bug ABC-9"))
    assert set_headers(response)["x-quorum-decision"] == "premium"


async def test_model_already_upstream_id_is_not_rewritten(runtime):
    cfg = parse_config(config_text().replace("provider_model_id: small-v1\n      ", ""))
    rt = build_runtime(cfg, environ={"QUORUM_TEST_LARGE_KEY": "k"})
    response = await route(rt, chat("hi", model="demo-small"))
    common = response.request_body.response
    assert not common.HasField("body_mutation")
    assert "content-length" not in set_headers(response)
    assert set_headers(response)["x-quorum-model"] == "demo-small"


async def test_api_key_from_environment_replaces_client_authorization(runtime):
    response = await route(runtime, chat("hello"), **{"x-user-tier": "gold", "authorization": "Bearer client"})
    assert set_headers(response)["authorization"] == f"Bearer {SECRET}"
    other = await route(runtime, chat("hello"))
    assert "authorization" not in set_headers(other)


async def test_client_internal_headers_are_removed_at_headers_phase(runtime):
    handler = StreamHandler(runtime)
    forged = chat_headers(**{"x-quorum-model": "demo-large", "x-quorum-decision": "x", "x-quorum-anything": "1"})
    [response] = await exchange(handler, forged)
    removed = set(response.request_headers.response.header_mutation.remove_headers)
    assert removed == {"x-quorum-model", "x-quorum-decision", "x-quorum-anything"}
    [routed] = await exchange(handler, body_msg(chat("hello")))
    assert set_headers(routed)["x-quorum-model"] == "demo-small"  # the forged value did not steer routing


async def test_header_phase_passes_clean_requests_without_mutation(runtime):
    [response] = await exchange(StreamHandler(runtime), chat_headers())
    assert response.WhichOneof("response") == "request_headers"
    assert not response.request_headers.response.header_mutation.remove_headers


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({":method": "GET", ":path": "/v1/chat/completions"}, 405, "method_not_allowed"),
        ({":method": "POST", ":path": "/v1/audio/speech"}, 404, "unknown_url"),
        ({":method": "POST", ":path": "/v1"}, 404, "unknown_url"),
        ({":method": "POST", ":path": "/v1/chat/completions/x"}, 404, "unknown_url"),  # exact paths only
        ({":method": "POST", ":path": "/v1/models"}, 405, "method_not_allowed"),
        ({":method": "GET", ":path": "/v1/models/nope"}, 404, "model_not_found"),
        ({":method": "POST", ":path": "/v1/chat/completions", "content-length": "5000"}, 413, "payload_too_large"),
    ],
)
async def test_header_phase_errors(runtime, headers, status, code):
    handler = StreamHandler(runtime)
    [response] = await exchange(handler, headers_msg({**headers, "x-request-id": "rid-7"}))
    got_status, error = error_of(response)
    assert (got_status, error["code"]) == (status, code)
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert set_headers(response)["x-request-id"] == "rid-7"
    assert handler.answered


async def test_empty_post_body_is_rejected_at_headers(runtime):
    [response] = await exchange(
        StreamHandler(runtime), headers_msg({":method": "POST", ":path": "/v1/chat/completions"}, end_of_stream=True)
    )
    assert error_of(response)[0] == 400


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, "invalid_json"),
        (orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), 400, "model", "missing_required_parameter"),
        (
            orjson.dumps({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}),
            400,
            "messages[0].role",
            "invalid_value",
        ),
        (orjson.dumps(chat("x", model="gpt-unknown")), 404, "model", "model_not_found"),
        (orjson.dumps(chat("x" * 5000)), 413, None, "payload_too_large"),
    ],
)
async def test_body_phase_errors(runtime, body, status, param, code):
    responses = await exchange(StreamHandler(runtime), chat_headers(), body_msg(body))
    got_status, error = error_of(responses[-1])
    assert (got_status, error["param"], error["code"]) == (status, param, code)


async def test_models_list_and_single_model(runtime):
    [response] = await exchange(StreamHandler(runtime), headers_msg({":method": "GET", ":path": "/v1/models?x=1"}))
    body = orjson.loads(response.immediate_response.body)
    assert response.immediate_response.status.code == 200
    ids = {m["id"] for m in body["data"]}
    assert ids == {"demo-small", "demo-coder", "demo-large", "quorum/auto", "auto", "quorum/fusion"}
    assert all(m["object"] == "model" for m in body["data"])
    [one] = await exchange(StreamHandler(runtime), headers_msg({":method": "GET", ":path": "/v1/models/quorum/auto"}))
    assert orjson.loads(one.immediate_response.body)["id"] == "quorum/auto"


async def test_non_openai_path_passes_through(runtime):
    handler = StreamHandler(runtime)
    responses = await exchange(handler, headers_msg({":method": "POST", ":path": "/healthz"}), body_msg(b"x"))
    assert [r.WhichOneof("response") for r in responses] == ["request_headers", "request_body"]
    assert not responses[1].request_body.HasField("response")


async def test_fusion_alias_without_fusion_match_is_400(runtime):
    responses = await exchange(StreamHandler(runtime), chat_headers(), body_msg(chat("hello", model="quorum/fusion")))
    status, error = error_of(responses[-1])
    assert (status, error["code"]) == (400, "no_fusion_decision")


async def test_fusion_decision_goes_to_the_fusion_runner(runtime):
    seen: list[RouteContext] = []

    async def runner(ctx: RouteContext) -> AsyncIterator[ep.ProcessingResponse]:
        seen.append(ctx)
        yield ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(body=b"fused"))

    handler = StreamHandler(runtime, local=runner)
    responses = await exchange(handler, chat_headers(), body_msg(chat("compare these two")))
    assert responses[-1].immediate_response.body == b"fused"
    assert seen[0].match.decision.name == "deliberate"
    assert seen[0].request_id == "req-1"
    assert handler.answered


async def test_internal_fault_is_a_500_with_request_id(runtime, caplog):
    class Exploding:
        def evaluate(self, chat, headers, features=None):
            raise RuntimeError("boom")

    from extproc.signals import SignalSet

    broken = build_runtime(parse_config(config_text()), environ={"QUORUM_TEST_LARGE_KEY": "k"})
    exploding = SignalSet([(("keyword", "code"), Exploding())])
    object.__setattr__(broken, "request_signals", {**broken.request_signals, "quorum/auto": exploding})
    responses = await exchange(StreamHandler(broken), chat_headers(), body_msg(chat("hi")))
    status, error = error_of(responses[-1])
    assert (status, error["type"]) == (500, "server_error")
    assert "boom" not in error["message"]  # internals stay in the log
    assert "req-1" in caplog.text and "boom" in caplog.text


@pytest.mark.parametrize("which", ["response_headers", "response_body", "request_trailers", "response_trailers"])
async def test_unexpected_phases_get_an_answer_of_their_own_kind(runtime, which):
    message = ep.ProcessingRequest(**{which: {}})
    [response] = await exchange(StreamHandler(runtime), message)
    assert response.WhichOneof("response") == which


def _response_body(data: bytes, end: bool) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_body=ep.HttpBody(body=data, end_of_stream=end))


@pytest.mark.parametrize("duplex", [False, True])
async def test_json_response_usage_is_read_once_even_when_the_body_arrives_in_pieces(duplex):
    rt = build_runtime(parse_config(config_text(usage="{enabled: true}")), environ={"QUORUM_TEST_LARGE_KEY": SECRET})
    handler = StreamHandler(rt)
    request_headers = chat_headers()
    if duplex:
        request_headers.protocol_config.request_body_mode = pm.ProcessingMode.FULL_DUPLEX_STREAMED
    await exchange(handler, request_headers, body_msg(chat("python")))
    json_headers = {":status": "200", "content-type": "application/json"}
    [answer] = await exchange(handler, headers_msg(json_headers, which="response_headers"))
    # Buffered mode asks Envoy for the whole body; duplex mode has it streamed already (see bootstrap).
    assert answer.HasField("mode_override") is not duplex
    body = orjson.dumps({"id": "x", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}})
    pieces = [body[:20], body[20:]] if duplex else [body]
    for i, piece in enumerate(pieces):
        await exchange(handler, _response_body(piece, end=i == len(pieces) - 1))
    assert (handler.recorder.usage_in, handler.recorder.usage_out) == (11, 7)


@pytest.mark.parametrize("completes", [True, False], ids=["complete", "cut_short"])
async def test_a_routed_answer_cut_short_is_recorded_as_incomplete(completes):
    """The backend died mid-answer: the stream ends without the body's end, and metrics say so."""
    rt = build_runtime(parse_config(config_text(usage="{enabled: true}")), environ={"QUORUM_TEST_LARGE_KEY": SECRET})
    metrics = Metrics()
    handler = StreamHandler(rt, telemetry=Telemetry(tracer=trace.NoOpTracer(), metrics=metrics, access_log=False))
    await exchange(handler, chat_headers(), body_msg(chat("python")))
    sse = {":status": "200", "content-type": "text/event-stream"}
    await exchange(handler, headers_msg(sse, which="response_headers"))
    await exchange(handler, _response_body(b'data: {"choices":[]}\n\n', end=completes))
    handler.recorder.finish(None if completes else ConnectionResetError())
    status = "200" if completes else "incomplete"
    labels = {"decision": "coding", "model": "demo-coder", "status": status}
    assert metrics.registry.get_sample_value("quorum_requests_total", labels) == 1
