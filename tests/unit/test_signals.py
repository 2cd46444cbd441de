"""Signals: keyword, regex, context and header matching, scopes, and which signals get compiled."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc.config import ConfigError, load_config, parse_config
from extproc.openai import ChatRequest, parse_chat_request
from extproc.runtime import build_runtime

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
MATCH = 1.0
NO = None


def chat(*messages: dict[str, Any] | str) -> ChatRequest:
    """A parsed request; a plain string is a user message."""
    msgs = [{"role": "user", "content": m} if isinstance(m, str) else m for m in messages]
    return parse_chat_request(orjson.dumps({"model": "quorum/auto", "messages": msgs}))


def evaluate(kind: str, spec: dict[str, Any], request: ChatRequest, headers: dict[str, str] | None = None) -> Any:
    """Declare one signal `s` of `kind`, use it in a decision, compile, and evaluate it on `request`."""
    raw = {
        "providers": {"models": [{"name": "m", "base_url": "http://127.0.0.1:9000/v1"}]},
        "routing": {
            "signals": {kind: [{"name": "s", **spec}]},
            "decisions": [{"name": "d", "rules": {"type": kind, "name": "s"}, "modelRefs": [{"model": "m"}]}],
        },
    }
    runtime = build_runtime(parse_config(json.dumps(raw)), environ={})
    results = asyncio.run(runtime.signals.evaluate(request, headers or {}))
    assert list(results) == [(kind, "s")]
    return results[(kind, "s")]


# ---------------------------------------------------------------- keyword


@pytest.mark.parametrize(
    ("spec", "text", "expected"),
    [
        pytest.param({"keywords": ["python"]}, "why does my Python code fail?", MATCH, id="any-hit"),
        pytest.param({"keywords": ["python"]}, "write it in rust", NO, id="any-miss"),
        pytest.param({"keywords": ["python"]}, "this is very pythonic", NO, id="whole-word-prefix"),
        pytest.param({"keywords": ["python"]}, "cpython internals", NO, id="whole-word-suffix"),
        pytest.param({"keywords": ["python"]}, "(python), python.", MATCH, id="punctuation-bounds"),
        pytest.param({"keywords": ["stack trace"]}, "here is my stack trace:", MATCH, id="phrase"),
        pytest.param({"keywords": ["stack trace"]}, "a stack and a trace", NO, id="phrase-words-apart"),
        pytest.param({"keywords": ["stack trace"]}, "stack tracer output", NO, id="phrase-whole-word"),
        pytest.param({"keywords": ["c++"]}, "I write C++ daily", MATCH, id="keyword-ending-in-symbol"),
        pytest.param({"keywords": ["a.b"]}, "axb", NO, id="keyword-is-literal-not-regex"),
        pytest.param({"keywords": ["rust", "python"]}, "python only", MATCH, id="any-of-several"),
        pytest.param({"keywords": ["python", "django"], "operator": "all"}, "Django on python", MATCH, id="all-hit"),
        pytest.param({"keywords": ["python", "django"], "operator": "all"}, "python only", NO, id="all-miss"),
        pytest.param({"keywords": ["python", "django"], "operator": "AND"}, "python only", NO, id="AND-is-all"),
        pytest.param({"keywords": ["python", "java"], "operator": "none"}, "write rust", MATCH, id="none-hit"),
        pytest.param({"keywords": ["python", "java"], "operator": "none"}, "JAVA please", NO, id="none-miss"),
        pytest.param({"keywords": ["python"], "operator": "NOR"}, "pythonic", MATCH, id="NOR-whole-word"),
        pytest.param({"keywords": ["Python"], "case_sensitive": True}, "python", NO, id="case-sensitive-miss"),
        pytest.param({"keywords": ["Python"], "case_sensitive": True}, "Python", MATCH, id="case-sensitive-hit"),
        pytest.param({"keywords": ["Python"]}, "PYTHON", MATCH, id="case-insensitive-default"),
        pytest.param({"keywords": ["café"]}, "un CAFÉ noir", MATCH, id="unicode-case-fold"),
        pytest.param({"keywords": ["café"]}, "cafés", NO, id="unicode-whole-word"),
    ],
)
def test_keyword(spec: dict[str, Any], text: str, expected: float | None) -> None:
    assert evaluate("keyword", spec, chat(text)) == expected


# ---------------------------------------------------------------- regex


@pytest.mark.parametrize(
    ("spec", "text", "expected"),
    [
        pytest.param({"patterns": ["[A-Z]+-[0-9]+"]}, "see JIRA-123", MATCH, id="any-hit"),
        pytest.param({"patterns": ["[A-Z]+-[0-9]+"]}, "see jira-123", NO, id="case-sensitive-by-default"),
        pytest.param(
            {"patterns": ["[A-Z]+-[0-9]+"], "case_sensitive": False}, "see jira-123", MATCH, id="case-insensitive"
        ),
        pytest.param({"patterns": ["^foo", "bar$"]}, "xx bar", MATCH, id="any-of-several"),
        pytest.param({"patterns": ["^foo", "bar$"], "operator": "all"}, "foo and bar", MATCH, id="all-hit"),
        pytest.param({"patterns": ["^foo", "bar$"], "operator": "all"}, "foo and baz", NO, id="all-miss"),
        pytest.param({"patterns": [r"\d{3}", "x"], "operator": "all"}, "x 12", NO, id="all-needs-each"),
        pytest.param({"patterns": [r"\bsecret\b", "password"], "operator": "none"}, "hello", MATCH, id="none-hit"),
        pytest.param({"patterns": [r"\bsecret\b", "password"], "operator": "none"}, "my password", NO, id="none-miss"),
        pytest.param({"patterns": ["^foo$"]}, "x\nfoo\ny", NO, id="no-multiline-by-default"),
        pytest.param({"patterns": ["a.b"]}, "a\nb", NO, id="dot-does-not-match-newline"),
        pytest.param({"patterns": ["(ab)+c"]}, "xxababc", MATCH, id="groups"),
        pytest.param(
            {"patterns": ["(?i)foo"]},
            "FOO",
            MATCH,
            id="inline-flag",
        ),
        pytest.param(
            {"patterns": ["(?m)^foo$"]},
            "x\nfoo\ny",
            MATCH,
            id="inline-multiline-flag",
        ),
        pytest.param(
            {"patterns": ["(?P<id>[a-z]+)-1", "(?P<id>[0-9]+)-2"]},
            "42-2",
            MATCH,
            id="same-group-name-in-two-patterns",
        ),
    ],
)
def test_regex(spec: dict[str, Any], text: str, expected: float | None) -> None:
    assert evaluate("regex", spec, chat(text)) == expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(b)\1", "invalid escape sequence"), ("(?=x)y", "invalid perl operator"), ("(a+)+[", "missing ]")],
    ids=["backreference", "lookahead", "unclosed-class"],
)
def test_regex_outside_re2_syntax_is_a_config_error(pattern: str, reason: str) -> None:
    # RE2 (linear time, as in vLLM Semantic Router and Envoy) has no backreferences or lookaround.
    yaml_text = f"""
