"""A deterministic OpenAI-compatible fake model backend for the demo and the tests.

One process serves one model name. ``POST /v1/chat/completions`` answers
``"[<backend model>] <last user message text>"`` (non-streaming or SSE streaming), while
the response's ``model`` field repeats whatever ``model`` the request carried, so tests can
see which model id reached the backend. Every response carries ``x-fake-backend: <model>``.

Failure injection
-----------------
Behaviour is driven by directive blocks inside the *last user message* (they survive gateways
that strip unknown headers, and the OpenAI SDK can send them) or by request headers::

    [[fake:status=503]]
    [[fake:delay_ms=300 break_stream_after=2]]
    [[fake:status=500 only=demo-small]]

A block is ``[[fake:`` + space-separated ``key=value`` pairs (a bare ``key`` means
``key=true``) + ``]]``. A message may hold several blocks; each block is evaluated on its
own, so ``only`` scopes just its block, and later blocks override earlier ones. Blocks are
stripped from the echoed text. Unknown keys or bad values are answered with a 400, so typos in
tests fail loudly.

==================  =============================  =============================================
key                 header                         effect
==================  =============================  =============================================
status=N            x-fake-status                  answer N (200 or 400-599) with an
                                                   OpenAI-style error body (429 ->
                                                   rate_limit_error, 5xx -> server_error)
delay_ms=N          x-fake-delay-ms                sleep N ms before answering (added to the
                                                   backend-wide ``--latency-ms``)
break_stream_after  x-fake-break-stream-after      streaming only: send N ``data:`` frames, then
=N                                                 close the connection without ``[DONE]`` or the
                                                   final HTTP chunk (the client sees an
                                                   incomplete body)
stream_delay_ms=N   x-fake-stream-delay-ms         pause N ms between streamed frames
split_frames        x-fake-split-frames            streaming only: write each frame in two halves
                                                   30 ms apart (frames straddle chunk boundaries)
plain               x-fake-plain                   answer the echo without the ``[<model>]``
                                                   prefix (a panel that agrees)
logprob=F           x-fake-logprob                 non-streaming requests with ``logprobs: true``
                                                   get ``choices[0].logprobs.content``, one
                                                   entry per word at log-probability F (<= 0;
                                                   default -0.05: a confident answer)
no_logprobs         x-fake-no-logprobs             ignore ``logprobs: true`` (``logprobs: null``),
                                                   as some servers do
tool_call           x-fake-tool-call               if the request has ``tools``, call the first
                                                   tool with arguments ``{}``
judge=MODE          x-fake-judge                   judge answers only: ``valid`` (default),
                                                   ``invalid`` (non-JSON prose) or ``fenced``
                                                   (the JSON inside a ```json fence)
only=NAME[,NAME]    x-fake-only                    the block (or all headers) applies only if
                                                   this backend's model name is listed
==================  =============================  =============================================

Headers are applied first, then the message blocks in order.

Real-server quirks
------------------
``--quirk NAME`` (repeatable; ``build_app(quirks=...)``) makes the backend behave like a real server that
differs from OpenAI, so the code that copes with it can be tested without one. ``llama_cpp`` turns on all
of these (measured on llama-cpp-python's server, docs/real-models.md):

==================  ==========================================================================
drop_system         system/developer messages are ignored (the ``gemma`` chat format drops them)
no_stream_usage     ``stream_options.include_usage`` is ignored: no usage chunk
no_json_schema      ``response_format`` of type ``json_schema`` gets HTTP 500
max_tokens_only     ``max_tokens`` caps the answer (in words, finish_reason ``length``);
                    ``max_completion_tokens`` is ignored
uuid_request_id     a non-UUID ``x-request-id`` gets an empty HTTP 400
top_logprobs_only   ``logprobs: true`` without ``top_logprobs`` gets ``logprobs: null``
==================  ==========================================================================

Scripted answers and the fusion judge
-------------------------------------
``script`` (``--script FILE``, a JSON object) maps a substring of the last user message (after
directive stripping) to a reply; the first matching key in file order wins. A value is either
the reply text or an object mapping backend model names (or ``"*"``) to reply texts, so one
script file can serve a whole panel. When a system/developer message or the last user message
contains ``FUSION-JUDGE``, the backend answers as a fusion judge with a JSON analysis (keys
``consensus``, ``contradictions``, ``partial_coverage``, ``unique_insights``,
``blind_spots``); precedence is tool call > judge > script > echo.

Inspection
----------
Every chat request is recorded (``GET /_fake/requests``, cleared by ``DELETE``): id, path,
method, lower-cased headers, parsed body, received_at (epoch seconds), status sent,
``completed`` (the whole answer was written) and ``cancelled`` (the client went away first).
Records keep headers because tests need them; log lines never contain header values.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import itertools
import json
import logging
import math
import re
import secrets
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

logger = logging.getLogger(__name__)

JUDGE_MARKER = "FUSION-JUDGE"
MAX_RECORDS = 10_000
# aiohttp's default access log format logs the Referer and User-Agent header values; keep to none.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'

ScriptValue = str | Mapping[str, str]
Script = Mapping[str, ScriptValue]

_DIRECTIVE_RE = re.compile(r"\[\[fake:([^\]]*)\]\]")
# A run of blocks with the blanks around it becomes one space: "a [[fake:x]] b" -> "a b".
_DIRECTIVE_RUN_RE = re.compile(r"[ \t]*(?:\[\[fake:[^\]]*\]\][ \t]*)+")
_KEYS = (
    "status",
    "delay_ms",
    "break_stream_after",
    "stream_delay_ms",
    "tool_call",
    "judge",
    "split_frames",
    "plain",
    "logprob",
    "no_logprobs",
    "only",
)
_JUDGE_MODES = ("valid", "invalid", "fenced")
QUIRKS = ("drop_system", "no_stream_usage", "no_json_schema", "max_tokens_only", "uuid_request_id", "top_logprobs_only")
QUIRK_SETS = {"llama_cpp": QUIRKS}


def expand_quirks(names: Any) -> frozenset[str]:
    """Quirk names (or sets such as ``llama_cpp``) as one set; an unknown name is a ValueError."""
    out: set[str] = set()
    for name in names or ():
        if name in QUIRK_SETS:
            out.update(QUIRK_SETS[name])
        elif name in QUIRKS:
            out.add(name)
        else:
            raise ValueError(f"unknown quirk {name!r} (known: {', '.join((*QUIRKS, *QUIRK_SETS))})")
    return frozenset(out)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class FakeBackend:
    """Per-app state; reachable in-process as ``app[BACKEND]``."""

    model: str
    latency_ms: float = 0.0
    stream_delay_ms: float = 0.0
    script: Script = field(default_factory=dict)
    quirks: frozenset[str] = frozenset()
    records: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=MAX_RECORDS))
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_record(self, request: web.Request) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": next(self._ids),
            "path": request.path,
            "method": request.method,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": None,
            "received_at": time.time(),
            "status": None,
            "completed": False,
            "cancelled": False,
        }
        self.records.append(record)
        return record


BACKEND = web.AppKey("fake_backend", FakeBackend)


@dataclass
class _Directives:
    status: int = 200
    delay_ms: float = 0.0
    break_stream_after: int | None = None
    stream_delay_ms: float | None = None
    tool_call: bool = False
    judge: str = "valid"
    split_frames: bool = False  # write every SSE frame in two halves, 30 ms apart
    plain: bool = False  # echo without the "[model] " prefix: every backend gives the same answer
    logprob: float = -0.05  # every token's log-probability, when the request asks for logprobs
    no_logprobs: bool = False  # ignore `logprobs: true`, as some servers do

    def apply(self, pairs: Mapping[str, str], model: str, source: str) -> None:
        """Apply one block (or the header set); ``source`` names it in error messages."""
        for key in pairs:
            if key not in _KEYS:
                raise _BadRequest(f"unknown fake directive key {key!r} in {source}", source)
        only = pairs.get("only")
        if only is not None and model not in only.split(","):
            return
        try:
            if "status" in pairs:
                self.status = int(pairs["status"])
                if self.status != 200 and not 400 <= self.status <= 599:
                    raise ValueError
            if "delay_ms" in pairs:
                self.delay_ms = _non_negative(float(pairs["delay_ms"]))
            if "break_stream_after" in pairs:
                self.break_stream_after = int(_non_negative(int(pairs["break_stream_after"])))
            if "stream_delay_ms" in pairs:
                self.stream_delay_ms = _non_negative(float(pairs["stream_delay_ms"]))
            if "tool_call" in pairs:
                self.tool_call = pairs["tool_call"].lower() not in ("0", "false", "no", "off")
            if "split_frames" in pairs:
                self.split_frames = _flag(pairs["split_frames"])
            if "plain" in pairs:
                self.plain = _flag(pairs["plain"])
            if "logprob" in pairs:
                self.logprob = -_non_negative(-float(pairs["logprob"]))
            if "no_logprobs" in pairs:
                self.no_logprobs = _flag(pairs["no_logprobs"])
            if "judge" in pairs:
                if pairs["judge"] not in _JUDGE_MODES:
                    raise ValueError
                self.judge = pairs["judge"]
        except ValueError:
            raise _BadRequest(f"invalid fake directive value in {source}: {dict(pairs)}", source) from None


def _flag(value: str) -> bool:
    return value.lower() not in ("0", "false", "no", "off")


def _non_negative(value: float) -> float:
    if value < 0 or not math.isfinite(value):
        raise ValueError
    return value


def _parse_directives(headers: Mapping[str, str], text: str, model: str) -> tuple[_Directives, str]:
    """Collect header and in-message directives; return them and the text without blocks."""
    directives = _Directives()
    from_headers = {key: headers[name] for key in _KEYS if (name := "x-fake-" + key.replace("_", "-")) in headers}
    if from_headers:
        directives.apply(from_headers, model, "x-fake-* headers")
    if "[[fake:" not in text:  # the common case; a regex scan of a long prompt costs milliseconds
        return directives, text.strip()
    for match in _DIRECTIVE_RE.finditer(text):
        pairs = dict(token.partition("=")[::2] for token in match.group(1).split())
        # A bare key is a flag; partition gives it an empty value.
        pairs = {key: value or "true" for key, value in pairs.items()}
        directives.apply(pairs, model, match.group(0))
    return directives, _DIRECTIVE_RUN_RE.sub(" ", text).strip()


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a content-part array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def _judge_analysis(model: str) -> dict[str, list[str]]:
    return {
        "consensus": ["All panel answers agree on the central claim."],
        "contradictions": ["Two answers disagree on a secondary detail."],
        "partial_coverage": ["One answer addresses only part of the question."],
        "unique_insights": [f"Judge {model} notes a caveat that only one answer raised."],
        "blind_spots": ["No answer discusses failure modes or edge cases."],
    }


def _judge_text(model: str, mode: str) -> str:
    if mode == "invalid":
        return f"[{model}] As the judge I think the answers are mostly fine, but I will not use JSON."
    text = json.dumps(_judge_analysis(model), indent=2)
    return f"```json\n{text}\n```" if mode == "fenced" else text


def _script_reply(script: Script, text: str, model: str) -> str | None:
    for needle, value in script.items():
        if needle in text:
            reply = value if isinstance(value, str) else value.get(model, value.get("*"))
            if reply is not None:
                return reply
    return None


def load_script(path: str | Path) -> dict[str, ScriptValue]:
    """Load and validate a ``--script`` JSON file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: script must be a JSON object")
    for key, value in data.items():
        ok = isinstance(value, str) or (isinstance(value, dict) and all(isinstance(v, str) for v in value.values()))
        if not ok:
            raise ValueError(f"{path}: value for {key!r} must be a string or an object of strings")
    return data


