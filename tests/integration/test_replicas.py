"""Two Quorum replicas behind one real Envoy: SIGKILL one under steady load, then restart it.

What an operator running N replicas (a Kubernetes Deployment behind the quorum_extproc cluster)
relies on: a dead replica costs at most the requests it was processing at that moment; no request
goes to a wrong or default model; the survivor carries the load; the restarted replica gets
traffic again. Counts, not timings; every wait has a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import LARGE_KEY, backend_requests, write_config
from grpc_health.v1 import health_pb2

from extproc.config import load_config
from extproc.dev.stack import Stack, free_port
from extproc.healthcheck import check
from extproc.pb import SERVICE_NAME
from extproc.runtime import build_runtime
from extproc.server import start_server

pytestmark = pytest.mark.integration

CONCURRENCY = 4
# (prompt, extra headers, the model Quorum must route it to, the provider model id its backend sees)
TRAFFIC = [
    ("fix my python stack trace", {}, "demo-coder", "coder-v1"),
    ("hello there", {}, "demo-small", "small-v1"),
    ("what should I wear today", {"x-user-tier": "gold"}, "demo-large", "large-v1"),
]


@dataclass
class Outcome:
    started: float
    status: int
    expected: str
    routed_to: str | None
    body: dict


class Replica:
    """One `quorum serve` process with its own config (its own port), started and killed at will."""

    def __init__(self, config: Path, address: str, log: Path) -> None:
        self.config, self.address, self.log = config, address, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "QUORUM_TEST_LARGE_KEY": LARGE_KEY}
        with open(self.log, "ab") as log:
            argv = [sys.executable, "-m", "extproc", "serve", "--config", str(self.config)]
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_serving(self, timeout: float = 60) -> None:
        wait_for(lambda: check(self.address, timeout=2) == "SERVING", timeout, f"{self.address} serving")

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def host_stats(stack: Stack) -> dict[str, dict[str, str]]:
    """Envoy's per-endpoint view of the quorum_extproc cluster (admin /clusters)."""
    out: dict[str, dict[str, str]] = {}
    for line in httpx.get(f"{stack.admin_url}/clusters", timeout=5).text.splitlines():
        match = re.fullmatch(r"quorum_extproc::([^:]+:\d+)::(\w+)::(.*)", line)
        if match:
            out.setdefault(match[1], {})[match[2]] = match[3]
    return out


def streams(stack: Stack, address: str, stat: str = "rq_total") -> int:
    return int(host_stats(stack).get(address, {}).get(stat, "0"))


