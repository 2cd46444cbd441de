"""One processor per OpenAI endpoint; the handler only knows the path table.

A processor is stateless and shared by every stream of its path: per-request state lives in the
`ParsedRequest` it returns. Adding an endpoint is one module here and one row in `ENDPOINTS`.

    parse(raw)            -> ParsedRequest      (OpenAI 400s raised here, naming the field)
    ParsedRequest.text(scope) / folded_text / token_estimate   the text signals read
    rewrite(req, upstream_model, request_usage) -> Rewrite   the body for the chosen backend model
    json_usage(body) / stream_usage(strip)                   token usage of a routed response
"""

from __future__ import annotations

from extproc.endpoints.base import EndpointProcessor, ParsedRequest, Rewrite
from extproc.endpoints.chat import ChatEndpoint
from extproc.endpoints.prompts import CompletionsEndpoint, EmbeddingsEndpoint
from extproc.endpoints.responses import ResponsesEndpoint

CHAT_PATH = "/v1/chat/completions"

ENDPOINTS: dict[str, EndpointProcessor] = {
    CHAT_PATH: ChatEndpoint(),
    "/v1/responses": ResponsesEndpoint(),
    "/v1/completions": CompletionsEndpoint(),
    "/v1/embeddings": EmbeddingsEndpoint(),
}
ENDPOINT_NAMES = tuple(endpoint.name for endpoint in ENDPOINTS.values())  # for `models[].endpoints`

__all__ = ["CHAT_PATH", "ENDPOINTS", "ENDPOINT_NAMES", "EndpointProcessor", "ParsedRequest", "Rewrite"]
