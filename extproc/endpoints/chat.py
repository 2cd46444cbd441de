"""`POST /v1/chat/completions`: the chat request format of `extproc.openai`."""

from __future__ import annotations

from extproc.endpoints.base import Endpoint, Rewrite
from extproc.openai import ChatRequest, parse_chat_request


class ChatEndpoint(Endpoint):
    name = "chat"
    fusable = True

    def parse(self, raw: bytes) -> ChatRequest:
        return parse_chat_request(raw)

    def rewrite(self, request: ChatRequest, upstream_model: str, request_usage: bool) -> Rewrite:
        """`request_usage`: ask a streaming backend for the usage chunk even if the client did not
        (the response phase strips it again)."""
        if request_usage and request.stream and not request.wants_usage:
            return Rewrite(request.with_model(upstream_model, stream_options={"include_usage": True}), True)
        return super().rewrite(request, upstream_model, request_usage)