providers: {{models: [{{name: m, base_url: "http://127.0.0.1:1/v1"}}]}}
routing:
  signals: {{regex: [{{name: r, patterns: ["ok", {json.dumps(pattern)}]}}]}}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text)
    [problem] = info.value.problems
    assert problem.startswith("routing.signals.regex[0].patterns[1]: ")
    assert "RE2" in problem and reason in problem


# ---------------------------------------------------------------- scope

CONVERSATION = chat(
    {"role": "system", "content": "You are SYSWORD, an assistant."},
    "first question about python",
    {"role": "assistant", "content": "an answer mentioning ASSISTWORD"},
    "second question about rust",
)


@pytest.mark.parametrize(
    ("word", "scope", "expected"),
    [
        ("rust", "last_user", MATCH),
        ("python", "last_user", NO),
        ("python", "user", MATCH),
        ("rust", "user", MATCH),
        ("python", "conversation", MATCH),
        ("sysword", "last_user", NO),
        ("sysword", "user", NO),
        ("sysword", "conversation", MATCH),
        ("assistword", "user", NO),
        ("assistword", "conversation", MATCH),
    ],
)
def test_scope(word: str, scope: str, expected: float | None) -> None:
    assert evaluate("keyword", {"keywords": [word], "scope": scope}, CONVERSATION) == expected
    assert evaluate("regex", {"patterns": [word], "scope": scope, "case_sensitive": False}, CONVERSATION) == expected


def test_last_user_is_the_last_user_message_not_the_last_message() -> None:
    request = chat("tell me about python", {"role": "assistant", "content": "rust is nice"})
    assert evaluate("keyword", {"keywords": ["python"]}, request) == MATCH
    assert evaluate("keyword", {"keywords": ["rust"]}, request) == NO


def test_default_scope_is_last_user() -> None:
    request = chat("python", {"role": "assistant", "content": "ok"}, "now rust")
    assert evaluate("keyword", {"keywords": ["python"]}, request) == NO
    assert evaluate("regex", {"patterns": ["python"]}, request) == NO


