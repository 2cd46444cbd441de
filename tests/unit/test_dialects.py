"""`dialect: llama_cpp`: the rewrites that make Quorum's own model calls work against llama-cpp-python's server."""

from __future__ import annotations

import uuid

from extproc.dialects import adapt_body, adapt_headers, fold_system_messages

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def test_openai_dialect_leaves_requests_alone() -> None:
    body = {"messages": [{"role": "system", "content": "s"}], "max_completion_tokens": 5}
    assert adapt_body("openai", body) is body
    assert adapt_headers("openai", {"x-request-id": "abc"}) == {"x-request-id": "abc"}


def test_llama_cpp_gets_max_tokens_json_object_schema_and_folded_system() -> None:
    body = {
        "messages": [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": "Grade this."}],
        "max_completion_tokens": 24,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
    }
    out = adapt_body("llama_cpp", body)
    assert out["max_tokens"] == 24 and "max_completion_tokens" not in out
    assert out["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert out["messages"] == [{"role": "user", "content": "You are a judge.\n\nGrade this."}]
    assert body["max_completion_tokens"] == 24  # the caller's body is not mutated


def test_fold_keeps_turn_order_and_handles_content_parts() -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": "Q"},
    ]
    assert fold_system_messages(messages) == [
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": "Be brief.\n\nQ"},
    ]
    assert fold_system_messages([{"role": "system", "content": "only"}]) == [{"role": "user", "content": "only"}]


def test_llama_cpp_request_ids_become_uuids() -> None:
    kept = str(uuid.uuid4())
    assert adapt_headers("llama_cpp", {"x-request-id": kept})["x-request-id"] == kept
    replaced = adapt_headers("llama_cpp", {"x-request-id": "req-42"})["x-request-id"]
    assert str(uuid.UUID(replaced)) == replaced


def test_llama_cpp_logprobs_ask_for_top_logprobs() -> None:
    assert adapt_body("llama_cpp", {"logprobs": True})["top_logprobs"] == 1
    assert adapt_body("llama_cpp", {"logprobs": True, "top_logprobs": 3})["top_logprobs"] == 3
    assert "top_logprobs" not in adapt_body("llama_cpp", {"logprobs": False})
