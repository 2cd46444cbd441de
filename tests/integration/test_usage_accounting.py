"""Usage accounting of routed responses through a real Envoy: JSON and SSE, split frames, stripping."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import BODY_MODES, backend_requests, clear_backends, write_config

from extproc.dev.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=list(BODY_MODES))
def accounting_stack(request, tmp_path_factory) -> Iterator[Stack]:
    """Both body modes: buffered asks for each response body, duplex has them all streamed."""
    import os

    workdir = tmp_path_factory.mktemp(f"usage-{request.param}")
    path, _ = write_config(workdir, BODY_MODES[request.param], usage="{enabled: true, request_stream_usage: true}")
    os.environ["QUORUM_TEST_LARGE_KEY"] = "k"
    try:
        with Stack(path, workdir) as stack:
            yield stack
    finally:
        os.environ.pop("QUORUM_TEST_LARGE_KEY", None)


def tokens(stack: Stack, model: str) -> tuple[float, float]:
    port = int(stack.config.observability.metrics.listen.rsplit(":", 1)[1])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text

    def value(direction: str) -> float:
        m = re.search(rf'quorum_tokens_total{{direction="{direction}",model="{model}"}} (\S+)', text)
        return float(m.group(1)) if m else 0.0

    return value("input"), value("output")


def client_for(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)


def test_split_usage_frame_is_counted_once_and_stripped_for_a_client_that_did_not_ask(accounting_stack):
    clear_backends(accounting_stack)
    before = tokens(accounting_stack, "demo-coder")
    stream = client_for(accounting_stack).chat.completions.create(
        model="quorum/auto",
        stream=True,
        messages=[{"role": "user", "content": "python one two three [[fake:split_frames]]"}],
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[demo-coder] python one two three"
    assert all(c.usage is None for c in chunks)  # the usage chunk Quorum asked for was removed
    [record] = backend_requests(accounting_stack, "demo-coder")
    assert record["body"]["stream_options"] == {"include_usage": True}  # ... because Quorum asked for it
    reported = record["usage"]
    after = tokens(accounting_stack, "demo-coder")
    assert after[0] - before[0] == reported["prompt_tokens"]
    assert after[1] - before[1] == reported["completion_tokens"]


def test_client_that_asked_for_usage_gets_it_and_it_is_counted_once(accounting_stack):
    clear_backends(accounting_stack)
    before = tokens(accounting_stack, "demo-small")
    stream = client_for(accounting_stack).chat.completions.create(
        model="demo-small",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hello there [[fake:split_frames]]"}],
    )
    usage = [c.usage for c in stream if c.usage]
    assert len(usage) == 1
    after = tokens(accounting_stack, "demo-small")
    assert after[1] - before[1] == usage[0].completion_tokens
    assert after[0] - before[0] == usage[0].prompt_tokens


def test_json_response_usage_is_counted(accounting_stack):
    before = tokens(accounting_stack, "demo-large")
    completion = client_for(accounting_stack).chat.completions.create(
        model="demo-large", messages=[{"role": "user", "content": "a b c d"}]
    )
    after = tokens(accounting_stack, "demo-large")
    assert after[0] - before[0] == completion.usage.prompt_tokens
    assert after[1] - before[1] == completion.usage.completion_tokens
    port = int(accounting_stack.config.observability.metrics.listen.rsplit(":", 1)[1])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'quorum_requests_total{decision="explicit",model="demo-large",status="200"}' in text
