"""Property-based fuzz of chat requests through a real Envoy (both body modes, bounded examples).

Bodies vary in depth, size, encoding and field types; headers carry forged internal `x-quorum-*`
values. Every answer must be a 200 from the backend the request's own content selects (never the
forged one), or an OpenAI-shaped 4xx. Never a 5xx, never a hang.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest
from conftest import MAX_BODY
from fuzzing import DAMAGE, damage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

MODELS = ["demo-small", "demo-coder", "demo-large"]
KEYWORDS = {"": None, " python ": "demo-coder", " ABC-123 ": "demo-large", " compare ": "fusion"}
FORGED = ["x-quorum-model", "x-quorum-decision", "x-quorum-judge", "x-quorum-panel", "x-quorum-signals"]

# Text without ASCII capitals (no ticket-id match by accident) and without surrogates.
TEXT = st.text(st.characters(exclude_categories=("Cs", "Lu")), max_size=40)
SCALARS = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(
    SCALARS | TEXT, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
)


@dataclass
class Case:
    body: bytes
    headers: dict[str, str]
    expected: str | None  # the backend (or "fusion") a valid body must reach; None: any 200 or 4xx will do


@st.composite
def cases(draw: st.DrawFn) -> Case:
    keyword = draw(st.sampled_from(list(KEYWORDS)))
    text = draw(TEXT) + keyword + draw(TEXT)
    content = draw(st.sampled_from(["string", "parts"]))
    user = {"role": "user", "content": text if content == "string" else [{"type": "text", "text": text}]}
    messages = [{"role": "system", "content": draw(TEXT)}, user] if draw(st.booleans()) else [user]
    model = draw(st.sampled_from(["quorum/auto", "auto", *MODELS]))
    body = {"model": model, "messages": messages}
    depth = draw(st.sampled_from([0, 10, 254, 255, 600, 1000, 1024, 1100]))
    if depth:
        body["x_deep"] = json.loads("[" * depth + "]" * depth) if depth < 1000 else None
    extra_keys = st.sampled_from(["metadata", "x_extra", "user", "seed_note"])
    body.update(draw(st.dictionaries(extra_keys, JSON_VALUES, max_size=2)))
    tier = draw(st.sampled_from([None, "gold", "silver"]))
    headers = {"content-type": "application/json"}
    if tier:
        headers["x-user-tier"] = tier
    for name in draw(st.lists(st.sampled_from(FORGED), max_size=3, unique=True)):
        headers[name] = draw(st.sampled_from([*MODELS, "deliberate", "evil"]))

    encoded = json.dumps(body, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2]))).encode()
    if depth >= 1000:  # deeper than Python's json writes: splice the nesting in by hand
        encoded = encoded.replace(b'"x_deep": null', b'"x_deep": ' + b"[" * depth + b"]" * depth)
    expected = expected_route(model, keyword, tier, depth)
    kind = draw(st.sampled_from([*DAMAGE, "utf16"]))
    fields = ["temperature", "stream", "n", "messages", "model", "tools"]
    encoded = damage(draw, kind, encoded, MAX_BODY, fields, [b'"x"', b"{}", b"-1", b"[1]"])
    if kind != "none" or depth >= 1024:  # orjson reads at most 1024 levels: a 400 names that
        expected = None
    if len(encoded) > MAX_BODY:
        expected = "too_large"
    return Case(encoded, headers, expected)


def expected_route(model: str, keyword: str, tier: str | None, depth: int) -> str:
    if model in MODELS:
        return model
    target = KEYWORDS[keyword]
    if target == "fusion":
        return "fusion" if depth < 254 else "fusion_too_deep"  # 254 levels with the top-level object
    if tier == "gold" or target == "demo-large":
        return "demo-large"
    return target or "demo-small"


def assert_openai_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert "param" in error and "code" in error


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=cases())
def test_every_answer_is_the_right_backend_or_an_openai_4xx(stack, case: Case) -> None:
    with httpx.Client(base_url=stack.envoy_url, timeout=30) as http:
        response = http.post("/v1/chat/completions", content=case.body, headers=case.headers)
    if case.expected == "too_large":
        assert_openai_error(response)
        assert response.status_code == 413
        return
    if case.expected == "fusion_too_deep":
        assert_openai_error(response)
        assert response.json()["error"]["code"] == "nesting_too_deep"
        return
    if response.status_code != 200 or case.expected is None:
        if case.expected is not None:
            pytest.fail(f"a valid body got {response.status_code}: {response.text[:300]}")
        if response.status_code != 200:
            assert_openai_error(response)
            return
    if case.expected == "fusion" or response.headers.get("x-quorum-decision") == "deliberate":
        assert case.expected in ("fusion", None)
        assert response.json()["object"] == "chat.completion"
        return
    answered_by = response.headers["x-fake-backend"]
    assert answered_by == response.headers["x-quorum-model"]  # Quorum's route, not a forged header
    if case.expected is not None:
        assert answered_by == case.expected
