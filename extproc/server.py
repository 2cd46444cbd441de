"""The gRPC side: the ext_proc servicer, the grpc.aio server around it, and worker processes.

One coroutine serves one ext_proc stream (one HTTP request), on the runtime snapshot it read from
the RuntimeHolder when it started (a reload swaps the holder's runtime; see extproc/reload.py). The
server also offers the standard gRPC health service and answers keepalive pings from Envoy.

Lifecycle: SIGHUP reloads the config (so does an edit of the file, polled every
`server.watch_interval`). SIGTERM/SIGINT: health turns NOT_SERVING (gRPC health and /readyz), the
server keeps serving for `server.drain_delay` so Envoy's health checks move traffic away, then stops
accepting streams and lets in-flight ones finish for `server.grace_period`, and exits 0. A second
signal skips the rest of the drain delay.

`serve(..., workers=N)` starts N processes on consecutive ports (listen port + i), supervised by
extproc/supervisor.py (a dead worker is restarted; SIGHUP is forwarded to every worker). Envoy keeps one
HTTP/2 connection per worker thread to a cluster endpoint and multiplexes every stream on it, so
SO_REUSEPORT on a single port would not spread the load: the Envoy cluster must list every port
(`quorum envoy-config` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc.admission import Admission
from extproc.algorithms.serve import LocalAnswerer
from extproc.config import Config, ConfigError, ConfigSource, split_host_port
from extproc.envoy_runtime import keep_off_at_start
from extproc.handler import LocalRunner, StreamHandler
from extproc.models import ModelClient
from extproc.pb import ep, ep_grpc
from extproc.ports import StartupError, check_bindable
from extproc.reload import Reloader, RuntimeHolder
from extproc.runtime import Runtime, build_runtime, prepare_runtime
from extproc.telemetry import Telemetry, build_telemetry
from extproc.telemetry.setup import NO_TELEMETRY, configure_logging

log = logging.getLogger("quorum.server")

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(
        self,
        runtime: Runtime | RuntimeHolder,
        local: LocalRunner | None = None,
        telemetry: Telemetry | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.holder = runtime if isinstance(runtime, RuntimeHolder) else RuntimeHolder(runtime)
        self.local = local
        self.telemetry = telemetry or NO_TELEMETRY
        self.admission = admission

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ep.ProcessingResponse]:
        runtime = self.holder.runtime  # this stream's snapshot
        if self.admission is not None:
            self.admission.follow(runtime.config.server.admission)
        handler = StreamHandler(runtime, self.local, self.telemetry, self.admission)
        recorder = handler.recorder
        error: BaseException | None = None
        end = "reset"
        try:
            async for request in request_iterator:
                started = time.perf_counter()
                async for response in handler.handle(request):
                    yield response
                recorder.busy += time.perf_counter() - started
                if handler.answered:
                    end = "quorum_closed"
                    return
            end = "envoy_closed"
        except BaseException as exc:  # cancelled by Envoy (client gone) or a transport failure
            error = exc
            raise
        finally:
            handler.release()  # the admission slot, however the stream ended
            recorder.finish(error)
            if (metrics := self.telemetry.metrics) is not None and context is not None:
                # Counted when the call ends, not here: Envoy may still reset the stream after this returned.
                context.add_done_callback(lambda call: metrics.stream_ends["reset" if call.cancelled() else end].inc())


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
    runtime: Runtime | RuntimeHolder,
    address: str,
    local: LocalRunner | None = None,
    telemetry: Telemetry | None = None,
    admission: Admission | None = None,
) -> tuple[grpc.aio.Server, health.HealthServicer, int]:
    holder = runtime if isinstance(runtime, RuntimeHolder) else RuntimeHolder(runtime)
    host, _, port_text = address.rpartition(":")
    check_bindable(host.strip("[]"), int(port_text), "server.listen")
    server = grpc.aio.server(options=grpc_options(holder.runtime.max_body_bytes))
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(holder, local, telemetry, admission), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # lost a race with another process since the check
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {address} (server.listen)")
    await server.start()
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port


async def _set_health(servicer: health.HealthServicer, status: int) -> None:
    for name in ("", SERVICE_NAME):
        result = servicer.set(name, status)
        if asyncio.iscoroutine(result):
            await result


async def serve_forever(
    config: Config, address: str, worker: int = 0, source: str | None = None, digest: str = "", restarts: int = 0
) -> None:
    """Serve until SIGTERM/SIGINT. `source` (the config file or directory) is watched and reloaded;
    `digest` identifies the config already loaded from it; `restarts`: how often the supervisor
    has restarted this worker's slot (exported as a metric)."""
    lifecycle = _Lifecycle()
    lifecycle.install(asyncio.get_running_loop())  # from the start: SIGHUP must never end the process
    runtime = build_runtime(config)
    started = time.perf_counter()
    await prepare_runtime(runtime)
    if len(runtime.signals.producers):
        log.info("semantic signals ready in %.2fs", time.perf_counter() - started)
    holder = RuntimeHolder(runtime, digest)
    telemetry = build_telemetry(config.observability)
    metrics_server = None
    if telemetry.metrics is not None:
        host, port = split_host_port(config.observability.metrics.listen)
        check_bindable(host, port + worker, "observability.metrics.listen")
        metrics_server = telemetry.metrics.serve(host, port + worker, ready=lambda: lifecycle.serving)
        if restarts:
            telemetry.metrics.worker_restarts.labels(str(worker)).inc(restarts)
        telemetry.metrics.watch_cascades(lambda: holder.runtime.signals.cascade_counts())
    client = ModelClient(telemetry=telemetry)
    admission = Admission(config.server.admission, telemetry.metrics)  # follows reloads (StreamHandler)
    server, health_servicer, _port = await start_server(holder, address, LocalAnswerer(client), telemetry, admission)
    lifecycle.serving = True
    gc.freeze()  # config, compiled signals and modules live forever: keep them out of every GC pass
    log.info(
        "quorum ext_proc listening on %s (%d models, %d decisions)",
        address,
        len(runtime.models),
        len(runtime.decisions),
    )
    if worker == 0 and not restarts:  # once per server: every worker sits behind the same Envoy
        # Now that Quorum answers, a model this config guards must leave an older Envoy's fast path.
        await asyncio.to_thread(keep_off_at_start, config)
    reloader = Reloader(ConfigSource(source), holder, telemetry.metrics) if source else None
    watch = asyncio.ensure_future(reloader.run()) if reloader else None
    lifecycle.attach(reloader)
    await lifecycle.stop.wait()

    if watch is not None:
        watch.cancel()
    lifecycle.serving = False
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    settings = holder.runtime.config.server  # the active config's, after any reload
    if settings.drain_delay and not lifecycle.hurry.is_set():
        log.info("stopping: NOT_SERVING; still serving for the %.1fs drain delay", settings.drain_delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lifecycle.hurry.wait(), settings.drain_delay)
    log.info("stopping: draining in-flight streams for up to %.1fs", settings.grace_period)
    await server.stop(settings.grace_period)
    await client.aclose()
    telemetry.shutdown()
    if metrics_server is not None:
        metrics_server.shutdown()
    log.info("stopped")


