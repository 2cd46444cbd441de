"""What routing learned about one chat request, handed to whatever answers it locally (fusion)."""

from __future__ import annotations

from extproc.decisions import Match
from extproc.openai import ChatRequest
from extproc.telemetry.recorder import RequestRecorder


class RouteContext:
    """What routing learned about one chat request; handed to the fusion runner."""

    __slots__ = ("call_headers", "chat", "debug_headers", "duplex", "headers", "match", "recorder", "request_id")

    def __init__(
        self,
        chat: ChatRequest,
        headers: dict[str, str],
        match: Match,
        request_id: str,
        duplex: bool = False,
        recorder: RequestRecorder | None = None,
        debug_headers: dict[str, str] | None = None,
        call_headers: dict[str, str] | None = None,
    ) -> None:
        self.call_headers = call_headers or {}  # added to every model call (label guards' headers)
        self.chat = chat
        self.debug_headers = debug_headers or {}  # matched signals and confidence, when enabled
        self.headers = headers
        self.match = match
        self.request_id = request_id
        self.duplex = duplex  # FULL_DUPLEX_STREAMED: the answer may be streamed as it is produced
        self.recorder = recorder
