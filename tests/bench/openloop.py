"""Load shapes shared by the overload and soak benchmarks, on the minimal HTTP/1.1 client of fusion.py.

- `closed_loop`: `concurrency` clients, each sending its next request when the last one is answered.
- `open_loop`: requests sent on a fixed schedule whatever happens to earlier ones (the way real
  traffic arrives); latency counts from the scheduled time, so a late sender is not hidden.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fusion import RawHTTP, pct
from reportlib import write_section

TIMEOUT_S = 30.0
MAX_CONNECTIONS = 2000  # beyond this the client itself is the bottleneck: counted, not sent


@dataclass
class Sample:
    at: float  # monotonic seconds when it was due
    latency_ms: float  # from `at` to the end of the answer
    status: int  # 0: transport error or timeout, -1: not sent (client connection cap)
    kind: str


class Pool:
    """Idle keep-alive connections to one address, opened as needed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[RawHTTP] = []
        self.open = 0

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        conn = self.idle.pop() if self.idle else None
        if conn is None:
            if self.open >= MAX_CONNECTIONS:
                return -1, {}, b""
            self.open += 1
            conn = RawHTTP(self.host, self.port)
        try:
            answer = await asyncio.wait_for(conn.post(path, body, headers), TIMEOUT_S)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            self.open -= 1
            await conn.close()
            return 0, {}, b""
        self.idle.append(conn)
        return answer

    async def close(self) -> None:
        for conn in self.idle:
            await conn.close()
        self.idle.clear()


Request = Callable[[int], tuple[str, bytes, dict[str, str]]]  # i -> (kind, body, headers)


async def _one(pool: Pool, path: str, request: Request, i: int, due: float, out: list[Sample]) -> None:
    kind, body, headers = request(i)
    status, _, _ = await pool.post(path, body, headers)
    out.append(Sample(due, (time.monotonic() - due) * 1000, status, kind))


async def open_loop(pool: Pool, path: str, request: Request, rate: float, seconds: float) -> list[Sample]:
    out: list[Sample] = []
    tasks = set()
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one(pool, path, request, i, due, out))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    return out


async def closed_loop(
    pool: Pool, path: str, request: Request, concurrency: int, seconds: float | None = None, total: int | None = None
) -> list[Sample]:
    """Until `seconds` have passed or `total` requests were sent."""
    out: list[Sample] = []
    end = time.monotonic() + seconds if seconds is not None else float("inf")
    counter = iter(range(total if total is not None else 1 << 62))

    async def client() -> None:
        for i in counter:
            if time.monotonic() >= end:
                return
            await _one(pool, path, request, i, time.monotonic(), out)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return out


def summary(samples: list[Sample], seconds: float) -> dict[str, float]:
    """`goodput`: successful answers per second of the phase, counted until the last answer came back
    (answers that drain after the schedule ended stretch the phase instead of inflating the rate)."""
    ok = [s.latency_ms for s in samples if s.status == 200]
    if samples:
        start = min(s.at for s in samples)
        seconds = max(seconds, max(s.at + s.latency_ms / 1000 for s in samples) - start)
    refused = [s.latency_ms for s in samples if s.status in (429, 503)]
    failed = collections.Counter(s.status for s in samples if s.status not in (200, 429, 503))
    return {
        "sent": len(samples),
        "ok": len(ok),
        "goodput": len(ok) / seconds if seconds else 0.0,
        "p50": pct(ok, 50),
        "p99": pct(ok, 99),
        "refused": len(refused),
        "refused_p50": pct(refused, 50),
        "refused_p99": pct(refused, 99),
        "errors": sum(failed.values()),
        "error_statuses": ", ".join(
            f"{'no answer' if code == 0 else 'not sent' if code == -1 else code}: {n}"
            for code, n in sorted(failed.items())
        ),
    }


def publish(report: str, output: str | None, section: str, workdir: Path) -> None:
    """Print the report, write it into its section of `output`, and say where the logs are."""
    print(report)
    if output:
        write_section(output, section, report)
    print(f"logs: {workdir}", file=sys.stderr)
