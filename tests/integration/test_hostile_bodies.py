"""Bodies orjson reads but cannot write back, through a real Envoy: routed untouched, or a 400."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from conftest import backend_requests, clear_backends

pytestmark = pytest.mark.integration


def deep_body(model: str, depth: int) -> bytes:
    nested = b"[" * depth + b"1" + b"]" * depth
    return (
        b'{"model":"' + model.encode() + b'","messages":[{"role":"user","content":"hello there"}],'
        b'"x_deep":' + nested + b',"seed_big":123456789012345678901234567890,"x_tiny":1e-400}'
    )


@pytest.mark.parametrize("depth", [255, 1000])
def test_deep_body_is_routed_with_its_bytes_unchanged(http: httpx.Client, stack, depth: int) -> None:
    clear_backends(stack)
    sent = deep_body("quorum/auto", depth)
    response = http.post("/v1/chat/completions", content=sent, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["x-fake-backend"] == "demo-small"
    assert response.json()["choices"][0]["message"]["content"] == "[demo-small] hello there"
    (record,) = backend_requests(stack, "demo-small")
    upstream = stack.config.model("demo-small").upstream_model
    expected = sent.replace(b'"quorum/auto"', b'"' + upstream.encode() + b'"')
    assert record["body_sha256"] == hashlib.sha256(expected).hexdigest()


def test_deep_body_for_fusion_is_a_400_naming_the_limit(http: httpx.Client) -> None:
    body = deep_body("quorum/auto", 300).replace(b"hello there", b"compare these two options")
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "nesting_too_deep"
    assert "254 levels" in error["message"]


def test_duplicated_model_key_is_a_400(http: httpx.Client) -> None:
    body = b'{"model":"demo-large","model":"demo-small","messages":[{"role":"user","content":"hi"}]}'
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "duplicate_key"
