"""Prometheus instruments, on a registry of their own so tests and workers do not collide, and the
small HTTP server that exposes them (with the process's liveness and readiness)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

CascadeCounts = Callable[[], Iterable[tuple[str, int, int]]]  # (scope, answered by stage 1, fell through)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


STREAM_ENDS = ("envoy_closed", "quorum_closed", "reset")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "quorum_requests",
            "Requests handled, by decision, model and HTTP status",
            ["decision", "model", "status"],
            registry=r,
        )
        self.processing = Histogram(
            "quorum_extproc_processing_seconds",
            "Time Quorum spent handling one request's ext_proc messages (fusion model calls included)",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fusion_stage = Histogram(
            "quorum_fusion_stage_seconds", "Fusion stage latency", ["stage"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.panel_failures = Counter(
            "quorum_fusion_panel_failures", "Panel model calls that failed", ["model"], registry=r
        )
        self.tokens = Counter("quorum_tokens", "Tokens by model and direction", ["model", "direction"], registry=r)
        self.cost = Counter("quorum_cost", "Cost from configured pricing", ["model", "currency"], registry=r)
        self.guard_matches = Counter(
            "quorum_guard_matches", "Requests a guard matched, by guard and its action", ["guard", "action"], registry=r
        )
        self.inflight = Gauge("quorum_inflight_streams", "ext_proc streams in progress", registry=r)
        stream_ends = Counter(
            "quorum_extproc_streams",
            "ext_proc streams by how they ended: closed by Envoy (half-close), by Quorum once it had answered, "
            "or reset (a client gone, a timeout, or an Envoy that resets instead of closing; see docs/envoy.md)",
            ["end"],
            registry=r,
        )
        self.stream_ends = {end: stream_ends.labels(end) for end in STREAM_ENDS}  # bound once: no lookup per stream
        self.worker_restarts = Counter(
            "quorum_worker_restarts",
            "Times the supervisor restarted this worker's slot after it died (--workers N)",
            ["worker"],
            registry=r,
        )
        self.admission_in_flight = Gauge(
            "quorum_admission_in_flight",
            "Work holding an admission slot: chat requests being routed, fusion runs",
            ["budget"],
            registry=r,
        )
        self.admission_refusals = Counter(
            "quorum_admission_refusals",
            "Requests refused at once with a 503 because a budget was full (routing, fusion, fusion_decision)",
            ["budget"],
            registry=r,
        )
        self.config_reloads = Counter(
            "quorum_config_reloads", "Configuration reload attempts, by result", ["result"], registry=r
        )
        for result in ("success", "failure", "unchanged"):
            self.config_reloads.labels(result)  # exported as 0 before the first reload
        self.config_generation = Gauge(
            "quorum_config_generation", "Configs activated by this process (1: the one it started with)", registry=r
        )
        self.config = Info("quorum_config", "The active configuration: its hash and generation", registry=r)
        self.config_last_reload_success = Gauge(
            "quorum_config_last_reload_successful", "0 if the last reload was rejected", registry=r
        )
        self.config_last_reload_success.set(1)

    def watch_cascades(self, counts: CascadeCounts) -> None:
        """`quorum_domain_cascade_total{scope, stage}`: which stage of the domain cascade decided, read
        from the active runtime's counters at scrape time (nothing is added per request). A reload
        starts new counters, which Prometheus reads as a counter reset."""
        self.registry.register(_CascadeCollector(counts))

    def config_active(self, digest: str, generation: int) -> None:
        self.config_generation.set(generation)
        self.config.info({"hash": digest, "generation": str(generation)})

    def serve(self, host: str, port: int, ready: Callable[[], bool] = lambda: True) -> ThreadingHTTPServer:
        """Serve /metrics, /healthz (the process answers) and /readyz (`ready()`: serving, not draining)
        from a background thread; any other path is a 404."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    serving = ready()
                    self._send(200 if serving else 503, b"ready\n" if serving else b"not serving\n")
                else:
                    self._send(404, b"not found: /metrics, /healthz and /readyz are served here\n")

            def do_HEAD(self) -> None:
                self.do_GET()

            def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the log

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("MetricsServer", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        server = server_class((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="quorum-metrics", daemon=True).start()
        return server


class _CascadeCollector:
    def __init__(self, counts: CascadeCounts) -> None:
        self.counts = counts

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "quorum_domain_cascade",
            "Domain classifications by the stage of the cascade that decided: the static first stage alone, "
            "or the domain model after it fell through (routing.embedding.domain_first_stage)",
            labels=["scope", "stage"],
        )
        for scope, answered, fell_through in self.counts():
            family.add_metric([scope, "first_stage"], answered)
            family.add_metric([scope, "domain_model"], fell_through)
        yield family