class _Chat:
    """One chat completion request: the parsed body, the directives and the chosen answer."""

    def __init__(self, backend: FakeBackend, body: Any, headers: Mapping[str, str]) -> None:
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _BadRequest("'messages' must be a non-empty array of message objects", "messages")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _BadRequest("you must provide a model parameter", "model")
        self.request_model: str = body["model"]
        self.stream = body.get("stream") is True
        stream_options = body.get("stream_options")
        self.include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        quirks = backend.quirks
        if "no_stream_usage" in quirks:
            self.include_usage = False
        if "drop_system" in quirks:
            messages = [m for m in messages if m.get("role") not in ("system", "developer")] or messages[-1:]
        self.max_words = body.get("max_tokens") if "max_tokens_only" in quirks else None
        self.wants_logprobs = body.get("logprobs") is True
        if "top_logprobs_only" in quirks and not body.get("top_logprobs"):
            self.wants_logprobs = False
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())

        texts = [_content_text(m.get("content")) for m in messages]
        last_user = next(
            (t for m, t in zip(reversed(messages), reversed(texts), strict=True) if m.get("role") == "user"),
            "",
        )
        self.directives, echo = _parse_directives(headers, last_user, backend.model)
        self.prompt_tokens = sum(math.ceil(len(t) / 4) + 3 for t in texts)

        system_text = " ".join(
            t for m, t in zip(messages, texts, strict=True) if m.get("role") in ("system", "developer")
        )
        tools = body.get("tools")
        self.tool_name: str | None = None
        if self.directives.tool_call and isinstance(tools, list) and tools:
            function = tools[0].get("function") if isinstance(tools[0], dict) else None
            self.tool_name = str(function.get("name", "tool")) if isinstance(function, dict) else "tool"
        self.content: str | None = None
        if self.tool_name is None:
            if JUDGE_MARKER in system_text or JUDGE_MARKER in last_user:
                self.content = _judge_text(backend.model, self.directives.judge)
            else:
                scripted = _script_reply(backend.script, echo, backend.model)
                prefix = "" if self.directives.plain else f"[{backend.model}] "
                self.content = scripted if scripted is not None else f"{prefix}{echo}".rstrip()
        self.truncated = False
        if isinstance(self.max_words, int) and self.content and len(self.content.split()) > self.max_words:
            self.content = " ".join(self.content.split()[: self.max_words])
            self.truncated = True

    @property
    def finish_reason(self) -> str:
        if self.tool_name is not None:
            return "tool_calls"
        return "length" if self.truncated else "stop"

    def usage(self) -> dict[str, int]:
        # Spaces + 1 approximates words without splitting a long echo; a tool call counts as two.
        completion = self.content.count(" ") + 1 if self.content else (2 if self.content is None else 0)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _tool_calls(self, call_id: str, arguments: str) -> list[dict[str, Any]]:
        return [
            {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": self.tool_name, "arguments": arguments},
            }
        ]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_name is not None:
            message["tool_calls"] = self._tool_calls("call_" + secrets.token_hex(8), "{}")
            del message["tool_calls"][0]["index"]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request_model,
            "choices": [
                {"index": 0, "message": message, "logprobs": self.logprobs(), "finish_reason": self.finish_reason}
            ],
            "usage": self.usage(),
        }

    def logprobs(self) -> dict[str, Any] | None:
        """OpenAI's shape, one entry per word, each at the `logprob` directive's value."""
        if not self.wants_logprobs or self.directives.no_logprobs or self.content is None:
            return None
        tokens = re.findall(r"\s*\S+\s*", self.content)
        lp = self.directives.logprob
        return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []} for t in tokens]}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request_model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def chunks(self) -> list[dict[str, Any]]:
        """All ``data:`` payloads before ``[DONE]``, in order."""
        if self.tool_name is not None:
            chunks = [
                self._chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": self._tool_calls("call_" + secrets.token_hex(8), ""),
                    }
                ),
                self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            ]
        else:
            # Each word keeps its trailing whitespace, so the deltas concatenate to the exact content.
            words = re.findall(r"\s*\S+\s*", self.content or "")
            chunks = [self._chunk({"role": "assistant", "content": ""})]
            chunks += [self._chunk({"content": word}) for word in words]
        chunks.append(self._chunk({}, self.finish_reason))
        if self.include_usage:
            chunks.append({**self._chunk({}), "choices": [], "usage": self.usage()})
        return chunks


