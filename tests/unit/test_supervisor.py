"""Worker supervision with real child processes: restart after a death, give up after too many."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from extproc.config import Config, SupervisionConfig, parse_config
from extproc.supervisor import RestartBudget, Slot, Supervisor

CONFIG = "version: v1\nproviders: {models: [{name: m, base_url: 'http://127.0.0.1:1/v1'}]}\n"


def config(**policy: float) -> Config:
    cfg = parse_config(CONFIG)
    supervision = SupervisionConfig(**{"backoff": 0.05, "max_backoff": 0.2, **policy})
    server = cfg.server.model_copy(update={"supervision": supervision, "grace_period": 1.0})
    return cfg.model_copy(update={"server": server})


def sleeping_worker(config: Config, address: str, worker: int, restarts: int) -> None:
    """Say who we are (the `address` is a file here), then serve forever; SIGTERM ends it."""
    with open(address, "a", encoding="utf-8") as fh:
        fh.write(f"{worker} {restarts} {os.getpid()}\n")
    while True:
        time.sleep(1)


def crashing_worker(config: Config, address: str, worker: int, restarts: int) -> None:
    if worker == 0:
        raise SystemExit(3)
    sleeping_worker(config, address, worker, restarts)


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def lines(path: Path) -> list[list[int]]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [[int(x) for x in line.split()] for line in text.splitlines()]


def start(supervisor: Supervisor) -> tuple[threading.Thread, dict[str, int]]:
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", supervisor.supervise()))
    thread.start()
    return thread, result


def test_a_killed_worker_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    files = [tmp_path / "w0", tmp_path / "w1"]
    supervisor = Supervisor(config(), [str(f) for f in files], sleeping_worker)
    thread, result = start(supervisor)
    try:
        wait_for(lambda: all(lines(f) for f in files))
        [[_, _, victim]] = lines(files[0])
        [[_, _, survivor]] = lines(files[1])
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(lines(files[0])) == 2)
        assert lines(files[0])[1][:2] == [0, 1]  # worker 0 again, told it is its first restart
        assert lines(files[1]) == [[1, 0, survivor]]  # never touched
        os.kill(survivor, 0)  # still alive
        assert supervisor.slots[0].restarts == 1
    finally:
        supervisor.stopping = True
        thread.join(30)
    assert result["code"] == 0
    assert all(not s.process or not s.process.is_alive() for s in supervisor.slots)


def test_too_many_restarts_in_the_window_stops_everything_with_exit_1(tmp_path: Path, caplog) -> None:
    files = [tmp_path / "w0", tmp_path / "w1"]
    supervisor = Supervisor(config(max_restarts=2), [str(f) for f in files], crashing_worker)
    thread, result = start(supervisor)
    thread.join(60)
    assert result["code"] == 1
    assert supervisor.slots[0].restarts == 2
    assert not supervisor.slots[1].process.is_alive()  # the healthy worker was stopped too
    assert "more than 2 restarts within 60s" in caplog.text
    assert "exited with code 3" in caplog.text


class DeadProcess:
    pid = 1234
    exitcode = -signal.SIGKILL

    def is_alive(self) -> bool:
        return False


def test_backoff_doubles_for_quick_deaths_and_starts_over_after_a_stable_run() -> None:
    policy = config(backoff=0.5, max_backoff=3, stable_after=30, max_restarts=100)
    supervisor = Supervisor(policy, ["a"], sleeping_worker)
    slot = Slot(0, "a")
    waits = []
    now = 0.0
    for uptime in (1, 1, 1, 1, 1, 40, 1):
        slot.started = now
        now += uptime
        assert supervisor._schedule_restart(slot, DeadProcess(), now)
        waits.append(slot.backoff)
        now += slot.backoff
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 0.5, 1.0]
    assert slot.restarts == 7


def test_restart_budget_is_a_sliding_window() -> None:
    budget = RestartBudget(limit=2, window=10)
    assert budget.allow(0) and budget.allow(1)
    assert not budget.allow(5)
    assert budget.allow(10.5)  # the restart at 0 has left the window
    assert not budget.allow(10.6)


@pytest.mark.parametrize(("code", "text"), [(-9, "was killed by SIGKILL"), (1, "exited with code 1")])
def test_exit_is_described(code: int, text: str) -> None:
    from extproc.supervisor import _describe_exit

    assert _describe_exit(code) == text