def test_no_user_message_means_empty_last_user_text() -> None:
    request = chat({"role": "system", "content": "python"})
    assert evaluate("keyword", {"keywords": ["python"]}, request) == NO
    assert evaluate("keyword", {"keywords": ["python"], "operator": "none"}, request) == MATCH


# ---------------------------------------------------------------- content parts

PARTS = chat(
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "please look at this"},
            {"type": "image_url", "image_url": {"url": "https://example.com/diagram.png"}},
            {"type": "input_text", "text": "python stack trace"},
        ],
    }
)


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        ("keyword", {"keywords": ["look"]}, MATCH),
        ("keyword", {"keywords": ["stack trace"]}, MATCH),
        ("keyword", {"keywords": ["look", "python"], "operator": "all"}, MATCH),
        ("keyword", {"keywords": ["diagram"]}, NO),  # the image URL is not text
        ("regex", {"patterns": ["this python"]}, MATCH),  # parts are joined with a space
        ("regex", {"patterns": [r"\.png"]}, NO),
    ],
)
def test_content_parts_are_read(kind: str, spec: dict[str, Any], expected: float | None) -> None:
    assert evaluate(kind, spec, PARTS) == expected


# ---------------------------------------------------------------- context


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        (lambda t: {"min_tokens": t}, MATCH),
        (lambda t: {"min_tokens": t + 1}, NO),
        (lambda t: {"max_tokens": t}, MATCH),
        (lambda t: {"max_tokens": t - 1}, NO),
        (lambda t: {"min_tokens": t - 1, "max_tokens": t + 1}, MATCH),
        (lambda t: {"min_tokens": t + 1, "max_tokens": t + 100}, NO),
        (lambda t: {"min_tokens": 1, "max_tokens": t - 1}, NO),
    ],
)
def test_context_bounds_use_the_token_estimate(bounds: Any, expected: float | None) -> None:
    request = chat({"role": "system", "content": "s" * 1000}, "u" * 3000)
    tokens = request.token_estimate
    assert tokens > 1000  # the whole conversation counts, system prompt included
    assert evaluate("context", bounds(tokens), request) == expected


@pytest.mark.parametrize(("chars", "expected"), [(3900, NO), (4400, MATCH)])
def test_context_with_k_suffix(chars: int, expected: float | None) -> None:
    request = chat("x" * chars)
    assert (request.token_estimate >= 1000) == (expected == MATCH)
    assert evaluate("context", {"min_tokens": "1K"}, request) == expected


def test_context_counts_every_message() -> None:
    short = chat("hello")
    long = chat({"role": "system", "content": "y" * 8000}, "hello")
    spec = {"min_tokens": 1000}
    assert evaluate("context", spec, short) == NO
    assert evaluate("context", spec, long) == MATCH


# ---------------------------------------------------------------- header


@pytest.mark.parametrize(
    ("spec", "headers", "expected"),
    [
        pytest.param({"header": "x-user-tier"}, {"x-user-tier": "anything"}, MATCH, id="present"),
        pytest.param({"header": "x-user-tier"}, {"x-user-tier": ""}, MATCH, id="present-empty"),
        pytest.param({"header": "x-user-tier"}, {"x-other": "gold"}, NO, id="absent"),
        pytest.param({"header": "x-user-tier", "values": ["gold"]}, {"x-user-tier": "gold"}, MATCH, id="value"),
        pytest.param({"header": "x-user-tier", "values": ["gold"]}, {"x-user-tier": "silver"}, NO, id="other-value"),
        pytest.param({"header": "x-user-tier", "values": ["gold"]}, {"x-user-tier": "golden"}, NO, id="no-substring"),
        pytest.param({"header": "x-user-tier", "values": ["gold"]}, {}, NO, id="values-absent"),
        pytest.param(
            {"header": "x-user-tier", "values": ["gold", "platinum"]},
            {"x-user-tier": "platinum"},
            MATCH,
            id="one-of-values",
        ),
        pytest.param(
            {"header": "x-user-tier", "values": ["gold"]}, {"x-user-tier": "silver, gold"}, MATCH, id="comma-list"
        ),
        pytest.param(
            {"header": "x-user-tier", "values": ["gold"]}, {"x-user-tier": "silver,bronze"}, NO, id="comma-list-miss"
        ),
        pytest.param({"header": "x-user-tier", "values": ["gold"]}, {"x-user-tier": "GOLD"}, MATCH, id="value-case"),
        pytest.param({"header": "x-user-tier", "values": ["Gold"]}, {"x-user-tier": "gOLD"}, MATCH, id="config-case"),
        pytest.param(
            {"header": "x-user-tier", "values": ["gold"], "case_sensitive": True},
            {"x-user-tier": "GOLD"},
            NO,
            id="case-sensitive-miss",
        ),
        pytest.param(
            {"header": "x-user-tier", "values": ["Gold"], "case_sensitive": True},
            {"x-user-tier": "Gold"},
            MATCH,
            id="case-sensitive-hit",
        ),
        pytest.param(
            {"header": "X-User-Tier", "values": ["gold"]}, {"x-user-tier": "gold"}, MATCH, id="header-name-case"
        ),
    ],
)
def test_header(spec: dict[str, Any], headers: dict[str, str], expected: float | None) -> None:
    assert evaluate("header", spec, chat("hello"), headers) == expected


