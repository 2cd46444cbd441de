"""One upstream cluster per model `cluster`, addressed from the model's `base_url`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from extproc.bootstrap.common import address, is_ip
from extproc.config import Config, ModelConfig


def model_clusters(config: Config) -> list[dict[str, Any]]:
    clusters: dict[str, dict[str, Any]] = {}
    for model in config.providers.models:
        clusters.setdefault(model.cluster_name, _model_cluster(model))
    return list(clusters.values())


def _model_cluster(model: ModelConfig) -> dict[str, Any]:
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
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
            },
        }
    return cluster
