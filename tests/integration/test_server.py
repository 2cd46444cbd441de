"""The gRPC server itself: health, message limits, graceful shutdown, workers, and Envoy failing closed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from builders import body_msg, chat, chat_headers, config_text
from conftest import write_config
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.config import parse_config
from extproc.dev.stack import Stack, free_port
from extproc.pb import ep, ep_grpc
from extproc.route import RouteContext
from extproc.runtime import build_runtime
from extproc.server import SERVICE_NAME, start_server

pytestmark = pytest.mark.integration


def runtime(max_body: int = 8 << 20):
    return build_runtime(parse_config(config_text(max_body=max_body)), environ={"QUORUM_TEST_LARGE_KEY": "k"})


async def requests(*messages: ep.ProcessingRequest) -> AsyncIterator[ep.ProcessingRequest]:
    for m in messages:
        yield m


async def test_health_and_a_body_larger_than_grpc_default_limit():
    server, _, port = await start_server(runtime(), "127.0.0.1:0")
    try:
        limits = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=limits) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE_NAME):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = ep_grpc.ExternalProcessorStub(channel)
            big = chat("x" * (5 << 20), model="demo-coder")  # 5 MiB: above gRPC's 4 MiB default
            replies = [r async for r in stub.Process(requests(chat_headers(), body_msg(big)))]
            assert [r.WhichOneof("response") for r in replies] == ["request_headers", "request_body"], replies[-1]
            assert replies[1].request_body.response.clear_route_cache
    finally:
        await server.stop(0)


async def test_graceful_stop_lets_in_flight_streams_finish():
    started = asyncio.Event()

    async def slow_fusion(ctx: RouteContext) -> AsyncIterator[ep.ProcessingResponse]:
        started.set()
        await asyncio.sleep(0.5)
        yield ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(body=b"finished"))

    server, _, port = await start_server(runtime(), "127.0.0.1:0", local=slow_fusion)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ep_grpc.ExternalProcessorStub(channel)
        call = stub.Process(requests(chat_headers(), body_msg(chat("compare a and b"))))
        collected = asyncio.ensure_future(_collect(call))
        await asyncio.wait_for(started.wait(), 5)
        stopping = asyncio.ensure_future(server.stop(5))
        replies = await asyncio.wait_for(collected, 5)
        await stopping
    assert replies[-1].immediate_response.body == b"finished"


async def _collect(call) -> list[ep.ProcessingResponse]:
    return [r async for r in call]


def test_serve_with_workers_listens_on_consecutive_ports_honours_log_level_and_stops_on_sigterm(tmp_path):
    base = free_port()
    while True:  # need base and base+1 free
        try:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            break
        except OSError:
            base = free_port()
    path, _ = write_config(tmp_path, grpc_port=base)
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc", "serve", "--config", str(path), "--workers", "2", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"QUORUM_TEST_LARGE_KEY": "k", "PATH": "/usr/bin:/bin"},
    )
    try:
        for port in (base, base + 1):
            assert _health(port, deadline=time.monotonic() + 20) == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        output = proc.stdout.read().decode()
        # --log-level reaches the spawned workers: none of them logs its info-level start line
        assert "listening on" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _health(port: int, deadline: float) -> int:
    while True:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_rejects_a_bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(config_text().replace("priority: 100", "prioirty: 100"))
    result = subprocess.run(
        [sys.executable, "-m", "extproc", "serve", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "routing.decisions[0].prioirty: unknown key" in result.stderr


def test_envoy_fails_closed_with_an_openai_error_when_quorum_is_down(tmp_path):
    path, _ = write_config(tmp_path)
    with Stack(path, tmp_path, with_quorum=False) as stack:
        response = httpx.post(f"{stack.envoy_url}/v1/chat/completions", json=chat("python"), timeout=10)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "server_error"
        assert error["code"] == "router_unavailable"
        assert error["message"].strip()
        records = httpx.get(stack.config.model("demo-coder").base_url.removesuffix("/v1") + "/_fake/requests")
        assert records.json()["requests"] == []  # nothing reached a model