class _Lifecycle:
    """Serving state and signals: SIGTERM/SIGINT stop (a second one hurries the stop); SIGHUP reloads."""

    def __init__(self) -> None:
        self.serving = False  # /readyz: started and not stopping
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self.reloader: Reloader | None = None
        self.reload_pending = False  # SIGHUP before the reloader existed (during start-up)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def attach(self, reloader: Reloader | None) -> None:
        self.reloader = reloader
        if self.reload_pending:
            self._on_reload()

    def _on_stop(self) -> None:
        (self.hurry if self.stop.is_set() else self.stop).set()

    def _on_reload(self) -> None:
        if self.reloader is not None:
            self.reloader.request()
        elif self.serving:
            log.warning("SIGHUP: this server was not started from a config file; nothing to reload")
        else:
            self.reload_pending = True


def run_worker(
    config: Config, address: str, worker: int = 0, source: str | None = None, digest: str = "", restarts: int = 0
) -> None:
    """Run one server process until SIGTERM/SIGINT, on uvloop when it is installed.
    A start-up failure exits with its one-line message (and status 1)."""
    if not logging.getLogger().handlers:  # a spawned worker process: nothing configured logging here
        configure_logging(config.server.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps odd platforms working
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve_forever(config, address, worker, source, digest, restarts))
    except (StartupError, ConfigError) as exc:
        raise SystemExit(f"error: {exc}") from None


def worker_addresses(config: Config, workers: int) -> list[str]:
    host, port = split_host_port(config.server.listen)
    host = f"[{host}]" if ":" in host else host
    return [f"{host}:{port + i}" for i in range(workers)]


def serve(config: Config, workers: int, source: str | None = None, digest: str = "") -> int:
    """Serve in this process (one worker) or supervise `workers` child processes. Each worker
    watches `source` itself; SIGHUP to this process is forwarded to every worker."""
    addresses = worker_addresses(config, workers)
    if workers == 1:
        run_worker(config, addresses[0], 0, source, digest)
        return 0
    for address in addresses:  # one clear line now, rather than one traceback per worker
        check_bindable(*split_host_port(address), "server.listen")
    from extproc.supervisor import Supervisor

    target = functools.partial(run_supervised_worker, source=source, digest=digest)
    return Supervisor(config, addresses, target).run()


def run_supervised_worker(
    config: Config, address: str, worker: int, restarts: int, source: str | None = None, digest: str = ""
) -> None:
    """A worker process of `--workers N`: dies with its supervisor, and knows how often it was restarted."""
    _die_with_parent()
    run_worker(config, address, worker, source, digest, restarts)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process if the supervisor dies (even by SIGKILL), so no worker is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
