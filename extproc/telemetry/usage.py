"""Token usage read from routed responses as they pass through Envoy.

JSON bodies arrive whole (BUFFERED); SSE streams arrive in whatever chunks the upstream and Envoy
produced (STREAMED), so events are reassembled across chunk boundaries before they are read. Line
ends may be LF, CRLF or CR, and `data:` may come with or without its space. A stream's usage is
its last usage object (some servers repeat a running total), counted once: at `data: [DONE]`, or
when the stream ends without one.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from extproc.modeltypes import Usage

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")


def json_usage(body: bytes) -> Usage | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return Usage.parse(data.get("usage")) if isinstance(data, dict) else None


def event_data(event: bytes) -> bytes:
    """The `data` of one SSE event: its data lines joined by newlines."""
    lines = []
    for line in _LINE_END.split(event):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines)


class StreamUsage:
    """Follows one SSE response; with `strip`, removes the usage-only chunk the client did not ask for.

    `feed` returns the bytes to send on in place of the chunk when stripping (complete events only:
    a partial event waits for the next chunk), or None when the chunk may pass unchanged.
    """

    __slots__ = ("counted", "done", "pending", "strip", "usage")

    def __init__(self, strip: bool = False) -> None:
        self.pending = b""
        self.strip = strip
        self.usage: Usage | None = None
        self.done = False  # `data: [DONE]` seen: the usage is final even before the stream closes
        self.counted = False

    def final_usage(self, end_of_stream: bool) -> Usage | None:
        """The stream's usage the first time it is final (at [DONE] or the end), then never again."""
        if self.counted or not (self.done or end_of_stream):
            return None
        self.counted = True
        return self.usage

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        buffer = self.pending + chunk
        events, start = [], 0
        for match in _EVENT_END.finditer(buffer):
            events.append(buffer[start : match.end()])
            start = match.end()
        self.pending = buffer[start:]
        if end_of_stream and self.pending:
            events.append(self.pending)
            self.pending = b""
        kept = [event for event in events if not self._read(event)]
        return b"".join(kept) if self.strip else None

    def _read(self, event: bytes) -> bool:
        """Record the event's usage; True if it is a usage-only chunk to strip."""
        if b"usage" not in event and b"[DONE]" not in event:
            return False
        data = event_data(event)
        if data == b"[DONE]":
            self.done = True
            return False
        if not data:
            return False
        try:
            chunk: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(chunk, dict):
            return False
        usage = self.chunk_usage(chunk)
        if usage is None:
            return False
        self.usage = usage
        return self.strip and not chunk.get("choices")

    def chunk_usage(self, chunk: dict[str, Any]) -> Usage | None:
        """The usage one decoded event carries (chat and completions chunks: top-level `usage`)."""
        return Usage.parse(chunk.get("usage"))
