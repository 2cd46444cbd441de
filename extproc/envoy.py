"""Builders for the ext_proc messages Quorum sends to Envoy. The only module that builds protobufs.

Two Envoy 1.40 rules shape these helpers (see docs/envoy.md):
- header values go in `raw_value` (bytes); Envoy applies an empty value when only `value` is set;
- a body mutation must come with a matching `content-length`, or Envoy answers 500 itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson

from extproc.errors import QuorumError
from extproc.pb import core, ep, http_status

_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
JSON = "application/json"


def header_map(headers: ep.HttpHeaders) -> dict[str, str]:
    """Envoy's header list as a dict with lower-case names; repeated names are joined with commas."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        key = h.key
        if key in out:
            out[key] = f"{out[key]},{value}"
        else:
            out[key] = value
    return out


def _set(headers: Iterable[tuple[str, str]]) -> list[core.HeaderValueOption]:
    return [
        core.HeaderValueOption(header=core.HeaderValue(key=k, raw_value=v.encode()), append_action=_OVERWRITE)
        for k, v in headers
    ]


def continue_request_headers(remove: list[str]) -> ep.ProcessingResponse:
    """Let the request go on to the body phase, dropping the headers named in `remove`."""
    if not remove:
        return _CONTINUE_HEADERS
    mutation = ep.HeaderMutation(remove_headers=remove)
    return ep.ProcessingResponse(
        request_headers=ep.HeadersResponse(response=ep.CommonResponse(header_mutation=mutation))
    )


_CONTINUE_HEADERS = ep.ProcessingResponse(request_headers=ep.HeadersResponse())


def route_request(set_headers: list[tuple[str, str]], body: bytes | None) -> ep.ProcessingResponse:
    """Answer the body phase: set the routing headers, maybe replace the body, and re-pick the route.

    `clear_route_cache` makes Envoy match routes again now that the routing header is set.
    """
    if body is not None:
        set_headers = [*set_headers, ("content-length", str(len(body)))]
    common = ep.CommonResponse(header_mutation=ep.HeaderMutation(set_headers=_set(set_headers)), clear_route_cache=True)
    if body is not None:
        common.body_mutation.body = body
    return ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))


def route_headers(set_headers: list[tuple[str, str]], remove: list[str]) -> ep.ProcessingResponse:
    """FULL_DUPLEX_STREAMED: the (deferred) answer to the request headers, once the body decided the route."""
    mutation = ep.HeaderMutation(set_headers=_set(set_headers), remove_headers=remove)
    common = ep.CommonResponse(header_mutation=mutation, clear_route_cache=True)
    return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))


def streamed_body(body: bytes, end_of_stream: bool) -> ep.ProcessingResponse:
    """FULL_DUPLEX_STREAMED: (a piece of) the request body Envoy sends upstream, chunked."""
    piece = ep.StreamedBodyResponse(body=body, end_of_stream=end_of_stream)
    common = ep.CommonResponse(body_mutation=ep.BodyMutation(streamed_response=piece))
    return ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))


def streamed_answer_headers(status: int, headers: Mapping[str, str]) -> ep.ProcessingResponse:
    """FULL_DUPLEX_STREAMED: start answering the client ourselves; this also answers the request headers."""
    pairs = [(":status", str(status)), *headers.items()]
    hmap = core.HeaderMap(headers=[core.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs])
    answer = ep.StreamedImmediateResponse(headers_response=ep.HttpHeaders(headers=hmap, end_of_stream=False))
    return ep.ProcessingResponse(streamed_immediate_response=answer)


def streamed_answer_body(body: bytes, end_of_stream: bool = False) -> ep.ProcessingResponse:
    answer = ep.StreamedImmediateResponse(body_response=ep.StreamedBodyResponse(body=body, end_of_stream=end_of_stream))
    return ep.ProcessingResponse(streamed_immediate_response=answer)


def replace_response_body(body: bytes) -> ep.ProcessingResponse:
    """STREAMED response: send `body` on in place of the chunk just received."""
    common = ep.CommonResponse(body_mutation=ep.BodyMutation(body=body))
    return ep.ProcessingResponse(response_body=ep.BodyResponse(response=common))


TRAILERS_CONTINUE = ep.ProcessingResponse(request_trailers=ep.TrailersResponse())


def immediate(
    status: int,
    body: bytes,
    *,
    content_type: str = JSON,
    headers: Mapping[str, str] | None = None,
    details: str = "quorum",
) -> ep.ProcessingResponse:
    """Answer the client directly; the request never reaches an upstream."""
    pairs = [("content-type", content_type), *(headers or {}).items()]
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status.HttpStatus(code=status),
            headers=ep.HeaderMutation(set_headers=_set(pairs)),
            body=body,
            details=details,
        )
    )


def extend_message_timeout(seconds: float) -> ep.ProcessingResponse:
    """Ask Envoy to wait longer for the answer to the current message (bounded by max_message_timeout)."""
    response = ep.ProcessingResponse()
    response.override_message_timeout.FromNanoseconds(int(seconds * 1e9))
    return response


def error_response(err: QuorumError, headers: Mapping[str, str] | None = None) -> ep.ProcessingResponse:
    """The one place a QuorumError becomes what the client sees: an OpenAI error object."""
    code = err.code or err.type
    if err.headers:
        headers = {**(headers or {}), **err.headers}
    return immediate(err.status, orjson.dumps(err.to_openai()), headers=headers, details=f"quorum_{code}")
