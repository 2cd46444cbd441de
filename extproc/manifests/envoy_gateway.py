"""Envoy Gateway: an EnvoyExtensionPolicy that attaches Quorum to a Gateway, and the ReferenceGrant
that lets it point at the `quorum` Service in Quorum's namespace.

Envoy Gateway writes the ext_proc filter itself from a smaller API, so this carries the settings
that API has, read from the same config and the same filter `quorum envoy-config` renders.
"""

from __future__ import annotations

from typing import Any

from extproc.bootstrap.listener import extproc_filter
from extproc.config import Config, split_host_port
from extproc.manifests.settings import Settings

# Envoy's body send mode -> Envoy Gateway's ExtProcBodyProcessingMode.
_BODY_MODES = {"BUFFERED": "Buffered", "STREAMED": "Streamed", "FULL_DUPLEX_STREAMED": "FullDuplexStreamed"}


def objects(config: Config, settings: Settings) -> list[dict[str, Any]]:
    return [policy(config, settings), reference_grant(settings)]


def policy(config: Config, settings: Settings) -> dict[str, Any]:
    typed = extproc_filter(config)["typed_config"]
    mode = typed["processing_mode"]
    processing: dict[str, Any] = {"request": {"body": _BODY_MODES[mode["request_body_mode"]]}}
    if mode["response_header_mode"] == "SEND":
        response_body = mode["response_body_mode"]
        processing["response"] = {"body": _BODY_MODES[response_body]} if response_body != "NONE" else {}
    processing["allowModeOverride"] = typed["allow_mode_override"]
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": settings.metadata(settings.name, settings.gateway_namespace),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": settings.gateway_name}],
            "extProc": [
                {
                    "backendRefs": [
                        {
                            "name": settings.name,
                            "namespace": settings.namespace,
                            "port": split_host_port(config.server.listen)[1],
                        }
                    ],
                    "messageTimeout": f"{round(config.envoy.message_timeout * 1000)}ms",  # Gateway API duration
                    "failOpen": typed["failure_mode_allow"],
                    "processingMode": processing,
                }
            ],
        },
    }


def reference_grant(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": settings.metadata(f"{settings.name}-from-{settings.gateway_namespace}"),
        "spec": {
            "from": [
                {
                    "group": "gateway.envoyproxy.io",
                    "kind": "EnvoyExtensionPolicy",
                    "namespace": settings.gateway_namespace,
                }
            ],
            "to": [{"group": "", "kind": "Service", "name": settings.name}],
        },
    }