async def _send(request: web.Request, response: web.StreamResponse, record: dict[str, Any]) -> web.StreamResponse:
    """Write a whole response inside the handler so ``completed`` reflects what was written."""
    record["status"] = response.status
    await response.prepare(request)
    await response.write_eof()
    record["completed"] = True
    return response


async def _stream(request: web.Request, chat: _Chat, record: dict[str, Any], delay_s: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    record["status"] = response.status
    await response.prepare(request)
    frames = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chat.chunks()]
    frames.append(b"data: [DONE]\n\n")
    for index, frame in enumerate(frames):
        if index == chat.directives.break_stream_after:
            # close() (not abort()) flushes the frames already written, then sends FIN without
            # the terminating HTTP chunk: the client sees a truncated body. Return at once: with
            # handler cancellation on, the next await would be cancelled by the disconnect.
            if request.transport is not None:
                request.transport.close()
            return response
        if index and delay_s:
            await asyncio.sleep(delay_s)
        if chat.directives.split_frames:  # a reader must reassemble frames that straddle chunks
            half = len(frame) // 2
            await response.write(frame[:half])
            await asyncio.sleep(0.03)
            frame = frame[half:]
        await response.write(frame)
    await response.write_eof()
    record["completed"] = True
    return response


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND]
    record = backend.new_record(request)
    try:
        try:
            raw = await request.read()
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _BadRequest(f"We could not parse the JSON body of your request: {exc}") from None
        record["body"] = body
        record["body_sha256"] = hashlib.sha256(raw).hexdigest()  # proves the bytes arrived as sent
        quirk = _quirk_failure(backend.quirks, body, record["headers"])
        if quirk is not None:
            return await _send(request, quirk, record)
        chat = _Chat(backend, body, record["headers"])
    except _BadRequest as exc:
        response = web.Response(
            status=400,
            body=_error_body(exc.message, "invalid_request_error", exc.param),
            content_type="application/json",
        )
        return await _send(request, response, record)
    response = web.StreamResponse()
    try:
        directives = chat.directives
        delay_ms = backend.latency_ms + directives.delay_ms
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        if directives.status != 200:
            fallback = "server_error" if directives.status >= 500 else "invalid_request_error"
            error_type = _ERROR_TYPES.get(directives.status, fallback)
            response = web.Response(
                status=directives.status,
                body=_error_body(f"injected failure (status {directives.status})", error_type),
                content_type="application/json",
            )
            return await _send(request, response, record)
        if chat.stream:
            stream_delay_ms = directives.stream_delay_ms
            if stream_delay_ms is None:
                stream_delay_ms = backend.stream_delay_ms
            if chat.include_usage:
                record["usage"] = chat.usage()
            return await _stream(request, chat, record, stream_delay_ms / 1000)
        completion = chat.completion()
        record["usage"] = completion["usage"]  # what this backend reported, for usage-sum checks
        response = web.Response(body=orjson.dumps(completion), content_type="application/json")
        return await _send(request, response, record)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects (handler_cancellation=True).
        record["cancelled"] = True
        raise
    except ConnectionError:
        # Without handler cancellation, the disconnect shows up as a failed write instead.
        record["cancelled"] = True
        return response
    finally:
        logger.debug(
            "fake backend %s: request %d status=%s completed=%s cancelled=%s",
            backend.model,
            record["id"],
            record["status"],
            record["completed"],
            record["cancelled"],
        )


