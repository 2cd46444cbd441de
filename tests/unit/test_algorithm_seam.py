"""The algorithm seam: an algorithm defined here registers and is served without edits to the handler."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from builders import answer_locally, chat, config_text, runtime_with_decision, set_headers, sse_events
from fakes import FakeModelClient

from extproc.algorithms import ALGORITHMS, Answer, Run, RunContext, register
from extproc.config import ConfigError, Strict, parse_config
from extproc.modeltypes import RetryPolicy


class ShoutSettings(Strict):
    model: str
    suffix: str = "!"


class Shout:
    """Asks one model, then answers with its reply upper-cased: one stage, one model call."""

    name = "shout"
    answers_locally = True
    budget = 5.0
    heartbeat_interval = 1.0

    def __init__(self, settings: ShoutSettings) -> None:
        self.settings = settings

    def start(self, ctx: RunContext) -> Run:
        return Run(self.settings.model, lambda: self.answer(ctx), {"x-quorum-shout": "yes"})

    async def answer(self, ctx: RunContext) -> Answer:
        model = ctx.runtime.models[self.settings.model]
        with ctx.trace.stage("shout", "quorum.shout"):
            reply = await ctx.client.complete(
                model, ctx.body, time_limit=5, retry=RetryPolicy(), headers=ctx.call_headers
            )
        ctx.trace.completed("shout", reply)
        ctx.trace.fields["suffix"] = self.settings.suffix
        return Answer({"role": "assistant", "content": reply.content.upper() + self.settings.suffix})


@pytest.fixture(autouse=True, scope="module")
def shout_registered():
    register("shout", ShoutSettings)(lambda settings, decision: Shout(settings))
    yield
    del ALGORITHMS["shout"]


def config_with(algorithm: dict[str, Any]) -> str:
    raw = yaml.safe_load(config_text())
    rules = {"operator": "AND", "conditions": [{"type": "keyword", "name": "compare"}]}
    raw["routing"]["decisions"].append({"name": "shouting", "priority": 300, "rules": rules, "algorithm": algorithm})
    return yaml.safe_dump(raw)


def runtime_with(algorithm: dict[str, Any]):
    return runtime_with_decision({"name": "shouting", "algorithm": algorithm})


@pytest.mark.parametrize("duplex", [False, True])
async def test_a_registered_algorithm_is_served_through_the_handler(duplex):
    runtime = runtime_with({"type": "shout", "shout": {"model": "demo-coder", "suffix": "!!"}})
    fake = FakeModelClient(replies={"demo-coder": "quiet words"})
    handler, out = await answer_locally(runtime, fake, chat("please compare these"), duplex)
    answer = out[-1]
    assert answer.WhichOneof("response") == "immediate_response"
    body = orjson.loads(answer.immediate_response.body)
    assert body["choices"][0]["message"]["content"] == "QUIET WORDS!!"
    trace = body["shout"]  # the trace sits under the algorithm's name
    assert trace["decision"] == "shouting" and trace["suffix"] == "!!"
    assert [(s["stage"], s["model"], s["outcome"]) for s in trace["stages"]] == [("shout", "demo-coder", "ok")]
    assert "shout" in trace["latency_ms"]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}  # the one call
    sent = set_headers(answer)
    assert sent["x-quorum-shout"] == "yes" and sent["x-quorum-decision"] == "shouting"
    assert [c.model for c in fake.calls] == ["demo-coder"]
    assert fake.calls[0].headers == {"x-request-id": "req-1"}
    assert handler.recorder.kind == "shout" and handler.recorder.model == "demo-coder"


async def test_the_fusion_alias_selects_among_every_locally_answered_decision():
    runtime = runtime_with({"type": "shout", "shout": {"model": "demo-small"}})
    assert [d.name for d in runtime.local_decisions] == ["shouting", "deliberate"]
    fake = FakeModelClient(replies={"demo-small": "hi"})
    _, out = await answer_locally(runtime, fake, chat("compare", model="quorum/fusion"))
    assert orjson.loads(out[-1].immediate_response.body)["choices"][0]["message"]["content"] == "HI!"


def test_settings_of_a_registered_algorithm_are_validated_with_its_own_model():
    [problem] = problems_of({"type": "shout", "shout": {"suffix": "?"}})
    assert "routing.decisions[3].algorithm.shout.model: Field required" in problem


def problems_of(algorithm: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(config_with(algorithm))
    return info.value.problems


def test_unknown_algorithm_and_stray_sections_are_config_problems():
    [problem] = problems_of({"type": "ponder"})
    assert "algorithm.type: unknown algorithm 'ponder'" in problem and "fusion, shout, static" in problem
    [problem] = problems_of({"type": "shout", "shout": {"model": "demo-small"}, "fusion": {}})
    assert problem.endswith("algorithm.fusion: only allowed when algorithm.type is fusion")


async def test_a_registered_algorithm_streams_in_duplex_mode_with_its_trace_last():
    runtime = runtime_with({"type": "shout", "shout": {"model": "demo-coder"}})
    body = chat("compare", stream=True, stream_options={"include_usage": True})
    _, out = await answer_locally(runtime, FakeModelClient(replies={"demo-coder": "a b"}), body, duplex=True)
    assert out[0].streamed_immediate_response.WhichOneof("response") == "headers_response"
    events = sse_events(out)
    sse = b"".join(r.streamed_immediate_response.body_response.body for r in out).decode()
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "A B!"
    assert events[-2]["shout"]["stages"][0]["model"] == "demo-coder"
    assert events[-1]["usage"]["total_tokens"] == 15 and sse.endswith("data: [DONE]\n\n")
