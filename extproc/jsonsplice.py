"""Rewrite top-level fields of a JSON object in its raw bytes, without re-serialising it.

Re-encoding a parsed body is not faithful: orjson writes at most 254 levels of nesting (it reads
1024), turns integers beyond 64 bits into floats, tiny floats into 0.0, and keeps only the last of
duplicate keys. A routed body must reach the backend as the client sent it, so Quorum replaces the
bytes of the top-level values it changes (`model`, `stream_options`) and leaves every other byte.

The scanner only tracks strings and brackets; the body has already been parsed, so it is valid JSON.
"""

from __future__ import annotations

import re

import orjson

from extproc.errors import BadRequest

# A JSON string (escapes included), or one structural byte.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]]', re.DOTALL)
_SPACE = b" \t\r\n"
_SCALAR_END = re.compile(rb"[,}\s]")


def _key_name(token: bytes) -> str:
    return orjson.loads(token) if b"\\" in token else token[1:-1].decode()


def top_level_spans(raw: bytes, keys: frozenset[str]) -> tuple[dict[str, tuple[int, int]], int]:
    """The byte span of the value of each top-level key in `keys`, and the offset of the closing `}`.

    A key in `keys` that appears twice at the top level is refused: the router reads the last
    copy, a backend may read the first, so the two could disagree about the model.
    """
    spans: dict[str, tuple[int, int]] = {}
    depth = 0
    pending: str | None = None  # a wanted key whose value starts at the next token
    value_start = 0
    for match in _TOKEN.finditer(raw):
        token = match.group()
        first = token[0]
        if first == 0x22:  # '"'
            if depth != 1:
                continue
            if pending is not None:  # a string value of a wanted key
                spans[pending] = (match.start(), match.end())
                pending = None
                continue
            colon = _skip_space(raw, match.end())
            if raw[colon : colon + 1] != b":":
                continue  # a string value of a key we do not want
            name = _key_name(token)
            if name in keys:
                if name in spans:
                    raise BadRequest(
                        f"The request body has the top-level key '{name}' more than once.",
                        param=name,
                        code="duplicate_key",
                    )
                value_start = _skip_space(raw, colon + 1)
                if raw[value_start] in b'{["':
                    pending = name
                else:  # number, true, false, null
                    end = _SCALAR_END.search(raw, value_start)
                    spans[name] = (value_start, end.start() if end else len(raw))
        elif first in b"{[":
            if depth == 1 and pending is not None:
                value_start = match.start()
            depth += 1
        else:
            depth -= 1
            if depth == 1 and pending is not None:
                spans[pending] = (value_start, match.end())
                pending = None
            elif depth == 0:
                return spans, match.start()
    raise ValueError("not a JSON object")  # unreachable for a body that parsed as an object


def _skip_space(raw: bytes, i: int) -> int:
    n = len(raw)
    while i < n and raw[i] in _SPACE:
        i += 1
    return i


def model_span(raw: bytes) -> tuple[int, int]:
    """The span of the top-level `model` value (a string: the body was validated)."""
    # Fast path: without a backslash every quote delimits a string, so a single `"model"` in
    # the body is the top-level key the parser found (it cannot hide inside another string).
    if b"\\" not in raw and raw.count(b'"model"') == 1:
        start = _skip_space(raw, _skip_space(raw, raw.index(b'"model"') + 7) + 1)
        return start, raw.index(b'"', start + 1) + 1
    return top_level_spans(raw, _MODEL)[0]["model"]


_MODEL = frozenset({"model"})


def refuse_duplicate_model(raw: bytes) -> None:
    """A 400 for a JSON object with two top-level `model` keys (see `top_level_spans`)."""
    if b"\\" not in raw and raw.count(b'"model"') <= 1:
        return  # the fast path's reasoning: at most one `model` key anywhere
    top_level_spans(raw, _MODEL)


def replace_top_level(raw: bytes, values: dict[str, object]) -> bytes:
    """`raw` (a JSON object) with the top-level `values` set: replaced in place, or added at the end."""
    if values.keys() == _MODEL:
        start, end = model_span(raw)
        return raw[:start] + orjson.dumps(values["model"]) + raw[end:]
    spans, closing = top_level_spans(raw, frozenset(values))
    edits = sorted(((*spans[k], orjson.dumps(v)) for k, v in values.items() if k in spans), reverse=True)
    added = b"".join(b',"%s":%s' % (k.encode(), orjson.dumps(v)) for k, v in values.items() if k not in spans)
    out = raw
    if added:
        empty = raw.rfind(b"{", 0, closing) == _last_non_space(raw, closing)
        out = out[:closing] + (added[1:] if empty else added) + out[closing:]
    for start, end, value in edits:  # from the end, so earlier offsets stay valid
        out = out[:start] + value + out[end:]
    return out


def _last_non_space(raw: bytes, before: int) -> int:
    i = before - 1
    while i >= 0 and raw[i] in _SPACE:
        i -= 1
    return i
