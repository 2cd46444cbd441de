"""`quorum serve --workers N`: start N worker processes and keep them running.

A worker that dies on its own (OOM kill, a native crash) is restarted on its port after a backoff
that doubles with each quick death (`server.supervision.backoff` up to `max_backoff`) and starts
over once a worker has stayed up for `stable_after`. The other workers keep serving meanwhile.
More than `max_restarts` restarts within `restart_window` means something is wrong that restarting
will not fix: the supervisor stops every worker and exits 1, so systemd or Kubernetes sees it.

Each restart is logged by the supervisor and counted by the worker it starts: worker i exports
`quorum_worker_restarts_total{worker="i"}`, the number of times its slot has been restarted.
SIGTERM/SIGINT stop every worker (each drains for `server.grace_period`) and exit 0; SIGHUP is
forwarded to every worker (each reloads its config).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from extproc.config import Config, SupervisionConfig

log = logging.getLogger("quorum.supervisor")

POLL_SECONDS = 0.1

WorkerTarget = Callable[[Config, str, int, int], None]  # (config, address, worker index, restarts)


@dataclass
class Slot:
    """One worker position (index and port) and the process currently filling it."""

    index: int
    address: str
    process: BaseProcess | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None  # set while the slot waits out its backoff


@dataclass
class RestartBudget:
    """At most `limit` restarts in any `window` seconds (a sliding window)."""

    limit: int
    window: float
    times: collections.deque[float] = field(default_factory=collections.deque)

    def allow(self, now: float) -> bool:
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


class Supervisor:
    def __init__(
        self, config: Config, addresses: list[str], target: WorkerTarget, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.policy: SupervisionConfig = config.server.supervision
        self.target = target
        self.clock = clock
        self.slots = [Slot(i, a) for i, a in enumerate(addresses)]
        self.budget = RestartBudget(self.policy.max_restarts, self.policy.restart_window)
        self.context = multiprocessing.get_context("spawn")
        self.stopping = False

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (exit code 0) or the restart budget is spent (1)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._forward_reload)
        try:
            return self.supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def supervise(self) -> int:
        """Start every worker, restart the ones that die until `stopping` is set, then stop them all."""
        for slot in self.slots:
            self._start(slot)
        try:
            return self._watch()
        finally:
            self._stop_all()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(self.slots))
        self.stopping = True

    def _forward_reload(self, signum: int, _frame: Any) -> None:
        for slot in self.slots:
            process = slot.process
            if process is not None and process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    def _watch(self) -> int:
        while not self.stopping:
            now = self.clock()
            for slot in self.slots:
                if slot.restart_at is not None:
                    if now >= slot.restart_at:
                        slot.restart_at = None
                        self._start(slot)
                    continue
                process = slot.process
                if process is None or process.is_alive():
                    continue
                if not self._schedule_restart(slot, process, now):
                    return 1
            time.sleep(POLL_SECONDS)
        return 0

    def _schedule_restart(self, slot: Slot, process: BaseProcess, now: float) -> bool:
        """Plan the restart of a dead worker; False when the restart budget is spent."""
        cause = _describe_exit(process.exitcode)
        uptime = now - slot.started
        if not self.budget.allow(now):
            log.error(
                "worker %d (pid %s) %s after %.1fs; more than %d restarts within %.0fs: stopping the server",
                slot.index,
                process.pid,
                cause,
                uptime,
                self.policy.max_restarts,
                self.policy.restart_window,
            )
            return False
        policy = self.policy
        if uptime >= policy.stable_after:
            slot.backoff = policy.backoff
        else:
            slot.backoff = min(policy.max_backoff, slot.backoff * 2 if slot.backoff else policy.backoff)
        slot.restarts += 1
        slot.restart_at = now + slot.backoff
        slot.process = None
        log.error(
            "worker %d (pid %s) %s after %.1fs; restarting it in %.2fs (restart %d of this worker)",
            slot.index,
            process.pid,
            cause,
            uptime,
            slot.backoff,
            slot.restarts,
        )
        return True

    def _start(self, slot: Slot) -> None:
        process = self.context.Process(
            target=self.target,
            args=(self.config, slot.address, slot.index, slot.restarts),
            name=f"quorum-worker-{slot.index}",
        )
        process.start()
        slot.process, slot.started = process, self.clock()
        if slot.restarts:
            log.info("worker %d restarted as pid %s on %s", slot.index, process.pid, slot.address)

    def _stop_all(self) -> None:
        running = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        deadline = time.monotonic() + self.config.server.grace_period + 5
        for process in running:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %s did not stop in time: killing it", process.pid)
                process.kill()
                process.join()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
