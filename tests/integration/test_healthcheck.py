"""`quorum healthcheck` (the Docker HEALTHCHECK) reads the gRPC health service Envoy and Kubernetes read."""

from __future__ import annotations

import asyncio

import pytest
from builders import config_text
from grpc_health.v1 import health_pb2

from extproc.cli import main
from extproc.config import parse_config
from extproc.healthcheck import probe_address
from extproc.pb import SERVICE_NAME
from extproc.runtime import build_runtime
from extproc.server import start_server

pytestmark = pytest.mark.integration


async def test_exit_code_follows_serving_not_serving_and_unreachable(capsys):
    runtime = build_runtime(parse_config(config_text()), environ={"QUORUM_TEST_LARGE_KEY": "k"})
    server, health, port = await start_server(runtime, "127.0.0.1:0")
    probe = ["healthcheck", "--address", f"127.0.0.1:{port}", "--timeout", "10"]
    try:
        assert await asyncio.to_thread(main, probe) == 0
        health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await asyncio.to_thread(main, probe) == 1
    finally:
        await server.stop(0)
    assert await asyncio.to_thread(main, [*probe[:-1], "2"]) == 1
    assert capsys.readouterr().out.split("\n")[:3] == [
        f"127.0.0.1:{port}: SERVING",
        f"127.0.0.1:{port}: NOT_SERVING",
        f"127.0.0.1:{port}: UNREACHABLE",
    ]


@pytest.mark.parametrize(
    ("listen", "address"),
    [("0.0.0.0:50051", "127.0.0.1:50051"), ("[::]:7000", "[::1]:7000"), ("10.0.0.5:9", "10.0.0.5:9")],
)
def test_a_wildcard_listen_address_is_probed_on_loopback(listen, address):
    assert probe_address(listen) == address
