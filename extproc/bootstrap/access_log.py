"""The listener's access log: one JSON object per request and line (fields in docs/envoy.md).

No field carries a header that may hold a secret: no Authorization, no api keys, no body.
"""

from __future__ import annotations

from typing import Any

from extproc.config import Config


def access_log_fields(config: Config) -> dict[str, str]:
    server = config.server
    return {
        "start_time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "protocol": "%PROTOCOL%",
        "status": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "model": f"%REQ({server.route_header})%",
        "decision": f"%REQ({server.decision_header})%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "duration_ms": "%DURATION%",
        "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "user_agent": "%REQ(USER-AGENT)%",
    }


def access_logs(config: Config) -> dict[str, Any]:
    """The HTTP connection manager's `access_log` field, or nothing when `envoy.access_log` is null."""
    path = config.envoy.access_log
    if path is None:
        return {}
    file_log = {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path,
        "log_format": {"json_format": access_log_fields(config)},
    }
    return {"access_log": [{"name": "envoy.access_loggers.file", "typed_config": file_log}]}
