"""What every endpoint processor provides (see `extproc.endpoints`)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class ParsedRequest(Protocol):
    """A validated request body, as routing and the signals see it."""

    body: dict[str, Any]
    model: str
    stream: bool

    def text(self, scope: str) -> str: ...
    def folded_text(self, scope: str) -> str: ...
    @property
    def token_estimate(self) -> int: ...


class Rewrite(NamedTuple):
    body: bytes | None  # None: send the client's body unchanged
    strip_usage: bool  # we asked the backend for a usage chunk the client did not want


class EndpointProcessor(Protocol):
    name: str  # the request kind in logs and metrics: "chat", ...

    def parse(self, raw: bytes) -> ParsedRequest: ...
    def rewrite(self, request: Any, upstream_model: str, request_usage: bool) -> Rewrite: ...
