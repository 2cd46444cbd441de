"""Admission control: refuse work at once, with an OpenAI-shaped 503, rather than queue it.

Two budgets per worker process, so fusion can never starve routed traffic:

- routing: chat requests between their headers and their route (parse, signals, decision). That
  is the CPU-bound part of a routed request; past `max_in_flight` the event loop is behind and
  every extra request only makes all of them later. Once the route is answered the request stops
  counting: the model's answer streams through Envoy and costs Quorum little.
- fusion: runs of algorithms that answer locally (fusion: each run holds N+2 model calls for
  seconds), capped per worker by `max_fusion_runs` and per decision by its algorithm's
  `max_concurrent_runs` (`algorithm.fusion.max_concurrent_runs`). A request that decides for such
  an algorithm leaves the routing budget and needs a fusion slot.

The counters are plain integers on one event loop: no lock, no await, and nothing on the hot path
but a compare and an add. Prometheus reads them when it scrapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from extproc.errors import Overloaded

if TYPE_CHECKING:
    from extproc.config import AdmissionConfig
    from extproc.decisions import Decision
    from extproc.telemetry.metrics import Metrics


class Admission:
    __slots__ = (
        "config",
        "fusion_by_decision",
        "fusion_runs",
        "max_fusion_runs",
        "max_in_flight",
        "metrics",
        "retry_after",
        "routing",
    )

    def __init__(self, config: AdmissionConfig | None = None, metrics: Metrics | None = None) -> None:
        self.routing = 0
        self.fusion_runs = 0
        self.fusion_by_decision: dict[str, int] = {}
        self.max_in_flight = self.max_fusion_runs = 0
        self.retry_after = 1
        self.metrics = metrics
        self.configure(config)
        if metrics is not None:
            metrics.admission_in_flight.labels("routing").set_function(lambda: self.routing)
            metrics.admission_in_flight.labels("fusion").set_function(lambda: self.fusion_runs)

    def follow(self, config: AdmissionConfig) -> None:
        """The limits of the runtime a stream runs on: a reloaded config applies from its first stream."""
        if config is not self.config:
            self.configure(config)

    def configure(self, config: AdmissionConfig | None) -> None:
        """Apply (new) limits; work already admitted keeps its slot. 0 means no limit."""
        self.config = config
        if config is None:
            self.max_in_flight = self.max_fusion_runs = 0
            return
        self.max_in_flight = config.max_in_flight
        self.max_fusion_runs = config.max_fusion_runs
        self.retry_after = config.retry_after

    def enter_routing(self) -> None:
        """Take a routing slot, or raise Overloaded (a 503 with retry-after)."""
        self._check("routing", self.routing, self.max_in_flight, "requests", "server.admission.max_in_flight")
        self.routing += 1

    def leave_routing(self) -> None:
        self.routing -= 1

    def enter_local(self, decision: Decision) -> None:
        """Take a fusion slot for `decision` (its algorithm answers locally), or raise Overloaded."""
        name = decision.name
        running = self.fusion_by_decision.get(name, 0)
        per_decision = getattr(decision.algorithm, "max_concurrent_runs", None) or 0
        what = f"fusion runs of decision '{name}'"
        self._check("fusion_decision", running, per_decision, what, "fusion.max_concurrent_runs")
        self._check("fusion", self.fusion_runs, self.max_fusion_runs, "fusion runs", "server.admission.max_fusion_runs")
        self.fusion_runs += 1
        self.fusion_by_decision[name] = running + 1

    def leave_local(self, decision: Decision) -> None:
        self.fusion_runs -= 1
        self.fusion_by_decision[decision.name] -= 1

    def _check(self, budget: str, used: int, limit: int, what: str, key: str) -> None:
        if limit and used >= limit:
            self._refuse(budget, f"This router is at its limit of {limit} {what} at once ({key}); retry shortly.")

    def _refuse(self, budget: str, message: str) -> None:
        if self.metrics is not None:
            self.metrics.admission_refusals.labels(budget).inc()
        raise Overloaded(message, retry_after=self.retry_after, code=f"{budget}_capacity_exceeded")
