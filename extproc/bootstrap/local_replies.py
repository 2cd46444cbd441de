"""Every reply Envoy itself makes on the LLM listener, rewritten as an OpenAI error object.

Envoy's own local replies (Quorum unreachable or stalled, backend failures, timeouts, oversized
bodies or headers, malformed requests, overload shedding) carry an empty or Envoy-internal body.
Each mapper below picks a `type`, a non-empty `message` and, where the status Envoy chose is
misleading, a better status: Envoy answers 500 when ext_proc fails, which is a 503 (Quorum
unavailable) or a 504 (Quorum stopped answering) to a client. The first matching mapper wins.

Left alone: Quorum's ImmediateResponses (response code details start with `quorum`, see
`envoy.immediate`) and the bootstrap's own `direct_response` routes, which are OpenAI-shaped
already, so nothing is wrapped twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_DETAILS = "response.code_details"
_NOT_OURS = f"!({_DETAILS}.startsWith('quorum') || {_DETAILS} == 'direct_response')"
_EXT_PROC = f"{_DETAILS}.startsWith('ext_proc_error')"
# gRPC DEADLINE_EXCEEDED, the per-message timeout (504), or the ext_proc connection closed under a
# stream (a frozen Quorum fails its HTTP/2 keepalive pings, see `extproc_cluster`).
# Envoy's circuit breaker on the quorum_extproc cluster refused the stream (overflow), or a Quorum
# process refused it (gRPC RESOURCE_EXHAUSTED): shed load, retry shortly.
_EXT_PROC_SHED = (
    f"{_EXT_PROC} && ({_DETAILS}.contains('overflow') || {_DETAILS}.startsWith('ext_proc_error_gRPC_error_8'))"
)
_EXT_PROC_STALLED = (
    f"{_EXT_PROC} && (response.code == 504 || {_DETAILS}.startsWith('ext_proc_error_gRPC_error_4')"
    f" || {_DETAILS}.contains('connection_termination'))"
)


@dataclass(frozen=True)
class ReplyRule:
    """One class of Envoy local reply: when (CEL), and what the client sees."""

    when: str
    type: str
    message: str
    code: str = "%RESPONSE_CODE_DETAILS%"
    status: int | None = None  # None: keep Envoy's status
    retry_after: bool = False


def _status(code: int) -> str:
    return f"response.code == {code}"


RULES: tuple[ReplyRule, ...] = (
    ReplyRule(
        _EXT_PROC_SHED,
        "server_error",
        "The router (Quorum) is at its limit of requests at once; retry the request shortly.",
        code="router_overloaded",
        status=503,
        retry_after=True,
    ),
    ReplyRule(
        _EXT_PROC_STALLED,
        "server_error",
        "The router (Quorum) did not answer in time; retry the request.",
        code="router_timeout",
        status=504,
    ),
    ReplyRule(
        _EXT_PROC,
        "server_error",
        "The router (Quorum) is unavailable; retry the request shortly.",
        code="router_unavailable",
        status=503,
        retry_after=True,
    ),
    ReplyRule(
        f"{_DETAILS} == 'overload'",
        "server_error",
        "The gateway is overloaded; retry the request shortly.",
        code="overloaded",
        retry_after=True,
    ),
    ReplyRule(
        f"{_DETAILS} == 'max_duration_timeout'",
        "server_error",
        "The request took longer than the gateway allows for an answer.",
        code="request_timeout",
    ),
    # The `type` OpenAI uses for the status: authentication_error, permission_error,
    # rate_limit_error, otherwise invalid_request_error for 4xx and server_error for 5xx.
    ReplyRule(_status(401), "authentication_error", "The request is not authenticated (%RESPONSE_CODE_DETAILS%)."),
    ReplyRule(_status(403), "permission_error", "The request was refused (%RESPONSE_CODE_DETAILS%)."),
    ReplyRule(_status(404), "invalid_request_error", "No route for this request.", code="unknown_url"),
    ReplyRule(_status(408), "invalid_request_error", "The request was not received in time (%RESPONSE_CODE_DETAILS%)."),
    ReplyRule(_status(413), "invalid_request_error", "The request body is too large.", code="payload_too_large"),
    ReplyRule(_status(426), "invalid_request_error", "Use HTTP/1.1 or HTTP/2 (%RESPONSE_CODE_DETAILS%)."),
    ReplyRule(_status(429), "rate_limit_error", "Too many requests; retry later.", retry_after=True),
    ReplyRule(_status(431), "invalid_request_error", "The request headers are too large or too many."),
    ReplyRule(
        "response.code >= 400 && response.code < 500",
        "invalid_request_error",
        "The gateway refused the request (%RESPONSE_CODE_DETAILS%).",
    ),
    ReplyRule(_status(502), "server_error", "The model backend failed (%RESPONSE_CODE_DETAILS%)."),
    ReplyRule(
        _status(503),
        "server_error",
        "The model backend is unavailable (%RESPONSE_CODE_DETAILS%).",
        retry_after=True,
    ),
    ReplyRule(_status(504), "server_error", "The model backend did not answer in time (%RESPONSE_CODE_DETAILS%)."),
    ReplyRule("response.code >= 500", "server_error", "The gateway failed (%RESPONSE_CODE_DETAILS%)."),
)


def local_replies(retry_after: int = 1) -> dict[str, Any]:
    """`retry_after`: seconds, as Quorum's own refusals send them (`server.admission.retry_after`)."""
    return {"mappers": [_mapper(rule, retry_after) for rule in RULES]}


def _mapper(rule: ReplyRule, retry_after_seconds: int) -> dict[str, Any]:
    mapper: dict[str, Any] = {
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": f"{_NOT_OURS} && ({rule.when})",
                },
            }
        },
    }
    if rule.status is not None:
        mapper["status_code"] = rule.status
    if rule.retry_after:
        retry_after = {"key": "retry-after", "value": str(retry_after_seconds)}
        mapper["headers_to_add"] = [{"header": retry_after, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    mapper["body_format_override"] = {
        "json_format": {"error": {"message": rule.message, "type": rule.type, "param": None, "code": rule.code}}
    }
    return mapper
