"""Decisions: rule-tree confidence, selection by priority / confidence / file order, fusion lists."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc.config import FusionConfig, load_config, parse_config
from extproc.decisions import Decision, select
from extproc.openai import parse_chat_request
from extproc.runtime import Runtime, build_runtime
from extproc.signals import SignalResults

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
SIGNALS = ("a", "b", "c", "d")


def leaf(name: str) -> dict[str, str]:
    return {"type": "keyword", "name": name}


def AND(*conditions: Any) -> dict[str, Any]:
    return {"operator": "AND", "conditions": list(conditions)}


def OR(*conditions: Any) -> dict[str, Any]:
    return {"operator": "OR", "conditions": list(conditions)}


def NOT(condition: Any) -> dict[str, Any]:
    return {"operator": "NOT", "conditions": [condition]}


def results(**confidences: float | None) -> SignalResults:
    return {("keyword", name): conf for name, conf in confidences.items()}


def runtime_for(*decisions: dict[str, Any]) -> Runtime:
    """A runtime whose decisions are `decisions` (name, rules, priority, ...) over keyword signals a..d."""
    raw = {
        "providers": {
            "models": [
                {"name": "m1", "base_url": "http://127.0.0.1:9001/v1"},
                {"name": "m2", "base_url": "http://127.0.0.1:9002/v1"},
                {"name": "m3", "base_url": "http://127.0.0.1:9003/v1"},
            ]
        },
        "routing": {
            "signals": {"keyword": [{"name": n, "keywords": [n]} for n in SIGNALS]},
            "decisions": [{"modelRefs": [{"model": "m1"}], **d} for d in decisions],
        },
    }
    return build_runtime(parse_config(json.dumps(raw)), environ={})


def winner(runtime: Runtime, res: SignalResults) -> tuple[str, float] | None:
    match = select(runtime.decisions, res)
    return None if match is None else (match.decision.name, match.confidence)


# ---------------------------------------------------------------- confidence of one rule tree


@pytest.mark.parametrize(
    ("rules", "res", "expected"),
    [
        pytest.param(leaf("a"), results(a=0.7), 0.7, id="leaf"),
        pytest.param(leaf("a"), results(a=None), None, id="leaf-no-match"),
        pytest.param(leaf("a"), results(b=1.0), None, id="leaf-not-evaluated"),
        pytest.param(AND(leaf("a"), leaf("b")), results(a=1.0, b=0.5), 0.75, id="and-mean"),
        pytest.param(AND(leaf("a"), leaf("b"), leaf("c")), results(a=0.3, b=0.6, c=0.9), 0.6, id="and-mean-of-3"),
        pytest.param(AND(leaf("a"), leaf("b")), results(a=1.0, b=None), None, id="and-one-missing"),
        pytest.param(AND(leaf("a")), results(a=0.4), 0.4, id="and-single"),
        pytest.param(OR(leaf("a"), leaf("b")), results(a=0.3, b=0.8), 0.8, id="or-max"),
        pytest.param(OR(leaf("a"), leaf("b")), results(a=0.9, b=0.2), 0.9, id="or-max-first"),
        pytest.param(OR(leaf("a"), leaf("b")), results(a=None, b=0.4), 0.4, id="or-one"),
        pytest.param(OR(leaf("a"), leaf("b")), results(a=None, b=None), None, id="or-none"),
        pytest.param(NOT(leaf("a")), results(a=None), 1.0, id="not-unmatched"),
        pytest.param(NOT(leaf("a")), results(a=0.2), None, id="not-matched"),
        pytest.param(NOT(NOT(leaf("a"))), results(a=0.2), 1.0, id="not-not"),
        pytest.param(NOT(AND()), results(), None, id="not-catch-all"),
        pytest.param(
            AND(OR(leaf("a"), leaf("b")), NOT(leaf("c"))), results(a=0.4, b=0.6, c=None), 0.8, id="and-or-not"
        ),
        pytest.param(
            AND(OR(leaf("a"), leaf("b")), NOT(leaf("c"))), results(a=0.4, b=0.6, c=1.0), None, id="and-or-not-c"
        ),
        pytest.param(OR(AND(leaf("a"), leaf("b")), leaf("c")), results(a=1.0, b=0.5, c=0.6), 0.75, id="or-of-and"),
        pytest.param(OR(AND(leaf("a"), leaf("b")), leaf("c")), results(a=1.0, b=None, c=0.6), 0.6, id="or-of-and-miss"),
        pytest.param(
            AND(OR(leaf("a"), AND(leaf("b"), NOT(leaf("d")))), leaf("c")),
            results(a=None, b=0.5, c=0.5, d=None),
            0.625,  # mean(OR(None, mean(0.5, 1.0)), 0.5) = mean(0.75, 0.5)
            id="deep",
        ),
        pytest.param(AND(), results(), 0.0, id="empty-and-catch-all"),
        pytest.param(AND(), results(a=None, b=1.0), 0.0, id="empty-and-ignores-signals"),
        pytest.param(OR(AND(), leaf("a")), results(a=None), 0.0, id="or-with-catch-all"),
        pytest.param(AND(AND(), leaf("a")), results(a=0.8), 0.4, id="empty-and-counts-as-zero-in-and"),
    ],
)
def test_rule_confidence(rules: dict[str, Any], res: SignalResults, expected: float | None) -> None:
    runtime = runtime_for({"name": "only", "rules": rules})
    got = winner(runtime, res)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got[0] == "only"
        assert got[1] == pytest.approx(expected)


def test_no_rules_is_a_catch_all_with_confidence_zero() -> None:
    runtime = runtime_for({"name": "fallback"})
    assert winner(runtime, {}) == ("fallback", 0.0)
    assert winner(runtime, results(a=1.0)) == ("fallback", 0.0)


# ---------------------------------------------------------------- selection


def test_higher_priority_wins_over_higher_confidence() -> None:
    runtime = runtime_for(
        {"name": "low", "priority": 1, "rules": leaf("a")},
        {"name": "high", "priority": 10, "rules": AND(leaf("b"), leaf("c"))},
    )
    assert winner(runtime, results(a=1.0, b=0.2, c=0.2)) == ("high", pytest.approx(0.2))
    assert winner(runtime, results(a=1.0, b=0.2, c=None)) == ("low", 1.0)


def test_priority_tie_is_won_by_confidence_regardless_of_file_order() -> None:
    runtime = runtime_for(
        {"name": "first", "priority": 5, "rules": AND(leaf("a"), leaf("b"))},
        {"name": "second", "priority": 5, "rules": leaf("c")},
    )
    assert winner(runtime, results(a=1.0, b=0.5, c=0.9)) == ("second", 0.9)
    assert winner(runtime, results(a=1.0, b=1.0, c=0.9)) == ("first", 1.0)


@pytest.mark.parametrize("order", [("x", "y", "z"), ("z", "y", "x"), ("y", "z", "x")])
def test_full_tie_is_won_by_the_first_in_the_file(order: tuple[str, ...]) -> None:
    runtime = runtime_for(*({"name": n, "priority": 3, "rules": leaf("a")} for n in order))
    assert winner(runtime, results(a=0.5)) == (order[0], 0.5)


def test_catch_all_loses_a_tie_to_any_real_match_and_wins_when_nothing_matches() -> None:
    runtime = runtime_for(
        {"name": "fallback", "rules": AND()},
        {"name": "specific", "rules": leaf("a")},
    )
    assert winner(runtime, results(a=0.1)) == ("specific", 0.1)
    assert winner(runtime, results(a=None)) == ("fallback", 0.0)


def test_catch_all_at_a_higher_priority_always_wins() -> None:
    runtime = runtime_for(
        {"name": "specific", "priority": 1, "rules": leaf("a")},
        {"name": "fallback", "priority": 2},
    )
    assert winner(runtime, results(a=1.0)) == ("fallback", 0.0)


def test_matched_zero_confidence_beats_later_zero_in_file_order() -> None:
    runtime = runtime_for({"name": "one"}, {"name": "two"})
    assert winner(runtime, {}) == ("one", 0.0)


def test_lower_priority_is_used_when_higher_ones_do_not_match() -> None:
    runtime = runtime_for(
        {"name": "p30", "priority": 30, "rules": leaf("a")},
        {"name": "p20", "priority": 20, "rules": leaf("b")},
        {"name": "p10", "priority": 10, "rules": leaf("c")},
        {"name": "neg", "priority": -5},
    )
    assert winner(runtime, results(a=None, b=None, c=0.3)) == ("p10", 0.3)
    assert winner(runtime, results(a=None, b=0.1, c=1.0)) == ("p20", 0.1)
    assert winner(runtime, results()) == ("neg", 0.0)


def test_no_match_is_none() -> None:
    runtime = runtime_for(
        {"name": "one", "rules": leaf("a")},
        {"name": "two", "priority": 9, "rules": AND(leaf("b"), leaf("c"))},
        {"name": "three", "rules": NOT(leaf("d"))},
    )
    assert winner(runtime, results(a=None, b=1.0, c=None, d=1.0)) is None
    assert select((), results(a=1.0)) is None


def test_decisions_are_sorted_by_priority_then_file_order() -> None:
    runtime = runtime_for(
        {"name": "a0", "priority": 0},
        {"name": "b5", "priority": 5},
        {"name": "c0", "priority": 0},
        {"name": "d5", "priority": 5},
        {"name": "e9", "priority": 9},
    )
    assert [d.name for d in runtime.decisions] == ["e9", "b5", "d5", "a0", "c0"]
    assert [d.order for d in runtime.decisions] == [4, 1, 3, 0, 2]


# ---------------------------------------------------------------- models and fusion


def test_decision_carries_its_models_in_order() -> None:
    runtime = runtime_for({"name": "d", "modelRefs": [{"model": "m3"}, {"model": "m1"}]})
    (decision,) = runtime.decisions
    assert decision.models == ("m3", "m1")
    assert not decision.algorithm.answers_locally and decision.algorithm.name == "static"


def test_local_decisions_list_contains_only_locally_answered_decisions() -> None:
    fusion = {"type": "fusion", "fusion": {"model": "m3", "analysis_models": ["m1", "m2"]}}
    runtime = runtime_for(
        {"name": "static-hi", "priority": 50, "rules": leaf("a")},
        {"name": "fuse-lo", "priority": 1, "rules": leaf("b"), "algorithm": fusion},
        {"name": "static-lo", "priority": 1},
        {"name": "fuse-hi", "priority": 90, "rules": leaf("c"), "algorithm": {"type": "fusion"}},
    )
    assert [d.name for d in runtime.local_decisions] == ["fuse-hi", "fuse-lo"]
    assert all(d.algorithm.name == "fusion" for d in runtime.local_decisions)
    assert {d.name for d in runtime.decisions if not d.algorithm.answers_locally} == {"static-hi", "static-lo"}
    by_name = {d.name: d for d in runtime.decisions}
    assert isinstance(by_name["fuse-lo"].algorithm.config, FusionConfig)
    assert by_name["fuse-lo"].algorithm.config.model == "m3"
    assert by_name["fuse-lo"].algorithm.config.analysis_models == ["m1", "m2"]
    assert by_name["fuse-hi"].algorithm.config == FusionConfig()  # defaults when no fusion block is given
    # selection over the fusion list alone ignores the static decisions
    assert select(runtime.local_decisions, results(a=1.0, b=0.5)).decision.name == "fuse-lo"
    assert select(runtime.local_decisions, results(a=1.0)) is None


def test_demo_fusion_decisions() -> None:
    runtime = build_runtime(load_config(DEMO), environ={})
    assert [d.name for d in runtime.decisions] == [
        "deliberate",
        "premium",
        "legal-or-medical",
        "coding",
        "hard-reasoning",
    ]
    assert [d.name for d in runtime.local_decisions] == ["deliberate"]
    (deliberate,) = runtime.local_decisions
    assert deliberate.algorithm.config.model == "demo-large"
    assert deliberate.algorithm.config.analysis_models == ["demo-small", "demo-coder"]


# ---------------------------------------------------------------- the demo, end to end


@pytest.mark.parametrize(
    ("text", "headers", "expected"),
    [
        ("fix my python stack trace", {}, "coding"),
        ("fix my python stack trace", {"x-user-tier": "gold"}, "premium"),
        ("python error in PROJ-42", {}, "premium"),
        ("compare python and rust", {"x-user-tier": "gold"}, "deliberate"),
        ("what are the pros and cons?", {}, "deliberate"),
        ("x" * 20_000, {}, "deliberate"),  # long_prompt
        ("hello there", {"x-user-tier": "silver"}, None),
        ("pythonic stacktraces", {}, None),
        ("Can my landlord keep my deposit if I leave early?", {}, "legal-or-medical"),
        ("Is it dangerous to mix alcohol and antibiotics?", {}, "legal-or-medical"),
        ("Should I put my bonus into my 401k or pay off my car loan?", {}, None),  # finance: declared, not routed
        ("Prove that every bounded monotone sequence converges.", {}, "hard-reasoning"),
        ("How do I make risotto?", {}, None),
    ],
)
def test_demo_routing(demo_runtime: Runtime, text: str, headers: dict[str, str], expected: str | None) -> None:
    request = parse_chat_request(
        orjson.dumps({"model": "quorum/auto", "messages": [{"role": "user", "content": text}]})
    )
    match = select(demo_runtime.decisions, asyncio.run(demo_runtime.signals.evaluate(request, headers)))
    assert (match.decision.name if match else None) == expected
    if match is not None:
        assert isinstance(match.decision, Decision)
        semantic = expected in ("legal-or-medical", "hard-reasoning")
        assert 0.0 < match.confidence <= 1.0 if semantic else match.confidence == 1.0


@pytest.fixture(scope="module")
def demo_runtime() -> Runtime:
    """The demo's domain and complexity signals embed their examples once, before any request."""
    pytest.importorskip("onnxruntime", reason="the demo's domain and complexity signals need the semantic extra")
    from extproc.runtime import prepare_runtime

    runtime = build_runtime(load_config(DEMO), environ={})
    asyncio.run(prepare_runtime(runtime))
    return runtime
