"""Chaos through a real Envoy: a worker SIGKILLed under load, a backend killed mid-stream.

The property-based fuzz of bodies and headers is in test_fuzz.py.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from conftest import module_stack

from extproc.dev.stack import Stack

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
# text -> the backend that must answer it (auto routing by keyword, or the default)
ROUTES = {"my python stack trace": "demo-coder", "hello there": "demo-small"}


USAGE = "{enabled: true, request_stream_usage: true}"
two_workers = module_stack("chaos-workers", server="supervision: {backoff: 200ms}", usage=USAGE, workers=2)
accounting = module_stack("chaos-backend", usage=USAGE)


def metrics_text(stack: Stack, worker: int) -> str:
    host, port = stack.config.observability.metrics.listen.rsplit(":", 1)
    return httpx.get(f"http://{host}:{int(port) + worker}/metrics", timeout=5).text


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def children(pid: int) -> list[int]:
    """Worker processes of `quorum serve` (not multiprocessing's resource tracker)."""
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
        pids = [int(p) for p in fh.read().split()]
    return [p for p in pids if b"spawn_main" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def worker_pid(stack: Stack, worker: int) -> int:
    """The pid of worker `worker`: the child of `quorum serve` listening on its port."""
    port = int(stack.config.server.listen.rsplit(":", 1)[1]) + worker
    inodes = _listening_inodes(port)
    for pid in children(quorum_process(stack).pid):
        fds = f"/proc/{pid}/fd"
        for fd in os.listdir(fds):
            try:
                target = os.readlink(f"{fds}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    raise LookupError(f"no worker listens on {port}")


def wait_for_worker(stack: Stack, worker: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return worker_pid(stack, worker)
        except LookupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def kill_and_wait(pid: int) -> tuple[float, float]:
    """SIGKILL `pid`; (when the signal was sent, when the process was seen dead: gone or a zombie)."""
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.001)
    return killed_at, time.monotonic()


def quorum_process(stack: Stack):
    return next(proc for name, proc in stack.processes if name == "quorum")


class SteadyLoad:
    """`clients` threads sending routed requests back to back; every answer is checked and kept."""

    def __init__(self, stack: Stack, clients: int = 4) -> None:
        self.stack = stack
        self.clients = clients
        self.stop = threading.Event()
        self.results: list[tuple[float, int, str, str, float]] = []  # (done, status, expected, answered by, sent)
        self.pool = ThreadPoolExecutor(clients)

    def __enter__(self) -> SteadyLoad:
        for i in range(self.clients):
            self.pool.submit(self._client, list(ROUTES)[i % len(ROUTES)])
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True)

    def _client(self, text: str) -> None:
        body = {"model": "quorum/auto", "messages": [{"role": "user", "content": f"{text} [[fake:delay_ms=20]]"}]}
        with httpx.Client(base_url=self.stack.envoy_url, timeout=10) as c:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = c.post(CHAT, json=body)
                    answered_by = r.headers.get("x-fake-backend", "")
                    self.results.append((time.monotonic(), r.status_code, ROUTES[text], answered_by, sent))
                except httpx.HTTPError:
                    self.results.append((time.monotonic(), 0, ROUTES[text], "", sent))

    def ok_since(self, when: float) -> int:
        return sum(1 for t, status, *_ in self.results if t > when and status == 200)


def test_sigkilled_worker_is_restarted_while_the_other_keeps_serving(two_workers: Stack) -> None:
    stack = two_workers
    victim = worker_pid(stack, 1)
    with SteadyLoad(stack) as load:
        deadline = time.monotonic() + 20
        while load.ok_since(0) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        killed_at, dead_at = kill_and_wait(victim)
        # the supervisor restarts worker 1 on its port; it says so in its own metrics
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                text = metrics_text(stack, 1)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            if metric(text, "quorum_worker_restarts_total", 'worker="1"') == 1:
                break
            time.sleep(0.1)
        else:
            pytest.fail("worker 1 was not restarted")
        restarted = wait_for_worker(stack, 1)  # its metrics port opens before its gRPC port
        # traffic keeps flowing and reaches the restarted worker
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            served = sum(
                metric(metrics_text(stack, 1), "quorum_requests_total", f'decision="{d}",model="{m}",status="200"')
                for d, m in (("coding", "demo-coder"), ("default", "demo-small"))
            )
            if served >= 5:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the restarted worker serves no traffic")
    assert restarted != victim
    misrouted = [r for r in load.results if r[1] == 200 and r[2] != r[3]]
    assert not misrouted
    log = (stack.workdir / "quorum.log").read_text(encoding="utf-8")
    assert f"worker 1 (pid {victim}) was killed by SIGKILL" in log
    assert f"worker 1 restarted as pid {restarted}" in log
    # Failures are bounded by what was in flight when the worker died (the load generator's outstanding
    # requests then; some of them were on the other worker): Envoy retries a stream that cannot reach the
    # dead worker on the other one, ejects it, and sends nothing more there until its successor is healthy.
    in_flight = [r for r in load.results if r[4] <= dead_at and r[0] >= killed_at]
    failures = [r for r in load.results if r[1] != 200]
    assert all(done >= killed_at for done, *_ in failures), (killed_at, failures)
    assert len(failures) <= len(in_flight), (killed_at, dead_at, failures)
    # How many new streams Envoy retried on the other worker is not asserted: it depends on when Envoy's main
    # thread gets the CPU to apply the ejection (0 to 11 here, 57 once in CI), with or without
    # `update_merge_window: 0s`, so it proved nothing about that setting (test_bootstrap checks it is set).


def test_sigterm_stops_the_supervisor_and_every_worker(two_workers: Stack) -> None:
    """Runs after the kill test (same module stack): the restarted worker stops too."""
    quorum = quorum_process(two_workers)
    workers = children(quorum.pid)
    assert len(workers) == 2
    quorum.send_signal(signal.SIGTERM)
    assert quorum.wait(timeout=30) == 0
    for pid in workers:
        assert not _cmdline(pid)  # gone (a zombie has an empty command line too)


def test_backend_killed_mid_stream_ends_the_stream_with_an_error_never_a_hang(accounting: Stack) -> None:
    """Envoy resets the client's stream when the backend dies after the answer started: the SDK raises
    a connection error at once (no partial answer passes as complete), and Quorum records the request
    as `incomplete` in its metrics and access log."""
    client = openai.OpenAI(base_url=f"{accounting.envoy_url}/v1", api_key="k", max_retries=0, timeout=15)
    started = time.monotonic()
    chunks = []
    with pytest.raises(openai.APIConnectionError):
        stream = client.chat.completions.create(
            model="demo-coder",
            messages=[{"role": "user", "content": "one two three four five six seven [[fake:stream_delay_ms=300]]"}],
            stream=True,
        )
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 2:
                backend = next(p for name, p in accounting.processes if name == "fake-demo-coder")
                os.killpg(backend.pid, signal.SIGKILL)
    assert time.monotonic() - started < 10  # the client learnt at once, it did not wait for a timeout
    assert 2 <= len(chunks) < 6
    labels = 'decision="explicit",model="demo-coder",status="incomplete"'
    deadline = time.monotonic() + 10
    while metric(metrics_text(accounting, 0), "quorum_requests_total", labels) != 1:
        assert time.monotonic() < deadline, metrics_text(accounting, 0)
        time.sleep(0.1)
    assert '"status":"incomplete"' in (accounting.workdir / "quorum.log").read_text(encoding="utf-8")
