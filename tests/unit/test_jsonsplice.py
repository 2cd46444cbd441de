"""Every body that parses can be routed: the model is spliced into the client's bytes, never re-encoded."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.errors import BadRequest
from extproc.jsonsplice import replace_top_level
from extproc.openai import parse_chat_request

MESSAGES = b'"messages":[{"role":"user","content":"hi"}]'


def chat(extra: bytes, model: bytes = b'"quorum/auto"') -> bytes:
    return b'{"model":' + model + b"," + MESSAGES + b"," + extra + b"}"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


# Bodies orjson parses but cannot write back as sent (too deep, or changed on the way).
HOSTILE = {
    "nesting_255": b'"x_deep":' + nested(255),
    "nesting_1000": b'"x_deep":' + nested(1000),
    "nested_objects_600": b'"x_deep":' + b'{"a":' * 600 + b"1" + b"}" * 600,
    "integer_beyond_64_bits": b'"seed_big":123456789012345678901234567890',
    "negative_integer_beyond_64_bits": b'"x":-9223372036854775809',
    "float_underflow": b'"x":1e-400',
    "float_max": b'"temperature":1.7976931348623157e308',
    "float_exponent_form": b'"top_p":1E0',
    "duplicate_nested_keys": b'"metadata":{"a":1,"a":2}',
    "escaped_surrogate_pair": b'"x":"\\ud83d\\ude00"',
    "escaped_key_lookalike": b'"x":["model","\\"model\\""]',
    "huge_string": b'"x":"' + b"y" * 2_000_000 + b'"',
    "whitespace": b'  "x" :\n\t[ 1 , 2 ]  ',
}


@pytest.mark.parametrize("extra", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_body_routes_with_every_other_byte_kept(extra: bytes) -> None:
    raw = chat(extra)
    rewritten = parse_chat_request(raw).with_model("demo-large")
    assert rewritten == chat(extra, b'"demo-large"')


def test_reencoding_would_have_failed_or_changed_these() -> None:
    """The cases above are real: orjson's own writer loses or refuses each of them."""
    for name in ("nesting_255", "nesting_1000", "nested_objects_600"):
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(orjson.loads(chat(HOSTILE[name])))
    for name in ("integer_beyond_64_bits", "float_underflow", "duplicate_nested_keys"):
        assert HOSTILE[name] not in orjson.dumps(orjson.loads(chat(HOSTILE[name])))


def test_model_written_with_escapes_is_found() -> None:
    raw = b'{"mod\\u0065l":"quorum/auto",' + MESSAGES + b',"x":"say \\"model\\""}'
    assert parse_chat_request(raw).with_model("m") == b'{"mod\\u0065l":"m",' + MESSAGES + b',"x":"say \\"model\\""}'


def test_model_as_the_last_key_and_nested_model_keys_untouched() -> None:
    raw = b'{"tools":[{"type":"function","function":{"name":"f","parameters":{"model":"x"}}}],' + MESSAGES
    raw += b',"model" : "quorum/auto" }'
    out = parse_chat_request(raw).with_model("demo-small")
    assert out == raw.replace(b'"quorum/auto"', b'"demo-small"')
    assert json.loads(out)["tools"][0]["function"]["parameters"] == {"model": "x"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"a","model":"quorum/auto",' + MESSAGES + b"}",
        b'{"model":5,' + MESSAGES + b',"model":"quorum/auto"}',
        b'{"model":"a",' + MESSAGES + b',"mod\\u0065l":"quorum/auto"}',
    ],
    ids=["twice", "non_string_first", "escaped_second"],
)
def test_duplicated_model_key_is_a_400(raw: bytes) -> None:
    """The router reads the last copy; a backend may read the first: refuse rather than guess."""
    with pytest.raises(BadRequest) as info:
        parse_chat_request(raw)
    assert (info.value.status, info.value.code, info.value.param) == (400, "duplicate_key", "model")
    assert "'model' more than once" in info.value.message


def test_stream_options_replaced_or_added() -> None:
    base = b'{"model":"quorum/auto",' + MESSAGES + b',"stream":true'
    usage = {"include_usage": True}
    replaced = parse_chat_request(base + b',"stream_options":{"include_usage":false},"x":[[1]]}')
    assert replaced.with_model("m", stream_options=usage) == (
        b'{"model":"m",' + MESSAGES + b',"stream":true,"stream_options":{"include_usage":true},"x":[[1]]}'
    )
    added = parse_chat_request(base + b',"x":' + nested(300) + b" }")
    tail = b' ,"stream_options":{"include_usage":true}}'
    assert (
        added.with_model("m", stream_options=usage)
        == b'{"model":"m",' + MESSAGES + b',"stream":true,"x":' + nested(300) + tail
    )


def test_adding_to_an_empty_object_needs_no_comma() -> None:
    assert replace_top_level(b" { } ", {"stream_options": None}) == b' { "stream_options":null} '


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("model",)), JSON_VALUES, max_size=4))
def test_any_parsed_body_is_rewritten_to_the_same_value_with_the_new_model(extra: dict) -> None:
    base = {"model": "quorum/auto", "messages": [{"role": "user", "content": "hi"}]}
    compact = lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()  # noqa: E731
    for encode in (compact, lambda v: json.dumps(v, indent=1).encode()):  # raw UTF-8, and escaped + indented
        raw = encode({**base, **extra})
        try:
            request = parse_chat_request(raw)
        except BadRequest:
            continue  # an invalid chat field (e.g. a non-number temperature): a 400, not a rewrite
        assert json.loads(request.with_model("new")) == {**json.loads(raw), "model": "new"}
