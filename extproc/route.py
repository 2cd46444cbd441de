"""What routing learned about one chat request, handed to the local answerer (extproc.algorithms.serve)."""

from __future__ import annotations

from extproc.decisions import Match
from extproc.endpoints import CHAT_PATH, ENDPOINTS, ParsedRequest
from extproc.endpoints.base import AnswerRenderer
from extproc.runtime import Runtime
from extproc.telemetry.recorder import RequestRecorder


class RouteContext:
    """What routing learned about one chat request."""

    __slots__ = (
        "call_headers",
        "chat",
        "debug_headers",
        "duplex",
        "headers",
        "match",
        "recorder",
        "renderer",
        "request_id",
        "runtime",
    )

    def __init__(
        self,
        chat: ParsedRequest,
        headers: dict[str, str],
        match: Match,
        request_id: str,
        runtime: Runtime,
        duplex: bool = False,
        recorder: RequestRecorder | None = None,
        debug_headers: dict[str, str] | None = None,
        renderer: AnswerRenderer | None = None,
        call_headers: dict[str, str] | None = None,
    ) -> None:
        self.call_headers = call_headers or {}  # added to every model call (label guards' headers)
        self.chat = chat  # as algorithms read it: chat messages, whatever the endpoint
        self.renderer = renderer or ENDPOINTS[CHAT_PATH].renderer(chat)  # the answer in the endpoint's format
        self.debug_headers = debug_headers or {}  # matched signals and confidence, when enabled
        self.headers = headers
        self.match = match
        self.request_id = request_id
        self.runtime = runtime  # the configuration this request was decided with (reloads swap it)
        self.duplex = duplex  # FULL_DUPLEX_STREAMED: the answer may be streamed as it is produced
        self.recorder = recorder
