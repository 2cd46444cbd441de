"""Prometheus instruments, on a registry of their own so tests and workers do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


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

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP from a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
