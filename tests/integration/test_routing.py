"""Routing through a real Envoy with the official openai SDK: the client never knows Quorum is there."""

from __future__ import annotations

import time

import openai
import pytest
from conftest import LARGE_KEY, MAX_BODY, backend_requests, clear_backends, metric_samples

from extproc.telemetry.metrics import STREAM_ENDS

pytestmark = pytest.mark.integration


def ask(client: openai.OpenAI, text: str, model: str = "quorum/auto", **kwargs):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kwargs
    )
    return raw.headers, raw.parse()


@pytest.mark.parametrize(
    ("text", "headers", "model", "decision"),
    [
        ("my python script prints a stack trace", {}, "demo-coder", "coding"),
        ("hello there", {"x-user-tier": "gold"}, "demo-large", "premium"),
        ("hello there", {}, "demo-small", "default"),
    ],
    ids=["keyword", "header", "default"],
)
def test_auto_routes(client, stack, text, headers, model, decision):
    got_headers, completion = ask(client, text, extra_headers=headers)
    assert got_headers["x-quorum-model"] == model
    assert got_headers["x-quorum-decision"] == decision
    assert got_headers["x-fake-backend"] == model  # the request really reached that backend
    assert completion.model == stack.config.model(model).upstream_model  # model rewritten for the backend
    assert completion.choices[0].message.content == f"[{model}] {text}"


@pytest.mark.parametrize("model", ["demo-small", "demo-coder", "demo-large"])
def test_explicit_model(client, stack, model):
    headers, completion = ask(client, "compare python and go", model=model)  # signals are not consulted
    assert headers["x-quorum-model"] == model
    assert headers["x-quorum-decision"] == "explicit"
    assert completion.model == stack.config.model(model).upstream_model


def test_forged_internal_headers_are_ignored(client, stack):
    clear_backends(stack)
    headers, _ = ask(client, "hello", extra_headers={"x-quorum-model": "demo-large", "x-quorum-decision": "forged"})
    assert headers["x-quorum-model"] == "demo-small"
    assert headers["x-quorum-decision"] == "default"
    [received] = backend_requests(stack, "demo-small")
    assert received["headers"]["x-quorum-model"] == "demo-small"
    assert received["headers"]["x-quorum-decision"] == "default"
    assert backend_requests(stack, "demo-large") == []


def test_provider_key_replaces_client_key_and_request_id_is_echoed(client, stack):
    clear_backends(stack)
    headers, _ = ask(client, "hello", extra_headers={"x-user-tier": "gold", "x-request-id": "trace-me-42"})
    assert headers["x-request-id"] == "trace-me-42"
    [received] = backend_requests(stack, "demo-large")
    assert received["headers"]["authorization"] == f"Bearer {LARGE_KEY}"
    assert received["headers"]["x-request-id"] == "trace-me-42"
    assert received["body"]["model"] == "large-v1"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        ask(client, "hi", model="gpt-9")
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.body["param"] == "model"


def test_schema_error_names_the_field(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="quorum/auto", messages=[{"role": "robot", "content": "x"}])
    assert info.value.body["param"] == "messages[0].role"
    assert info.value.body["type"] == "invalid_request_error"


def test_invalid_json_is_400(http):
    response = http.post(
        "/v1/chat/completions", content=b'{"model": "auto", "messages": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "invalid_json"


def test_body_over_limit_is_413_in_openai_shape(client):
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, "x" * (MAX_BODY + 10))
    assert info.value.status_code == 413
    assert info.value.body["code"] == "payload_too_large"


def test_chunked_body_over_envoy_buffer_is_413_in_openai_shape(http):
    def chunks():
        yield b'{"model": "quorum/auto", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 16384
        yield b'"}]}'

    response = http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"  # Envoy's own reply, typed by its status


def test_chunked_body_over_quorum_limit_but_within_envoy_buffer_is_413(http):
    body = b'{"model": "quorum/auto", "messages": [{"role": "user", "content": "' + b"z" * (MAX_BODY + 100) + b'"}]}'
    response = http.post("/v1/chat/completions", content=iter([body]), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_wrong_method_is_405(http):
    response = http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_v1_path_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.files.list()
    assert info.value.body["code"] == "unknown_url"


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert ids == {"demo-small", "demo-coder", "demo-large", "quorum/auto", "auto", "quorum/fusion"}
    assert client.models.retrieve("demo-coder").id == "demo-coder"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_streaming_reaches_the_client_chunk_by_chunk(client):
    words = "one two three four five six"
    stream = client.chat.completions.create(
        model="quorum/auto",
        messages=[{"role": "user", "content": f"python {words} [[fake:stream_delay_ms=60]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, text, usage = [], "", None
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == f"[demo-coder] python {words}"
    assert usage is not None and usage.completion_tokens == len(text.split())
    # The backend pauses 60 ms between ~10 frames: had anything buffered the stream, they would arrive together.
    assert len(arrivals) >= 8
    assert arrivals[-1] - arrivals[0] >= 0.3


def test_upstream_errors_pass_through(client):
    with pytest.raises(openai.RateLimitError):
        ask(client, "python [[fake:status=429]]")


def _stream_ends(stack) -> dict[str, float]:
    samples = metric_samples(stack)
    ends = {end: samples.get(f'quorum_extproc_streams_total{{end="{end}"}}', 0.0) for end in STREAM_ENDS}
    return ends | {"inflight": samples.get("quorum_inflight_streams", 0.0)}


def _settled_stream_ends(stack, at_least: float = 0.0) -> dict[str, float]:
    """The counters once no stream is open and `at_least` have ended (Envoy closes a stream just after
    the response it belongs to)."""
    deadline = time.monotonic() + 5
    while True:
        ends = _stream_ends(stack)
        if (ends["inflight"] == 0 and sum(ends[e] for e in STREAM_ENDS) >= at_least) or time.monotonic() > deadline:
            return ends
        time.sleep(0.05)


def test_envoy_closes_extproc_streams_instead_of_resetting_them(client, stack):
    # Envoy's default is to half-close a finished ext_proc stream and reset it at once; then some calls
    # never complete in grpcio's server (their memory is never given back: the soak benchmark's slope).
    # The rendered bootstrap turns on Envoy's graceful close: every call ends, none is cancelled.
    before = _settled_stream_ends(stack)
    for i in range(10):
        ask(client, f"hello there {i}")
        ask(client, f"hello {i}", model="demo-coder")
        chunks = client.chat.completions.create(
            model="quorum/auto", messages=[{"role": "user", "content": f"stream {i}"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ask(client, "compare these two options")  # fusion: Quorum answers and ends the stream itself
    ended_before = sum(before[e] for e in STREAM_ENDS)
    after = _settled_stream_ends(stack, at_least=ended_before + 31)
    assert sum(after[e] for e in STREAM_ENDS) - ended_before == 31
    assert after["quorum_closed"] - before["quorum_closed"] == 1
    assert after["reset"] == before["reset"]
