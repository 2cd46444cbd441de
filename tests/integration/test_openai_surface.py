"""The rest of the OpenAI surface through a real Envoy with the official openai SDK: Responses,
legacy completions, embeddings, `models.retrieve` of an alias, and their usage accounting."""

from __future__ import annotations

import openai
import pytest
from conftest import backend_requests, clear_backends
from test_usage_accounting import accounting_stack, client_for, tokens  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration


def test_responses_routed_by_decision(client, stack):
    clear_backends(stack)
    raw = client.responses.with_raw_response.create(
        model="quorum/auto", input="my python code fails", instructions="be brief", extra_body={"x_vendor": 1}
    )
    response = raw.parse()
    assert raw.headers["x-quorum-model"] == "demo-coder"
    assert raw.headers["x-quorum-decision"] == "coding"
    assert response.output_text == "[demo-coder] my python code fails"
    assert response.model == "coder-v1"
    [seen] = backend_requests(stack, "demo-coder")
    assert seen["path"] == "/v1/responses"
    assert seen["body"]["model"] == "coder-v1"  # rewritten for the backend...
    assert seen["body"]["x_vendor"] == 1 and seen["body"]["instructions"] == "be brief"  # ...nothing else


def test_responses_stream_routed(client, stack):
    events = list(
        client.responses.create(model="quorum/auto", input=[{"role": "user", "content": "hello"}], stream=True)
    )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "[demo-small] hello"
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.input_tokens > 0


def test_responses_bad_input_is_an_openai_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="quorum/auto", input=[{"role": "robot", "content": "x"}])
    assert info.value.body["param"] == "input[0].role"
    assert info.value.body["type"] == "invalid_request_error"


def test_completions_routed_json_and_stream(client, stack):
    raw = client.completions.with_raw_response.create(model="quorum/auto", prompt="python: print(1)")
    assert raw.headers["x-quorum-model"] == "demo-coder"
    assert raw.parse().choices[0].text == "[demo-coder] python: print(1)"
    chunks = list(client.completions.create(model="demo-small", prompt="hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "[demo-small] hi"


def test_embeddings_routed_by_explicit_model(client, stack):
    clear_backends(stack)
    raw = client.embeddings.with_raw_response.create(model="demo-coder", input=["a", "b"])
    result = raw.parse()
    assert raw.headers["x-quorum-model"] == "demo-coder"
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8
    [seen] = backend_requests(stack, "demo-coder")
    assert seen["body"]["model"] == "coder-v1"


def test_embeddings_with_an_alias_are_refused(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="quorum/auto", input="x")
    assert (info.value.body["code"], info.value.body["param"]) == ("model_required", "model")


def test_retrieve_an_alias_with_a_slash(client):
    """The SDK sends /v1/models/quorum%2Fauto; Quorum decodes the path segment."""
    assert client.models.retrieve("quorum/auto").id == "quorum/auto"
    assert client.models.retrieve("quorum/fusion").owned_by == "quorum-fusion"


def test_responses_usage_is_counted_json_and_stream(accounting_stack):  # noqa: F811
    client = client_for(accounting_stack)
    before = tokens(accounting_stack, "demo-large")
    response = client.responses.create(model="demo-large", input="a b c")
    middle = tokens(accounting_stack, "demo-large")
    assert middle[0] - before[0] == response.usage.input_tokens
    assert middle[1] - before[1] == response.usage.output_tokens
    events = list(client.responses.create(model="demo-large", input="a b c d e", stream=True))
    usage = events[-1].response.usage
    after = tokens(accounting_stack, "demo-large")
    assert (after[0] - middle[0], after[1] - middle[1]) == (usage.input_tokens, usage.output_tokens)


def test_embeddings_and_completions_usage_is_counted(accounting_stack):  # noqa: F811
    client = client_for(accounting_stack)
    clear_backends(accounting_stack)
    before = tokens(accounting_stack, "demo-small")
    embedded = client.embeddings.create(model="demo-small", input="some words here")
    middle = tokens(accounting_stack, "demo-small")
    assert (middle[0] - before[0], middle[1] - before[1]) == (embedded.usage.prompt_tokens, 0)
    chunks = list(client.completions.create(model="demo-small", prompt="x y", stream=True))
    assert all(c.usage is None for c in chunks)  # asked for by Quorum, stripped for the client
    record = backend_requests(accounting_stack, "demo-small")[-1]
    assert record["body"]["stream_options"] == {"include_usage": True}
    after = tokens(accounting_stack, "demo-small")
    expected = record["usage"]
    assert (after[0] - middle[0], after[1] - middle[1]) == (expected["prompt_tokens"], expected["completion_tokens"])


def test_n_on_a_fusion_answer_is_a_400_naming_n(client, stack):
    clear_backends(stack)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="quorum/auto", n=2, messages=[{"role": "user", "content": "compare x"}])
    assert info.value.body["param"] == "n"
    assert all(backend_requests(stack, m) == [] for m in ("demo-small", "demo-coder", "demo-large"))


def test_a_plugin_that_cannot_take_effect_is_a_400_naming_it(client, stack):
    clear_backends(stack)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="quorum/auto",
            messages=[{"role": "user", "content": "hello"}],
            extra_body={"plugins": [{"id": "fusion", "analysis_models": ["not-configured"]}]},
        )
    assert (info.value.body["param"], info.value.body["code"]) == ("plugins[0]", "plugin_not_applicable")
    assert backend_requests(stack, "demo-small") == []  # not silently answered by one model


# ---------------------------------------------------------------- Responses answered by fusion

PANEL = ("demo-small", "demo-coder")


def test_responses_fused_json(client, stack):
    clear_backends(stack)
    raw = client.responses.with_raw_response.create(
        model="quorum/auto", input="compare cats and dogs", instructions="be fair"
    )
    response = raw.parse()
    assert raw.headers["x-quorum-decision"] == "deliberate"
    assert response.object == "response" and response.status == "completed"
    assert response.output_text.startswith("[demo-large]")  # the judge's synthesis
    assert response.model == "quorum/auto"
    body = raw.http_response.json()
    assert [r["model"] for r in body["fusion"]["responses"]] == list(PANEL)
    reported = sum(
        r.get("usage", {}).get("prompt_tokens", 0) for m in (*PANEL, "demo-large") for r in backend_requests(stack, m)
    )
    assert response.usage.input_tokens == reported  # every call of the run, in Responses names
    panel_call = backend_requests(stack, "demo-small")[0]
    assert panel_call["path"] == "/v1/chat/completions"  # the run calls models in chat format...
    assert panel_call["body"]["messages"][0] == {"role": "system", "content": "be fair"}  # ...with the instructions


def test_responses_fused_stream(client):
    events = list(client.responses.create(model="quorum/auto", input="compare a and b", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("[demo-large]")
    done = events[-1].response
    assert done.output_text == text
    assert done.usage.total_tokens > 0
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_previous_response_id_cannot_be_fused(client, stack):
    clear_backends(stack)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="quorum/auto", input="compare a and b", previous_response_id="resp_123")
    assert info.value.body["param"] == "previous_response_id"
    assert "provider" in info.value.body["message"]
    assert all(backend_requests(stack, m) == [] for m in (*PANEL, "demo-large"))
    # routed to one model, the backend that holds the state judges it: passed through untouched
    client.responses.create(model="demo-small", input="hi", previous_response_id="resp_123")
    assert backend_requests(stack, "demo-small")[-1]["body"]["previous_response_id"] == "resp_123"