# ---------------------------------------------------------------- only used signals are compiled

MANY_SIGNALS = {
    "providers": {"models": [{"name": "m", "base_url": "http://127.0.0.1:9000/v1"}]},
    "routing": {
        "signals": {
            "keyword": [{"name": "k1", "keywords": ["a"]}, {"name": "k2", "keywords": ["b"]}],
            "regex": [{"name": "r1", "patterns": ["c"]}],
            "context": [{"name": "c1", "min_tokens": 10}],
            "header": [{"name": "h1", "header": "x-h"}, {"name": "h2", "header": "x-i"}],
        },
        "decisions": [
            {
                "name": "static",
                "rules": {
                    "operator": "OR",
                    "conditions": [{"type": "keyword", "name": "k2"}, {"type": "header", "name": "h1"}],
                },
                "modelRefs": [{"model": "m"}],
            },
            {
                "name": "fused",
                "rules": {"operator": "NOT", "conditions": [{"type": "regex", "name": "r1"}]},
                "modelRefs": [{"model": "m"}],
                "algorithm": {"type": "fusion"},
            },
            {"name": "fallback", "modelRefs": [{"model": "m"}]},
        ],
    },
}


def test_only_signals_used_by_a_decision_are_compiled() -> None:
    runtime = build_runtime(parse_config(json.dumps(MANY_SIGNALS)), environ={})
    assert len(runtime.signals) == 3
    results = asyncio.run(runtime.signals.evaluate(chat("b c"), {"x-h": "1", "x-i": "1"}))
    assert results == {("keyword", "k2"): MATCH, ("regex", "r1"): MATCH, ("header", "h1"): MATCH}
    assert len(runtime.local_signals) == 1
    assert asyncio.run(runtime.local_signals.evaluate(chat("b c"), {})) == {("regex", "r1"): MATCH}


def test_no_decisions_compile_no_signals() -> None:
    raw = json.loads(json.dumps(MANY_SIGNALS))
    raw["routing"]["decisions"] = []
    runtime = build_runtime(parse_config(json.dumps(raw)), environ={})
    assert len(runtime.signals) == 0
    assert asyncio.run(runtime.signals.evaluate(chat("a b c"), {"x-h": "1"})) == {}


def test_demo_signals() -> None:
    pytest.importorskip("onnxruntime", reason="the demo's domain and complexity signals need the semantic extra")
    from extproc.runtime import prepare_runtime

    runtime = build_runtime(load_config(DEMO), environ={})
    asyncio.run(prepare_runtime(runtime))
    assert len(runtime.signals) == 8
    assert len(runtime.local_signals) == 2
    results = asyncio.run(runtime.signals.evaluate(chat("compare python with JIRA-7"), {"x-user-tier": "gold"}))
    assert results == {
        ("keyword", "code"): MATCH,
        ("keyword", "compare"): MATCH,
        ("regex", "ticket"): MATCH,
        ("context", "long_prompt"): NO,
        ("header", "premium"): MATCH,
        ("domain", "law"): NO,
        ("domain", "medicine"): NO,
        ("complexity", "hard"): NO,
    }


@pytest.mark.parametrize(
    ("keywords", "text", "expected"),
    [
        (["пример"], "вот Пример кода", MATCH),  # case folding and word boundaries beyond ASCII
        (["пример"], "примерно так", NO),
        (["straße"], "STRASSE entlang", MATCH),  # casefold, not lower: ß folds to ss
        (["c++"], "I write C++ daily", MATCH),  # a keyword ending in punctuation needs no boundary there
        (["python"], "pythonic python_ code", NO),
        (["python"], "x" * 300_000 + " python", MATCH),  # found at the end of a very long prompt
    ],
    ids=["cyrillic", "cyrillic-prefix", "casefold", "punctuation", "underscore-is-a-word-char", "long-prompt"],
)
def test_keyword_unicode_and_long_text(keywords: list[str], text: str, expected: float | None) -> None:
    assert evaluate("keyword", {"keywords": keywords}, chat(text)) == expected
