"""The quorum_extproc cluster: replicas listed or resolved by DNS, gRPC health checks, outlier detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_bootstrap import clusters, config, endpoints, envoy_validate

from extproc.bootstrap import EXTPROC_CLUSTER, render, render_yaml
from extproc.config import ConfigError
from extproc.config.server import ServerConfig
from extproc.pb import SERVICE_NAME

MODEL = [{"name": "a", "base_url": "http://127.0.0.1:1/v1"}]


def extproc(**top: Any) -> dict[str, Any]:
    return clusters(render(config(MODEL, **top)))[EXTPROC_CLUSTER]


def test_listed_replicas_replace_the_worker_ports() -> None:
    cluster = extproc(
        server={"workers": 3}, envoy={"extproc_endpoints": ["10.0.0.1:50051", "10.0.0.2:50051", "[fd00::3]:7000"]}
    )
    assert cluster["type"] == "STATIC"
    assert endpoints(cluster) == [("10.0.0.1", 50051), ("10.0.0.2", 50051), ("fd00::3", 7000)]


def test_a_dns_name_is_resolved_to_every_address_behind_it() -> None:
    cluster = extproc(envoy={"extproc_endpoints": ["quorum-headless.quorum.svc.cluster.local:50051"]})
    assert cluster["type"] == "STRICT_DNS"
    assert endpoints(cluster) == [("quorum-headless.quorum.svc.cluster.local", 50051)]


def test_without_a_list_the_worker_ports_stay_static() -> None:
    cluster = extproc(server={"listen": "127.0.0.1:7000", "workers": 2})
    assert cluster["type"] == "STATIC"
    assert endpoints(cluster) == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]


@pytest.mark.parametrize("bad", [["nohost"], ["h:0"], ["h:1", "h:1"]])
def test_bad_endpoint_lists_are_config_errors(bad: list[str]) -> None:
    with pytest.raises(ConfigError, match="extproc_endpoints"):
        config(MODEL, envoy={"extproc_endpoints": bad})


def test_health_checks_ask_for_the_ext_proc_service_so_not_serving_is_read() -> None:
    (check,) = extproc()["health_checks"]
    assert check["grpc_health_check"] == {"service_name": SERVICE_NAME}
    assert SERVICE_NAME == "envoy.service.ext_proc.v3.ExternalProcessor"
    # Idle clusters are checked as often as busy ones (Envoy's default no-traffic interval is 60 s).
    assert check["no_traffic_interval"] == check["interval"]


def test_a_draining_replica_keeps_serving_until_envoys_next_health_check() -> None:
    """On SIGTERM Quorum reports NOT_SERVING and serves on for server.drain_delay: Envoy must check
    (and so stop sending new streams) within that time, with room for the check's round trip."""
    (check,) = extproc()["health_checks"]
    interval = float(check["interval"].rstrip("s"))
    assert interval * 1.5 <= ServerConfig().drain_delay


def test_outlier_detection_ejects_on_refused_connections_and_gateway_errors() -> None:
    outlier = extproc()["outlier_detection"]
    assert outlier["split_external_local_origin_errors"] is True
    assert outlier["consecutive_local_origin_failure"] == 1
    assert outlier["consecutive_gateway_failure"] >= 1
    assert outlier["enforcing_consecutive_gateway_failure"] == 100


@pytest.mark.parametrize(
    "endpoints_",
    [["quorum-headless.quorum.svc.cluster.local:50051"], ["127.0.0.1:7000", "127.0.0.1:7100"], []],
    ids=["dns", "listed", "workers"],
)
def test_envoy_accepts_the_cluster(endpoints_: list[str], tmp_path: Path) -> None:
    out = tmp_path / "bootstrap.yaml"
    out.write_text(render_yaml(config(MODEL, envoy={"extproc_endpoints": endpoints_})), encoding="utf-8")
    envoy_validate(out)
