"""Property-based fuzz of `/v1/responses` bodies through a real Envoy (both body modes, bounded examples).

Bodies mix every input shape the Responses API has (a string, message items with string or part
content, function calls and their outputs, reasoning items, junk items), instructions, tools
(function, hosted, junk), `stream`, provider-held state (`previous_response_id`, `background`),
unknown fields, deep nesting, and damage (truncation, broken UTF-8, wrong types, oversize). Every
answer must be a 2xx (from the backend Quorum's route names, or Quorum's own Responses answer for a
fused decision) or an OpenAI-shaped 4xx: never a 5xx, never a hang. A well-formed body for a
configured model must get its 2xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import MAX_BODY
from fuzzing import DAMAGE, damage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import JSON_VALUES, MODELS, TEXT, assert_openai_error  # the chat fuzz's strategies

pytestmark = pytest.mark.integration

KEYWORDS = ["", " python ", " ABC-123 ", " compare "]  # none, coding, premium, the fused decision
ROLES = ["user", "system", "developer", "assistant"]


@dataclass
class Case:
    body: bytes
    well_formed: bool  # a valid body that every route can answer: it must get a 2xx
    model: str


def content(draw: st.DrawFn, text: str) -> Any:
    shape = draw(st.sampled_from(["string", "parts", "output_parts"]))
    if shape == "string":
        return text
    kind = "input_text" if shape == "parts" else "output_text"
    return [{"type": kind, "text": text}]


@st.composite
def items(draw: st.DrawFn, last_user: str) -> tuple[list[Any], bool]:
    """An input item list ending with the user's message; False when a junk item was added."""
    out: list[Any] = []
    clean = True
    for kind in draw(st.lists(st.sampled_from(["message", "typed_message", "call", "reasoning", "junk"]), max_size=4)):
        if kind == "message":
            out.append({"role": draw(st.sampled_from(ROLES)), "content": content(draw, draw(TEXT))})
        elif kind == "typed_message":
            out.append({"type": "message", "role": draw(st.sampled_from(ROLES)), "content": content(draw, draw(TEXT))})
        elif kind == "call":
            out.append({"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"})
            out.append({"type": "function_call_output", "call_id": "call_1", "output": draw(TEXT)})
        elif kind == "reasoning":
            out.append({"type": "reasoning", "id": "rs_1", "summary": []})
        else:
            out.append(draw(JSON_VALUES))
            clean = False
    out.append({"role": "user", "content": content(draw, last_user)})
    return out, clean


@st.composite
def cases(draw: st.DrawFn) -> Case:
    text = draw(TEXT) + draw(st.sampled_from(KEYWORDS)) + draw(TEXT)
    model = draw(st.sampled_from(["quorum/auto", "auto", *MODELS]))
    body: dict[str, Any] = {"model": model}
    clean = True
    if draw(st.booleans()):
        body["input"] = text
    else:
        body["input"], clean = draw(items(text))
    if draw(st.booleans()):
        body["instructions"] = draw(TEXT)
    tools = draw(st.sampled_from(["none", "function", "hosted", "junk"]))
    if tools == "function":
        body["tools"] = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    elif tools == "hosted":
        body["tools"] = [{"type": "web_search"}]
        clean = False  # a fused answer cannot run a hosted tool: a 400 naming it
    elif tools == "junk":
        body["tools"] = draw(JSON_VALUES)
        clean = False
    body["stream"] = draw(st.sampled_from([None, False, True]))
    if draw(st.integers(0, 4)) == 0:
        body[draw(st.sampled_from(["previous_response_id", "background"]))] = draw(st.sampled_from(["resp_123", True]))
        clean = False  # a 400 on a fused answer, a backend's business otherwise
    extra_keys = st.sampled_from(["metadata", "x_extra", "user", "store", "temperature", "max_output_tokens"])
    extras = draw(st.dictionaries(extra_keys, JSON_VALUES, max_size=2))
    clean = clean and not extras
    body.update(extras)
    depth = draw(st.sampled_from([0, 0, 10, 300, 1100]))
    clean = clean and depth < 254
    encoded = json.dumps({**body, "x_deep": None} if depth else body, ensure_ascii=draw(st.booleans())).encode()
    if depth:
        encoded = encoded.replace(b'"x_deep": null', b'"x_deep": ' + b"[" * depth + b"]" * depth)

    kind = draw(st.sampled_from(DAMAGE))
    fields = ["input", "instructions", "stream", "model", "tools", "previous_response_id"]
    encoded = damage(draw, kind, encoded, MAX_BODY, fields, [b"7", b"{}", b"-1", b"[1]", b'""'])
    return Case(encoded, well_formed=clean and kind == "none", model=model)


def assert_local_responses_answer(response: httpx.Response) -> None:
    """Quorum's own answer (a fused decision): a Responses object or the Responses event stream."""
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
        assert events[0] == "response.created" and events[-1] == "response.completed", events
    else:
        assert response.json()["object"] == "response"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=cases())
def test_every_responses_body_gets_a_2xx_or_an_openai_4xx(stack, case: Case) -> None:
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=stack.envoy_url, timeout=30) as http:
        response = http.post("/v1/responses", content=case.body, headers=headers)
    if response.status_code >= 300:
        assert not case.well_formed, f"a well-formed body got {response.status_code}: {response.text[:300]}"
        assert_openai_error(response)
        return
    if "x-fake-backend" not in response.headers:
        assert response.headers.get("x-quorum-decision") == "deliberate", dict(response.headers)
        assert_local_responses_answer(response)
        return
    answered_by = response.headers["x-fake-backend"]
    assert answered_by == response.headers["x-quorum-model"]
    if case.model in MODELS:
        assert answered_by == case.model