class Load:
    """CONCURRENCY clients sending routed requests back to back until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CONCURRENCY)]

    def _client(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for prompt, headers, expected, _ in itertools.islice(itertools.cycle(TRAFFIC), offset, None):
                if self.stopping.is_set():
                    return
                started = time.monotonic()
                body = {"model": "quorum/auto", "messages": [{"role": "user", "content": prompt}]}
                try:
                    reply = client.post("/v1/chat/completions", json=body, headers=headers)
                    outcome = Outcome(started, reply.status_code, expected, reply.headers.get("x-quorum-model"), {})
                    outcome.body = reply.json()
                except (httpx.HTTPError, ValueError) as exc:  # recorded, so the assertions below show it
                    outcome = Outcome(started, 0, expected, None, {"exception": repr(exc)})
                self.outcomes.append(outcome)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def completed_after(self, moment: float) -> int:
        return sum(1 for o in list(self.outcomes) if o.started > moment)


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[tuple[Stack, Replica, Replica]]:
    path_a, ports = write_config(tmp_path)
    addresses = [f"127.0.0.1:{ports['grpc_port']}", f"127.0.0.1:{free_port()}"]
    config = yaml.safe_load(path_a.read_text(encoding="utf-8"))
    config["envoy"]["extproc_endpoints"] = addresses
    path_a.write_text(yaml.safe_dump(config), encoding="utf-8")
    config["server"]["listen"] = addresses[1]
    config["observability"]["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
    path_b = tmp_path / "quorum-b.yaml"
    path_b.write_text(yaml.safe_dump(config), encoding="utf-8")
    paths = (path_a, path_b)
    replicas = [Replica(p, a, tmp_path / f"replica-{n}.log") for p, a, n in zip(paths, addresses, "ab", strict=True)]
    try:
        for replica in replicas:
            replica.start()
        with Stack(path_a, tmp_path, with_quorum=False) as stack:
            for replica in replicas:
                replica.wait_serving()
            yield stack, replicas[0], replicas[1]
    finally:
        for replica in replicas:
            replica.stop()


def test_sigkill_of_one_replica_under_load(two_replicas: tuple[Stack, Replica, Replica]) -> None:
    stack, victim, survivor = two_replicas
    a, b = victim.address, survivor.address
    wait_for(lambda: "failed" not in str(host_stats(stack)), 30, "both replicas healthy in Envoy")
    with Load(stack.envoy_url) as load:
        # Both replicas take streams before the kill.
        wait_for(lambda: min(streams(stack, a), streams(stack, b)) >= 20, 60, "load on both replicas")
        victim.kill()  # returns once the process is reaped: its sockets are closed
        killed_at = time.monotonic()
        wait_for(lambda: load.completed_after(killed_at) >= 60, 60, "60 requests after the kill")
        restarted_at = time.monotonic()
        victim.start()
        victim.wait_serving()
        served_by_a = streams(stack, a)
        wait_for(lambda: streams(stack, a) - served_by_a >= 20, 60, "traffic back on the restart")
        served_by_b = streams(stack, b)
        wait_for(lambda: streams(stack, b) - served_by_b >= 20, 60, "traffic still on the survivor")
    outcomes = list(load.outcomes)

    # No request went to a wrong or default model: every answer came from the model its signals chose...
    ok = [o for o in outcomes if o.status == 200]
    assert all(o.routed_to == o.expected for o in ok), Counter((o.expected, o.routed_to) for o in ok)
    # ...and each backend saw only requests routed to it, with its own provider model id: every answer
    # it gave, plus at most the requests for it that failed (routed just before their stream broke).
    for _, _, model, provider_id in TRAFFIC:
        seen = backend_requests(stack, model)
        assert {r["body"]["model"] for r in seen} <= {provider_id}
        answered = sum(1 for o in ok if o.expected == model)
        failed_here = sum(1 for o in outcomes if o.status != 200 and o.expected == model)
        assert answered <= len(seen) <= answered + failed_here, model

    # Failures: only requests already in flight when the replica died (there are at most CONCURRENCY),
    # each an OpenAI-shaped error from Envoy failing closed; Envoy retries on the other replica the
    # streams that could not reach the dead one, so nothing sent after its death fails.
    failed = [o for o in outcomes if o.status != 200]
    admin_stats = httpx.get(f"{stack.admin_url}/stats").text.splitlines()
    stats = [line for line in admin_stats if "extproc.upstream_rq_retry" in line]
    assert len(failed) <= CONCURRENCY, (
        [(round(o.started - killed_at, 3), round(o.started - restarted_at, 3), o.body) for o in failed],
        stats,
    )
    assert all(o.started < killed_at for o in failed)
    for o in failed:
        assert o.status in (500, 502, 503, 504)
        assert set(o.body["error"]) >= {"message", "type", "code"}
    # Nothing started after the kill failed, through the kill and the restart.
    assert load.completed_after(killed_at) > 60
    assert all(o.status == 200 for o in outcomes if o.started > restarted_at)


async def test_envoy_reads_not_serving_and_takes_the_replica_out(tmp_path: Path) -> None:
    """What Quorum reports while it drains (NOT_SERVING) reaches Envoy through the active health check:
    new streams go to the other replica, and come back when the replica reports SERVING again."""
    path, ports = write_config(tmp_path)
    runtime = build_runtime(load_config(path), environ={"QUORUM_TEST_LARGE_KEY": LARGE_KEY})
    servers = [await start_server(runtime, f"127.0.0.1:{port}") for port in (ports["grpc_port"], free_port())]
    addresses = [f"127.0.0.1:{port}" for _, _, port in servers]
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["envoy"]["extproc_endpoints"] = addresses
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    stack = Stack(path, tmp_path, with_quorum=False)
    (_, draining, _), (a, b) = servers[0], addresses
    try:
        await asyncio.to_thread(stack.start)

        async def flags() -> str:
            return (await asyncio.to_thread(host_stats, stack))[a]["health_flags"]

        async def until(condition: Callable[[str], bool]) -> None:
            for _ in range(300):
                if condition(await flags()):
                    return
                await asyncio.sleep(0.1)
            raise TimeoutError(await flags())

        await until(lambda f: f == "healthy")
        draining.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await until(lambda f: "failed_active_hc" in f)
        before = await asyncio.to_thread(lambda: (streams(stack, a), streams(stack, b)))
        async with httpx.AsyncClient(base_url=stack.envoy_url, timeout=30) as client:
            body = {"model": "quorum/auto", "messages": [{"role": "user", "content": "fix my python stack trace"}]}
            replies = [await client.post("/v1/chat/completions", json=body) for _ in range(10)]
            assert [r.headers.get("x-quorum-model") for r in replies] == ["demo-coder"] * 10
            after = await asyncio.to_thread(lambda: (streams(stack, a), streams(stack, b)))
            assert after[0] == before[0]  # nothing new on the draining replica
            assert after[1] - before[1] >= 10
            draining.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
            await until(lambda f: f == "healthy")
            for _ in range(50):  # round robin: a few requests suffice; a loaded machine may need more
                await client.post("/v1/chat/completions", json=body)
                if await asyncio.to_thread(streams, stack, a) > after[0]:
                    break
        assert streams(stack, a) > after[0]  # back in rotation
    finally:
        await asyncio.to_thread(stack.stop)
        for server, _, _ in servers:
            await server.stop(0)
