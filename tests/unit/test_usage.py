"""Usage read from routed responses: SSE events reassembled across any chunk boundary."""

from __future__ import annotations

import orjson
import pytest

from extproc.telemetry.usage import StreamUsage, event_data, json_usage

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def sse(line_end: bytes = b"\n", space: bool = True, usage_chunk: bool = True) -> tuple[bytes, bytes]:
    """A chat stream and the same stream without its usage-only chunk."""
    prefix = b"data: " if space else b"data:"
    end = line_end * 2

    def event(obj: object) -> bytes:
        return prefix + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + end

    chunks = [
        event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None}),
        event({"choices": [{"index": 0, "delta": {"content": "hello"}}], "usage": None}),
        b": a comment" + end,
        event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}),
    ]
    usage = event({"choices": [], "usage": USAGE}) if usage_chunk else b""
    done = event(b"[DONE]")
    return b"".join([*chunks, usage, done]), b"".join([*chunks, done])


def feed_in_pieces(reader: StreamUsage, stream: bytes, cut: int) -> bytes:
    out = []
    pieces = [stream[i : i + cut] for i in range(0, len(stream), cut)]
    for i, piece in enumerate(pieces):
        replacement = reader.feed(piece, end_of_stream=i == len(pieces) - 1)
        out.append(piece if replacement is None else replacement)
    return b"".join(out)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("space", [True, False], ids=["data-space", "data-nospace"])
def test_usage_found_whatever_the_chunking(line_end, space):
    stream, _ = sse(line_end, space)
    for cut in range(1, len(stream) + 1, 7):
        reader = StreamUsage()
        assert feed_in_pieces(reader, stream, cut) == stream  # passed through untouched
        assert reader.usage is not None and reader.usage.as_dict() == USAGE, cut


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_strip_removes_only_the_usage_chunk(line_end):
    stream, without_usage = sse(line_end)
    for cut in (1, 3, 17, 64, len(stream)):
        reader = StreamUsage(strip=True)
        assert feed_in_pieces(reader, stream, cut) == without_usage
        assert reader.usage.as_dict() == USAGE


def test_no_usage_and_repeated_usage():
    stream, _ = sse(usage_chunk=False)
    reader = StreamUsage()
    reader.feed(stream, True)
    assert reader.usage is None
    running = b"".join(
        b"data: "
        + orjson.dumps(
            {"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 5, "completion_tokens": n}}
        )
        + b"\n\n"
        for n in (1, 2, 3)
    )
    reader = StreamUsage()
    reader.feed(running, True)
    assert reader.usage.completion_tokens == 3  # the last running total, not the sum


def test_event_data_and_json_usage():
    assert event_data(b"event: x\r\ndata: a\r\ndata:b\r\n\r\n") == b"a\nb"
    assert json_usage(orjson.dumps({"usage": USAGE})).as_dict() == USAGE
    assert json_usage(b"not json") is None and json_usage(b"[1]") is None


def test_usage_is_final_once_at_done_or_end():
    stream, _ = sse()
    reader = StreamUsage()
    reader.feed(stream, end_of_stream=False)  # [DONE] seen, the stream not closed yet
    assert reader.final_usage(end_of_stream=False).as_dict() == USAGE
    assert reader.final_usage(end_of_stream=True) is None  # never twice
    no_done, _ = sse()
    reader = StreamUsage()
    reader.feed(no_done.replace(b"data: [DONE]\n\n", b""), end_of_stream=False)
    assert reader.final_usage(end_of_stream=False) is None
    assert reader.final_usage(end_of_stream=True).as_dict() == USAGE