def _quirk_failure(quirks: frozenset[str], body: Any, headers: Mapping[str, str]) -> web.Response | None:
    """The errors a real server answers where OpenAI would not (see "Real-server quirks")."""
    if "uuid_request_id" in quirks and "x-request-id" in headers:
        try:
            uuid.UUID(headers["x-request-id"])
        except ValueError:
            return web.Response(status=400)  # llama-cpp-python's request-id middleware: an empty 400
    fmt = body.get("response_format") if isinstance(body, dict) else None
    if "no_json_schema" in quirks and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        message = "response_format.type: Input should be 'text' or 'json_object'"
        return web.Response(status=500, body=_error_body(message, "server_error"), content_type="application/json")
    return None


async def _list_requests(request: web.Request) -> web.Response:
    records = [_listable(r) for r in request.app[BACKEND].records]
    return web.Response(body=orjson.dumps({"requests": records}), content_type="application/json")


def _listable(record: dict[str, Any]) -> dict[str, Any]:
    """A record orjson can write: a body nested deeper than it writes is listed as None."""
    try:
        orjson.dumps(record["body"])
    except orjson.JSONEncodeError:
        return {**record, "body": None}
    return record


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[BACKEND].records.clear()
    return web.Response(body=orjson.dumps({"requests": []}), content_type="application/json")


