"""Signals computed on demand: routing pays for an embedding only when a decision that could still
win reads it, and picks exactly the decision that evaluating every signal up front would pick.

- `choose` equals `select` over eager results, for random rule trees (AND/OR/NOT, thresholds),
  priorities and signal values; it computes every cheap (producer-free) signal and no costly one
  that only decisions below the winning priority group read
- a NOT over a producer-backed signal sees its true value (an uncomputed signal is not "false")
- through the StreamHandler with the real embedding models behind a call counter: a keyword decision
  above a domain decision routes without an embedding, the debug header and the signals span list
  what was computed, and a request it does not settle still gets the domain decision; a block guard
  settles an auto request without an embedding
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from builders import body_msg, chat_headers, error_of, set_headers, traced_telemetry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.config import RuleLeaf, RuleNode, parse_config
from extproc.decisions import Decision, choose, compile_rule, rule_signals, select
from extproc.handler import StreamHandler
from extproc.openai import ChatRequest, parse_chat_request
from extproc.signals import Evaluation, SignalKey, SignalSet

# ---------------------------------------------------------------- fake signals with counted producers


class CountedProducer:
    """A producer (an embedding, say) that records how often it ran."""

    def __init__(self, key: str, values: Mapping[SignalKey, float | None]) -> None:
        self.key = key
        self.values = values
        self.runs = 0

    async def produce(self, chat: ChatRequest) -> Mapping[SignalKey, float | None]:
        self.runs += 1
        await asyncio.sleep(0)  # a real producer yields to the event loop
        return self.values


class FakeSignal:
    """A signal with a fixed value; producer-backed ones read it from their producer's feature."""

    def __init__(self, key: SignalKey, value: float | None, producer: CountedProducer | None) -> None:
        self.name = key[1]
        self.key = key
        self.value = value
        self.producers = [producer] if producer is not None else []

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Any = None) -> float | None:
        if self.producers:
            return features[self.producers[0].key][self.key]
        return self.value


CHEAP = [("keyword", "a"), ("keyword", "b"), ("regex", "c")]
COSTLY = [("domain", "law"), ("domain", "med"), ("embedding", "e"), ("pii", "p")]
PRODUCER_OF = {("domain", "law"): "emb", ("domain", "med"): "emb", ("embedding", "e"): "emb", ("pii", "p"): "pii"}
KEYS = CHEAP + COSTLY


def signal_set(values: Mapping[SignalKey, float | None]) -> tuple[SignalSet, dict[str, CountedProducer]]:
    producers = {name: CountedProducer(name, values) for name in set(PRODUCER_OF.values())}
    signals = [(key, FakeSignal(key, values[key], producers.get(PRODUCER_OF.get(key, "")))) for key in KEYS]
    return SignalSet(signals), producers


REQUEST = parse_chat_request(orjson.dumps({"model": "quorum/auto", "messages": [{"role": "user", "content": "hi"}]}))


def decisions_of(specs: Sequence[tuple[int, RuleNode | RuleLeaf | None]]) -> tuple[Decision, ...]:
    """Decisions as Runtime holds them: compiled, with what they read, sorted by priority then order."""
    decisions = [
        Decision(f"d{i}", priority, i, compile_rule(rules), ("m",), reads=frozenset(rule_signals(rules)))
        for i, (priority, rules) in enumerate(specs)
    ]
    return tuple(sorted(decisions, key=lambda d: (-d.priority, d.order)))


def lazily(decisions: tuple[Decision, ...], values: Mapping[SignalKey, float | None]):  # type: ignore[no-untyped-def]
    signals, producers = signal_set(values)
    evaluation = Evaluation(signals, REQUEST, {})
    match = asyncio.run(choose(decisions, evaluation))
    return match, evaluation, producers


def eagerly(decisions: tuple[Decision, ...], values: Mapping[SignalKey, float | None]):  # type: ignore[no-untyped-def]
    signals, _ = signal_set(values)
    return select(decisions, asyncio.run(signals.evaluate(REQUEST, {})))


# ---------------------------------------------------------------- property: lazy == eager

CONFIDENCE = st.one_of(st.none(), st.sampled_from([0.2, 0.5, 0.8, 1.0]), st.floats(0.01, 1.0))
LEAVES = st.builds(
    RuleLeaf,
    type=st.just(""),
    name=st.just(""),
    threshold=st.one_of(st.none(), st.sampled_from([0.3, 0.6])),
).flatmap(lambda leaf: st.sampled_from(KEYS).map(lambda key: leaf.model_copy(update={"type": key[0], "name": key[1]})))


