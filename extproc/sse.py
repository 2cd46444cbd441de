"""Incremental Server-Sent Events decoding and encoding for chat completion streams.

The decoder is fed raw bytes as they arrive and returns the `data` of each complete event. An
event may be split across any number of chunks, lines may end in LF, CRLF or CR, and `data:` may
come with or without the space; comment lines (`: ...`) and other fields are ignored.
"""

from __future__ import annotations

from typing import Any

import orjson


class SSEDecoder:
    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return events
            end, skip = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[end + skip :]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr != -1 and (lf == -1 or cr < lf):
        if cr == len(buffer) - 1:
            return None  # a CR at the very end may be the first half of CRLF: wait for more
        return cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
    return lf, 1


def encode_event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"
HEARTBEAT = b": quorum fusion in progress\n\n"
