"""The gRPC side: the ext_proc servicer, the grpc.aio server around it, and worker processes.

One coroutine serves one ext_proc stream (one HTTP request). The server also offers the standard
gRPC health service, answers keepalive pings from Envoy, and on SIGTERM stops accepting streams,
lets in-flight ones finish for `server.grace_period`, then exits.

`serve(..., workers=N)` starts N processes on consecutive ports (listen port + i). Envoy keeps one
HTTP/2 connection per worker thread to a cluster endpoint and multiplexes every stream on it, so
SO_REUSEPORT on a single port would not spread the load: the Envoy cluster must list every port
(`quorum envoy-config` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc.algorithms.serve import LocalAnswerer
from extproc.config import Config, split_host_port
from extproc.handler import LocalRunner, StreamHandler
from extproc.models import ModelClient
from extproc.pb import ep, ep_grpc
from extproc.runtime import Runtime, build_runtime, prepare_runtime
from extproc.telemetry import Telemetry, build_telemetry
from extproc.telemetry.setup import NO_TELEMETRY

log = logging.getLogger("quorum.server")

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(self, runtime: Runtime, local: LocalRunner | None = None, telemetry: Telemetry | None = None) -> None:
        self.runtime = runtime
        self.local = local
        self.telemetry = telemetry or NO_TELEMETRY

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ep.ProcessingResponse]:
        handler = StreamHandler(self.runtime, self.local, self.telemetry)
        recorder = handler.recorder
        error: BaseException | None = None
        try:
            async for request in request_iterator:
                started = time.perf_counter()
                async for response in handler.handle(request):
                    yield response
                recorder.busy += time.perf_counter() - started
                if handler.answered:
                    return
        except BaseException as exc:  # cancelled by Envoy (client gone) or a transport failure
            error = exc
            raise
        finally:
            recorder.finish(error)


def grpc_options(max_body_bytes: int) -> list[tuple[str, Any]]:
    # A buffered body arrives in one message: allow it plus room for the headers around it.
    limit = max_body_bytes + (1 << 20)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),  # a second process on the same port must fail, not share silently
    ]


async def start_server(
    runtime: Runtime, address: str, local: LocalRunner | None = None, telemetry: Telemetry | None = None
) -> tuple[grpc.aio.Server, health.HealthServicer, int]:
    server = grpc.aio.server(options=grpc_options(runtime.max_body_bytes))
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(runtime, local, telemetry), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not listen on {address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await _set_health(health_servicer, name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port


async def _set_health(servicer: health.HealthServicer, name: str, status: int) -> None:
    result = servicer.set(name, status)
    if asyncio.iscoroutine(result):
        await result


async def serve_forever(config: Config, address: str, worker: int = 0) -> None:
    runtime = build_runtime(config)
    started = time.perf_counter()
    await prepare_runtime(runtime)
    if len(runtime.signals.producers):
        log.info("semantic signals ready in %.2fs", time.perf_counter() - started)
    telemetry = build_telemetry(config.observability)
    if telemetry.metrics is not None:
        host, port = split_host_port(config.observability.metrics.listen)
        try:
            telemetry.metrics.serve(host, port + worker)
        except OSError as exc:
            raise SystemExit(f"cannot serve /metrics on {host}:{port + worker}: {exc}") from None
    client = ModelClient(telemetry=telemetry)
    server, health_servicer, _port = await start_server(runtime, address, LocalAnswerer(client), telemetry)
    gc.freeze()  # config, compiled signals and modules live forever: keep them out of every GC pass
    log.info(
        "quorum ext_proc listening on %s (%d models, %d decisions)",
        address,
        len(runtime.models),
        len(runtime.decisions),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    grace = config.server.grace_period
    log.info("stopping: draining in-flight streams for up to %.1fs", grace)
    for name in ("", SERVICE_NAME):
        await _set_health(health_servicer, name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace)
    await client.aclose()
    telemetry.shutdown()
    log.info("stopped")


def run_worker(config: Config, address: str, worker: int = 0) -> None:
    """Run one server process until SIGTERM/SIGINT, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps odd platforms working
        asyncio.run(serve_forever(config, address, worker))
    else:
        uvloop.run(serve_forever(config, address, worker))


def worker_addresses(config: Config, workers: int) -> list[str]:
    host, port = split_host_port(config.server.listen)
    host = f"[{host}]" if ":" in host else host
    return [f"{host}:{port + i}" for i in range(workers)]


def serve(config: Config, workers: int) -> int:
    """Serve in this process (one worker) or supervise `workers` child processes."""
    addresses = worker_addresses(config, workers)
    if workers == 1:
        run_worker(config, addresses[0])
        return 0
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=run_worker, args=(config, a, i), name=f"quorum-worker-{i}") for i, a in enumerate(addresses)
    ]
    for child in children:
        child.start()
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    child.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    # If one worker dies on its own, stop the rest: a supervisor (systemd, Kubernetes) restarts us whole.
    while any(c.is_alive() for c in children):
        for child in children:
            child.join(timeout=0.2)
            if not child.is_alive() and not stopping:
                log.error("%s exited with code %s; stopping the other workers", child.name, child.exitcode)
                exit_code = 1
                forward(signal.SIGTERM, None)
    deadline_grace = config.server.grace_period + 5
    for child in children:
        child.join(timeout=deadline_grace)
        if child.is_alive():
            child.kill()
    return exit_code