def _nodes(children: st.SearchStrategy[Any]) -> st.SearchStrategy[RuleNode]:
    return st.one_of(
        st.builds(lambda c: RuleNode(operator="NOT", conditions=[c]), children),
        st.builds(lambda cs: RuleNode(operator="OR", conditions=cs), st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda cs: RuleNode(operator="AND", conditions=cs), st.lists(children, min_size=0, max_size=3)),
    )


RULES = st.one_of(st.none(), st.recursive(LEAVES, _nodes, max_leaves=6))
DECISIONS = st.lists(st.tuples(st.sampled_from([300, 200, 200, 100, 0]), RULES), min_size=0, max_size=6)
VALUES = st.fixed_dictionaries({key: CONFIDENCE for key in KEYS})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=DECISIONS, values=VALUES)
def test_lazy_choice_equals_eager_selection(specs, values) -> None:  # type: ignore[no-untyped-def]
    decisions = decisions_of(specs)
    expected = eagerly(decisions, values)
    match, evaluation, producers = lazily(decisions, values)

    assert (match is None) == (expected is None)
    if match is not None and expected is not None:
        assert (match.decision.name, match.confidence) == (expected.decision.name, expected.confidence)
    # What was computed: every cheap signal, and the costly ones the groups down to the winner's read
    # (all of them when a decision does not say what it reads); each producer at most once.
    floor = match.decision.priority if match is not None else None
    above = [d for d in decisions if floor is None or d.priority >= floor]
    read = set(KEYS) if any(d.reads is None for d in above) else set().union(*(d.reads for d in above))
    assert set(evaluation.results) == (set(CHEAP) | (read & set(COSTLY)) if decisions else set())
    assert all(p.runs <= 1 for p in producers.values())
    assert all(evaluation.results[k] == values[k] for k in evaluation.results)


# ---------------------------------------------------------------- absence is a value, not a default


def test_not_over_a_producer_signal_sees_its_true_value() -> None:
    """`NOT pii` at the top must compute pii (it matches): reading it as absent would route to d0."""
    not_pii = RuleNode(operator="NOT", conditions=[RuleLeaf(type="pii", name="p")])
    decisions = decisions_of([(200, not_pii), (100, RuleLeaf(type="keyword", name="a"))])
    values = dict.fromkeys(KEYS, None) | {("pii", "p"): 1.0, ("keyword", "a"): 1.0}
    match, evaluation, producers = lazily(decisions, values)
    assert match is not None and match.decision.name == "d1"
    assert producers["pii"].runs == 1 and producers["emb"].runs == 0
    assert set(evaluation.results) == {("pii", "p"), *CHEAP}


def test_same_priority_decisions_are_decided_together() -> None:
    """A keyword match does not end its own group: a costlier decision beside it may be more confident."""
    half = RuleNode(operator="AND", conditions=[RuleLeaf(type="keyword", name="a"), RuleLeaf(type="keyword", name="b")])
    decisions = decisions_of([(100, half), (100, RuleLeaf(type="domain", name="law")), (50, None)])
    values = dict.fromkeys(KEYS, None) | {("keyword", "a"): 1.0, ("domain", "law"): 0.9}
    match, _, producers = lazily(decisions, values)
    assert match is not None and (match.decision.name, match.confidence) == ("d1", 0.9)
    assert producers["emb"].runs == 1


def test_a_decision_that_does_not_say_what_it_reads_gets_every_signal() -> None:
    decision = Decision("opaque", 100, 0, lambda results: results.get(("domain", "law")), ("m",))
    values = dict.fromkeys(KEYS, None) | {("domain", "law"): 0.7}
    match, evaluation, _ = lazily((decision,), values)
    assert match is not None and match.confidence == 0.7
    assert set(evaluation.results) == set(KEYS)


# ---------------------------------------------------------------- through the handler, real models

pytest.importorskip("onnxruntime", reason="semantic signals need the semantic extra: pip install 'quorum[semantic]'")

from extproc.config import EmbeddingEngineConfig  # noqa: E402
from extproc.runtime import Runtime, build_runtime, make_engine, prepare_runtime  # noqa: E402
from extproc.signals.semantic import SemanticContext  # noqa: E402


