"""Envoy's own local replies rewritten as OpenAI error objects."""

from __future__ import annotations

from typing import Any


def local_replies() -> dict[str, Any]:
    """Envoy's own errors (Quorum unreachable, timeouts, overflow) as OpenAI error objects.

    Quorum's ImmediateResponses are local replies too; their response code details start with
    `quorum` (see `envoy.immediate`), and the filter below leaves them alone.
    """
    not_quorum = {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "!response.code_details.startsWith('quorum')",
            },
        }
    }
    return {
        "mappers": [
            {
                "filter": not_quorum,
                "body_format_override": {
                    "json_format": {
                        "error": {
                            "message": "%LOCAL_REPLY_BODY%",
                            "type": "server_error",
                            "param": None,
                            "code": "%RESPONSE_CODE_DETAILS%",
                        }
                    }
                },
            }
        ]
    }
