"""`POST /v1/completions` and `POST /v1/embeddings`: requests whose text is a prompt or an input list.

Both take a string, an array of strings, an array of token ids or an array of token-id arrays;
the strings are what signals read (as one user message each). Token ids carry no text.
"""

from __future__ import annotations

from typing import Any

from extproc.endpoints.base import Endpoint
from extproc.endpoints.chat import ChatEndpoint
from extproc.openai import ChatRequest, invalid, load_object, missing, validate_chat_stream, validate_numbers


class PromptRequest(ChatRequest):
    """A validated completions or embeddings body; `messages` holds its text strings, for signals."""

    __slots__ = ("_messages",)

    def __init__(self, body: dict[str, Any], raw: bytes, texts: list[str]) -> None:
        super().__init__(body, raw)
        self._messages = [{"role": "user", "content": text} for text in texts]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self._messages


class CompletionsEndpoint(ChatEndpoint):
    """Legacy completions stream like chat (`stream_options.include_usage`), so rewriting is chat's."""

    name = "completions"
    answers_locally = False  # local answers are chat or Responses; a text completion would lose the messages

    def parse(self, raw: bytes) -> PromptRequest:
        body = load_object(raw)
        texts = _model_and_texts(body, "prompt")
        validate_chat_stream(body)
        validate_numbers(
            body,
            ("temperature", "top_p", "presence_penalty", "frequency_penalty"),
            ("max_tokens", "n", "best_of", "logprobs", "seed"),
        )
        for key in ("echo",):
            if body.get(key) is not None and not isinstance(body[key], bool):
                raise invalid(key, f"'{key}' must be a boolean")
        return PromptRequest(body, raw, texts)


class EmbeddingsEndpoint(Endpoint):
    name = "embeddings"
    routes_by_alias = False  # which embedding space a vector lives in is the client's choice

    def parse(self, raw: bytes) -> PromptRequest:
        body = load_object(raw)
        texts = _model_and_texts(body, "input")
        if body.get("stream") is not None:
            raise invalid("stream", "Embeddings cannot be streamed: remove 'stream'.")
        fmt = body.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            raise invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'")
        validate_numbers(body, (), ("dimensions",))
        return PromptRequest(body, raw, texts)


def _model_and_texts(body: dict[str, Any], field: str) -> list[str]:
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "'model' must be a non-empty string")
    value = body.get(field)
    if value is None:
        raise missing(field)
    if isinstance(value, str):
        return [value]
    shape = f"'{field}' must be a string, an array of strings, an array of token ids or an array of token-id arrays"
    if not isinstance(value, list) or not value:
        raise invalid(field, shape if value != [] else f"'{field}' must not be empty")
    if all(isinstance(v, str) for v in value):
        return list(value)
    if all(_is_token(v) for v in value) or all(isinstance(v, list) and v and all(map(_is_token, v)) for v in value):
        return []
    raise invalid(field, shape)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