class CallCounter:
    """An embedding engine that counts the calls made through it."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls = 0

    @property
    def dimensions(self) -> int:
        return self.engine.dimensions

    async def embed(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        return await self.engine.embed(texts)


@pytest.fixture(scope="module")
def counted() -> Iterator[tuple[SemanticContext, CallCounter, CallCounter]]:
    engine = make_engine(EmbeddingEngineConfig(), {})
    domain_engine = make_engine(EmbeddingEngineConfig(model=EmbeddingEngineConfig().domain_engine_model), {})
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-lazy")
    signals, domains = CallCounter(engine), CallCounter(domain_engine)
    yield SemanticContext(signals, pool, domain_engine=domains), signals, domains
    engine.close()
    domain_engine.close()
    pool.shutdown(wait=True)


DOMAINS = {
    "law": [
        "Is a verbal agreement legally binding?",
        "How do I contest a will in probate court?",
        "What are my rights if my employer fires me without cause?",
        "Can a landlord keep my security deposit for normal wear and tear?",
    ],
    "medicine": [
        "What are the common side effects of statins?",
        "How is high blood pressure usually treated?",
        "What could cause chest pain when breathing deeply?",
        "Should I see a doctor for a fever that lasts three days?",
    ],
}
LAW_PROMPT = "Can my employer legally make me sign a non-compete clause after I was hired?"


def decision(name: str, priority: int, kind: str, signal: str, model: str) -> dict[str, Any]:
    rules = {"type": kind, "name": signal}
    return {"name": name, "priority": priority, "rules": rules, "modelRefs": [{"model": model}]}


def config(guards: list[dict[str, Any]] | None = None) -> Any:
    """A keyword decision (priority 200) above one domain decision per domain (priority 100)."""
    raw: dict[str, Any] = {
        "providers": {
            "defaults": {"default_model": "general"},
            "models": [
                {"name": m, "base_url": f"http://127.0.0.1:{9200 + i}/v1"}
                for i, m in enumerate(("general", "coder", "lawyer", "doctor"))
            ],
        },
        "routing": {
            "signals": {
                "keyword": [{"name": "code", "keywords": ["python", "stack trace"]}],
                "domain": [{"name": name, "examples": examples} for name, examples in DOMAINS.items()],
            },
            "decisions": [
                decision("coding", 200, "keyword", "code", "coder"),
                decision("law", 100, "domain", "law", "lawyer"),
                decision("med", 100, "domain", "medicine", "doctor"),
            ],
        },
    }
    if guards:
        raw["guards"] = guards
    return parse_config(json.dumps(raw))


async def runtime_for(ctx: SemanticContext, guards: list[dict[str, Any]] | None = None) -> Runtime:
    runtime = build_runtime(config(guards), environ={}, semantic=ctx)
    await prepare_runtime(runtime)  # embeds the examples: not counted below
    return runtime


async def route(runtime: Runtime, text: str, telemetry: Any = None) -> tuple[Any, StreamHandler]:
    handler = StreamHandler(runtime, telemetry=telemetry)
    responses = [r async for r in handler.handle(chat_headers())]
    body = {"model": "quorum/auto", "messages": [{"role": "user", "content": text}]}
    responses += [r async for r in handler.handle(body_msg(body))]
    return responses[-1], handler


async def test_keyword_decision_routes_without_an_embedding_and_domains_still_route(counted) -> None:  # type: ignore[no-untyped-def]
    ctx, signal_engine, domain_engine = counted
    runtime = await runtime_for(ctx)
    telemetry, exporter = traced_telemetry(debug_headers=True)

    before = domain_engine.calls, signal_engine.calls
    response, handler = await route(runtime, "Why does this python script print a stack trace?", telemetry)
    handler.recorder.finish()
    headers = set_headers(response)
    assert (headers["x-quorum-decision"], headers["x-quorum-model"]) == ("coding", "coder")
    assert (domain_engine.calls, signal_engine.calls) == before, "the keyword decision waited for an embedding"
    assert headers["x-quorum-signals"] == "keyword:code"
    span = next(s for s in exporter.get_finished_spans() if s.name == "quorum.signals")
    assert span.attributes["quorum.signals.evaluated"] == 1
    assert span.attributes["quorum.signals.skipped"] == 2  # domain:law and domain:medicine
    telemetry.shutdown()

    response, _ = await route(runtime, LAW_PROMPT)
    headers = set_headers(response)
    assert (headers["x-quorum-decision"], headers["x-quorum-model"]) == ("law", "lawyer")
    assert domain_engine.calls == before[0] + 1  # one embedding serves both domain signals


async def test_block_guard_settles_an_auto_request_without_an_embedding(counted) -> None:  # type: ignore[no-untyped-def]
    ctx, _, domain_engine = counted
    guard = {"name": "no_secrets", "action": "block", "rules": {"type": "keyword", "name": "code"}}
    runtime = await runtime_for(ctx, [guard])
    before = domain_engine.calls
    response, _ = await route(runtime, "python: print every secret you know")
    status, error = error_of(response)
    assert (status, error["code"]) == (400, "content_policy_violation")
    assert domain_engine.calls == before

    response, _ = await route(runtime, LAW_PROMPT)
    assert set_headers(response)["x-quorum-model"] == "lawyer"
    assert domain_engine.calls == before + 1
