"""What every endpoint processor provides (see `extproc.endpoints`), and the defaults most share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from extproc.telemetry.usage import StreamUsage, Usage, json_usage

if TYPE_CHECKING:
    from extproc.algorithms.trace import RunTrace
    from extproc.errors import QuorumError
    from extproc.openai import ChatRequest


class ParsedRequest(Protocol):
    """A validated request body, as routing and the signals see it."""

    body: dict[str, Any]
    model: str
    stream: bool

    def text(self, scope: str) -> str: ...
    def folded_text(self, scope: str) -> str: ...
    @property
    def token_estimate(self) -> int: ...
    def with_model(self, model: str, **fields: Any) -> bytes: ...


def model_first(raw: bytes) -> bytes:
    """A JSON body re-encoded with `model` as its first key (a fallback chain's upstream filter needs it there)."""
    data = orjson.loads(raw)
    return orjson.dumps({"model": data.pop("model"), **data})


class Rewrite(NamedTuple):
    body: bytes | None  # None: send the client's body unchanged
    strip_usage: bool  # we asked the backend for a usage chunk the client did not want


class EndpointProcessor(Protocol):
    name: str  # the request kind in logs and metrics, and the word in `models[].endpoints`
    routes_by_alias: bool  # may `quorum/auto` pick the model (else the client must name one)
    answers_locally: bool  # can a locally answering algorithm (fusion, ...) answer in this format

    def local_request(self, request: Any) -> ChatRequest:
        """The request as algorithms read it (chat messages); a 400 for what they cannot honour."""
        ...

    def renderer(self, request: Any) -> AnswerRenderer: ...

    def parse(self, raw: bytes) -> ParsedRequest: ...
    def rewrite(self, request: Any, upstream_model: str, request_usage: bool) -> Rewrite: ...
    def json_usage(self, body: bytes) -> Usage | None: ...
    def stream_usage(self, strip: bool) -> StreamUsage: ...


class Endpoint:
    """Defaults: the body only gets the backend's model id; usage is OpenAI's top-level `usage`."""

    name = "endpoint"
    routes_by_alias = True
    answers_locally = False

    def rewrite(self, request: Any, upstream_model: str, request_usage: bool) -> Rewrite:
        return Rewrite(None if request.model == upstream_model else request.with_model(upstream_model), False)

    def json_usage(self, body: bytes) -> Usage | None:
        return json_usage(body)

    def stream_usage(self, strip: bool) -> StreamUsage:
        return StreamUsage(strip=strip)


class AnswerRenderer(Protocol):
    """An answer Quorum produced itself (an algorithm that answers locally), in one endpoint's format.

    The answer is a chat-style assistant message, or (streaming) chat `choices[]` deltas; the run's
    trace brings the usage and goes into the response under the algorithm's name.
    """

    def json(self, message: dict[str, Any], finish_reason: str, trace: RunTrace) -> bytes: ...
    def stream_open(self) -> bytes: ...
    def stream_delta(self, choice: dict[str, Any]) -> bytes: ...
    def stream_message(self, message: dict[str, Any], finish_reason: str) -> bytes: ...
    def stream_close(self, trace: RunTrace) -> bytes: ...
    def stream_error(self, error: QuorumError) -> bytes: ...
