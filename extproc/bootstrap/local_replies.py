"""Envoy's own local replies rewritten as OpenAI error objects, with the `type` OpenAI uses for the status."""

from __future__ import annotations

from typing import Any

# OpenAI's error `type` per status; any other 4xx is invalid_request_error, any 5xx server_error.
STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_NOT_QUORUM = {
    # Quorum's ImmediateResponses are local replies too; their response code details start with
    # `quorum` (see `envoy.immediate`) and already carry the right error object.
    "extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "!response.code_details.startsWith('quorum')",
        },
    }
}


def local_replies() -> dict[str, Any]:
    """Envoy's own errors (Quorum unreachable, timeouts, overflow, too large) as OpenAI error objects.

    Mappers are tried in order: the exact statuses first, then 4xx, then everything else (5xx).
    """
    mappers = [_mapper(kind, _status(status, "EQ")) for status, kind in STATUS_TYPES.items()]
    mappers.append(_mapper("invalid_request_error", _status(499, "LE")))  # any other 4xx
    mappers.append(_mapper("server_error", None))
    return {"mappers": mappers}


def _status(value: int, op: str) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {"op": op, "value": {"default_value": value, "runtime_key": "quorum.local_reply_status"}}
        }
    }


def _mapper(error_type: str, status: dict[str, Any] | None) -> dict[str, Any]:
    what = _NOT_QUORUM if status is None else {"and_filter": {"filters": [_NOT_QUORUM, status]}}
    body = {"message": "%LOCAL_REPLY_BODY%", "type": error_type, "param": None, "code": "%RESPONSE_CODE_DETAILS%"}
    return {"filter": what, "body_format_override": {"json_format": {"error": body}}}
