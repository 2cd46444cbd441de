"""`POST /v1/chat/completions`: the chat request format of `extproc.openai`."""

from __future__ import annotations

from typing import Any

import orjson

from extproc.algorithms.render import ChunkWriter, message_chunks, render_completion, role_delta
from extproc.algorithms.trace import RunTrace
from extproc.endpoints.base import Endpoint, Rewrite
from extproc.errors import QuorumError
from extproc.openai import ChatRequest, parse_chat_request
from extproc.sse import DONE, encode_event


class ChatEndpoint(Endpoint):
    name = "chat"
    answers_locally = True

    def local_request(self, request: ChatRequest) -> ChatRequest:
        return request

    def renderer(self, request: ChatRequest) -> ChatRenderer:
        return ChatRenderer(request.model, request.wants_usage)

    def parse(self, raw: bytes) -> ChatRequest:
        return parse_chat_request(raw)

    def rewrite(self, request: ChatRequest, upstream_model: str, request_usage: bool) -> Rewrite:
        """`request_usage`: ask a streaming backend for the usage chunk even if the client did not
        (the response phase strips it again)."""
        if request_usage and request.stream and not request.wants_usage:
            return Rewrite(request.with_model(upstream_model, stream_options={"include_usage": True}), True)
        return super().rewrite(request, upstream_model, request_usage)


class ChatRenderer:
    """A local answer as a `chat.completion`, or `chat.completion.chunk` events ending in [DONE]."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.writer = ChunkWriter(model, include_usage)

    def json(self, message: dict[str, Any], finish_reason: str, trace: RunTrace) -> bytes:
        return orjson.dumps(render_completion(self.model, message, finish_reason, trace))

    def stream_open(self) -> bytes:
        return self.writer.chunk([role_delta()])

    def stream_delta(self, choice: dict[str, Any]) -> bytes:
        return self.writer.chunk([choice])

    def stream_message(self, message: dict[str, Any], finish_reason: str) -> bytes:
        return message_chunks(self.writer, message, finish_reason)

    def stream_close(self, trace: RunTrace) -> bytes:
        return self.writer.closing(trace)

    def stream_error(self, error: QuorumError) -> bytes:
        return encode_event(error.to_openai()) + DONE
