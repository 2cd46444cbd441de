"""`POST /v1/chat/completions`: the chat request format of `extproc.openai`."""

from __future__ import annotations

from extproc.endpoints.base import Rewrite
from extproc.openai import ChatRequest, parse_chat_request


class ChatEndpoint:
    name = "chat"

    def parse(self, raw: bytes) -> ChatRequest:
        return parse_chat_request(raw)

    def rewrite(self, request: ChatRequest, upstream_model: str, request_usage: bool) -> Rewrite:
        """`request_usage`: ask a streaming backend for the usage chunk even if the client did not
        (the response phase strips it again)."""
        if request_usage and request.stream and not request.wants_usage:
            return Rewrite(request.with_model(upstream_model, stream_options={"include_usage": True}), True)
        body = None if request.model == upstream_model else request.with_model(upstream_model)
        return Rewrite(body, False)
