"""The record of one local run, shared by every algorithm: stages, model calls, usage, degrade notes.

Algorithms time their stages with `stage()` (a span per stage, a wall-clock latency per stage
name) and report each model call with `completed()`/`failed()`/`record()`; the usage sum, the
per-model usage metrics and the `stages` list of the response trace follow from those calls, so a
new stage or a new algorithm needs no trace code of its own. Algorithm-specific facts go in `fields`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from extproc.modeltypes import Completion, ModelCallError, Usage

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from extproc.runtime import Model
    from extproc.telemetry.recorder import RequestRecorder


class RunTrace:
    def __init__(
        self,
        algorithm: str,
        decision: str,
        recorder: RequestRecorder | None = None,
        models: Mapping[str, Model] | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.decision = decision
        self.recorder = recorder
        self.models = models or {}
        self.started = time.monotonic()
        self.usage = Usage()  # every model call this run made, failed ones included
        self.calls: list[dict[str, Any]] = []
        self.stage_ms: dict[str, float] = {}
        self.degraded: list[str] = []
        self.fields: dict[str, Any] = {}

    @contextmanager
    def stage(self, name: str, span: str, **attributes: Any) -> Iterator[Span | None]:
        """Time stage `name` and, with a recorder, open the child span `span` around it."""
        started = time.monotonic()
        try:
            if self.recorder is None:
                yield None
            else:
                with self.recorder.stage(span, **attributes) as opened:
                    yield opened
        finally:
            self.stage_ms[name] = self.stage_ms.get(name, 0.0) + ms(time.monotonic() - started)

    def completed(self, stage: str, completion: Completion) -> None:
        self.record(stage, completion.model, completion.latency, completion.usage, "ok")

    def failed(self, stage: str, error: ModelCallError, latency: float = 0.0) -> None:
        self.record(stage, error.model, latency, error.usage, f"error: {error.reason}")

    def record(self, stage: str, model: str, latency: float, usage: Usage | None, outcome: str) -> None:
        usage = usage or Usage()
        self.usage.add(usage)
        self.calls.append(
            {"stage": stage, "model": model, "latency_ms": ms(latency), "usage": usage.as_dict(), "outcome": outcome}
        )
        if self.recorder is not None:
            self.recorder.add_usage(self.models.get(model), usage)

    def calls_made(self) -> int:
        return sum(1 for c in self.calls if c["outcome"] != "cancelled")

    def as_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "decision": self.decision,
            **self.fields,
            "degraded": list(self.degraded),
            "stages": list(self.calls),
            "latency_ms": {**self.stage_ms, "total": ms(time.monotonic() - self.started)},
        }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