async def _models(request: web.Request) -> web.Response:
    model = request.app[BACKEND].model
    body = {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": "quorum-fake"}],
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_app(
    model: str,
    latency_ms: float = 0.0,
    *,
    stream_delay_ms: float = 0.0,
    script: Script | None = None,
    quirks: Any = (),
) -> web.Application:
    """Build the fake backend application for one model name."""
    app = web.Application()
    app[BACKEND] = FakeBackend(model, latency_ms, stream_delay_ms, dict(script or {}), expand_quirks(quirks))

    async def add_backend_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-fake-backend"] = model

    app.on_response_prepare.append(add_backend_header)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    from extproc.dev.fake_endpoints import add_endpoint_routes  # it imports this module

    add_endpoint_routes(app)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_fake/requests", _list_requests)
    app.router.add_delete("/_fake/requests", _clear_requests)
    return app


async def start_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (0 = ephemeral); return the runner and the bound port.

    Handlers are cancelled when their client disconnects; that is how records learn
    ``cancelled``. Call ``runner.cleanup()`` to stop.
    """
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


async def serve(
    host: str,
    port: int,
    model: str,
    latency_ms: float,
    *,
    stream_delay_ms: float = 0.0,
    script: Script | None = None,
    quirks: Any = (),
) -> None:
    """Serve until cancelled."""
    app = build_app(model, latency_ms, stream_delay_ms=stream_delay_ms, script=script, quirks=quirks)
    runner, bound_port = await start_app(app, host, port)
    logger.info(
        "fake backend %r listening on http://%s:%d (latency_ms=%g, stream_delay_ms=%g, script entries=%d)",
        model,
        host,
        bound_port,
        latency_ms,
        stream_delay_ms,
        len(app[BACKEND].script),
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def _run_until_signal(args: argparse.Namespace, script: Script | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server = asyncio.create_task(
        serve(
            args.host,
            args.port,
            args.model,
            args.latency_ms,
            stream_delay_ms=getattr(args, "stream_delay_ms", 0.0),
            script=script,
            quirks=getattr(args, "quirk", None) or (),
        )
    )
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server  # re-raises a startup failure such as "address already in use"
    logger.info("fake backend %r stopped", args.model)


def run(args: argparse.Namespace) -> int:
    """CLI entry point: serve until SIGINT/SIGTERM; return the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    script_path = getattr(args, "script", None)
    try:
        script = load_script(script_path) if script_path else None
    except (OSError, ValueError) as exc:
        logger.error("fake backend: cannot load script: %s", exc)
        return 2
    try:
        expand_quirks(getattr(args, "quirk", None))
    except ValueError as exc:
        logger.error("fake backend: %s", exc)
        return 2
    try:
        import uvloop
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_run_until_signal(args, script))
    except OSError as exc:
        logger.error("fake backend %r failed: %s", args.model, exc)
        return 1
    return 0
