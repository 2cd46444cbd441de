"""One upstream cluster per model `cluster`, addressed from the model's `base_url`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.common import address, is_ip
from extproc.config import Config, ModelConfig
from extproc.config.server import UpstreamTls


def model_clusters(config: Config) -> list[dict[str, Any]]:
    clusters: dict[str, dict[str, Any]] = {}
    for model in config.providers.models:
        clusters.setdefault(model.cluster_name, _model_cluster(model, config.envoy.tls))
    return list(clusters.values())


def _model_cluster(model: ModelConfig, tls_config: UpstreamTls) -> dict[str, Any]:
    parts = urlsplit(model.base_url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    cluster: dict[str, Any] = {
        "name": model.cluster_name,
        "type": "STATIC" if is_ip(host) else "STRICT_DNS",
        "connect_timeout": "5s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": model.cluster_name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(host, port)}}]}],
        },
        "outlier_detection": {
            "consecutive_5xx": 5,
            "interval": "10s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 50,
        },
    }
    if tls:
        cluster["transport_socket"] = tls_socket(host, tls_config)
    return cluster


def tls_socket(host: str, tls: UpstreamTls) -> dict[str, Any]:
    """TLS to an `https` backend: SNI, and (by default) the certificate checked against a CA bundle
    and the backend's host name, so a provider API key never goes to an impostor."""
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": host,
    }
    if tls.verify:
        san_type = "IP_ADDRESS" if is_ip(host) else "DNS"
        context["common_tls_context"] = {
            "validation_context": {
                "trusted_ca": {"filename": tls.ca_bundle},
                "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": host}}],
            }
        }
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}
