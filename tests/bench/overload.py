"""Overload benchmark: open-loop load at about twice the measured capacity, routed and fusion.

    .venv/bin/python tests/bench/overload.py --runs 3 --output docs/benchmarks.md  # about 7 min (`make bench`)
    .venv/bin/python tests/bench/overload.py --quick                               # smoke run, about 1 min

What runs: fake backends (fixed latency --latency-ms), `quorum serve` (one worker, admission budgets
sized to its CPU unless --admission says otherwise, capped at --quorum-cpu of a core by a cpu cgroup
so that it is what saturates) and Envoy (`--concurrency 1`), all on this machine's cores. The VM's
speed drifts by tens of percent over minutes: --runs repeats every target and the verdicts read
the medians.
For each target (a routed decision, then a fusion decision):

1. capacity: a closed loop for --measure s at the concurrency admitted without a refusal (routed:
   Envoy's ext_proc stream cap; fusion: `max_fusion_runs`), with Quorum's CPU per answer;
2. unloaded p99: open loop at half that capacity for --measure s;
3. overload: open loop at twice that capacity for --duration s (30 by default). Reported: goodput
   (200s per second) against C, p99 of the admitted requests against the unloaded p99, how fast
   refusals (503: Quorum's admission budgets, or Envoy's cap on open ext_proc streams,
   `router_overloaded`) come back and who refused, Quorum's CPU per answer, other errors, Quorum's
   RSS before, at its peak and after;
4. recovery: open loop at half the capacity again right after: its p99 against the unloaded p99;
5. capacity again. C is the mean of the two capacity phases: this VM's speed drifts over minutes.

A last phase runs fusion at 2·C(fusion) together with routed traffic at C(routed)/2 and reports the
routed requests' goodput and p99 there: fusion overload must not starve routed traffic.
Latency counts from each request's scheduled send time (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusion import rss_mib, run_async
from loadgen import add_layout_option, check_layout, cpu_seconds, dedicate_cpu
from openloop import Pool, closed_loop, open_loop, publish, summary
from reportlib import environment_lines, scan_logs, table

from extproc.bootstrap.extproc_cluster import max_extproc_streams
from extproc.dev.stack import Stack, find_envoy, free_port

SECTION = "overload"
CHAT = "/v1/chat/completions"
TARGETS = {"routed": "hello there, a routed request", "fusion": "compare these two options"}
# Budgets sized to --quorum-cpu 0.25 (docs/configuration.md, "Admission"): Quorum's defaults (64 and 16)
# are sized for a whole core and let admitted requests queue far longer than 3x their unloaded p99 here.
SIZED_ADMISSION = "{max_in_flight: 12, max_fusion_runs: 4}"
GOODPUT_TARGET = 0.90
P99_TARGET = 3.0

CONFIG = """\
version: v1
server:
  listen: "127.0.0.1:{grpc_port}"
  grace_period: 1s{admission}
envoy: {{listen: "127.0.0.1:{envoy_port}", admin: "127.0.0.1:{admin_port}"}}
observability:
  metrics: {{listen: "127.0.0.1:{metrics_port}"}}
  access_log: false
providers:
  defaults: {{default_model: small}}
  models:
    - {{name: small, base_url: "http://127.0.0.1:{small_port}/v1"}}
    - {{name: judge, base_url: "http://127.0.0.1:{judge_port}/v1"}}
routing:
  auto_model_names: [quorum/auto]
  signals:
    keyword: [{{name: compare, keywords: [compare], operator: any}}]
  decisions:
    - name: deliberate
      priority: 100
      rules: {{operator: AND, conditions: [{{type: keyword, name: compare}}]}}
      algorithm:
        type: fusion
        fusion: {{model: judge, analysis_models: [small, judge]}}
"""


def body(text: str) -> bytes:
    return b'{"model":"quorum/auto","messages":[{"role":"user","content":"' + text.encode() + b'"}]}'


def request_for(kind: str):
    payload = body(TARGETS[kind])
    return lambda _i: (kind, payload, {})


def write_config(workdir: Path, admission: str) -> Path:
    names = ("grpc_port", "envoy_port", "admin_port", "metrics_port", "small_port", "judge_port")
    ports = {name: free_port() for name in names}
    path = workdir / "quorum.yaml"
    admission = "" if admission == "{}" else f"\n  admission: {admission}"  # "{}": the defaults
    path.write_text(CONFIG.format(admission=admission, **ports), encoding="utf-8")
    return path


class RssWatch:
    """Samples a process's RSS every 0.5 s while a phase runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(rss_mib(self.pid))
            await asyncio.sleep(0.5)

    def __enter__(self) -> RssWatch:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


def refusal_counts(stack: Stack) -> tuple[int, int]:
    """(requests Quorum refused itself, requests Envoy refused at its ext_proc stream cap) so far."""
    host, port = stack.config.observability.metrics.listen.rsplit(":", 1)
    text = httpx.get(f"http://{host}:{port}/metrics", timeout=5).text
    quorum = sum(float(v) for v in re.findall(r"^quorum_admission_refusals_total\{[^}]*\} (\S+)$", text, re.M))
    stats = httpx.get(f"{stack.admin_url}/stats?filter=^cluster.quorum_extproc.upstream_rq_active_overflow$").text
    return int(quorum), int(stats.rsplit(":", 1)[1])


async def capacity_phase(pool: Pool, request, concurrency: int, seconds: float, pid: int) -> tuple[float, float]:
    """(answers per second, Quorum's CPU ms per answer) of a closed loop of `concurrency` clients."""
    cpu = cpu_seconds(pid)
    result = summary(await closed_loop(pool, CHAT, request, concurrency, seconds=seconds), seconds)
    return result["goodput"], 1000 * (cpu_seconds(pid) - cpu) / max(1, result["ok"])


async def measure_target(
    pool: Pool, stack: Stack, kind: str, args: argparse.Namespace, pids: dict[str, int], concurrency: int
) -> dict:
    pid = pids["quorum"]
    request = request_for(kind)
    await closed_loop(pool, CHAT, request, concurrency, seconds=min(2.0, args.measure))  # warm-up
    before, cpu_per_answer = await capacity_phase(pool, request, concurrency, args.measure, pid)
    unloaded = summary(await open_loop(pool, CHAT, request, before / 2, args.measure), args.measure)
    rss_before = rss_mib(pid)
    cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
    refusals_before = refusal_counts(stack)
    started = time.monotonic()
    with RssWatch(pid) as watch:
        loaded = summary(await open_loop(pool, CHAT, request, before * 2, args.duration), args.duration)
    elapsed = time.monotonic() - started
    cpu = {name: (cpu_seconds(p) - cpu_before[name]) / elapsed for name, p in pids.items()}
    refusals = tuple(after - b for after, b in zip(refusal_counts(stack), refusals_before, strict=True))
    rss_after = rss_mib(pid)
    recovery = summary(await open_loop(pool, CHAT, request, before / 2, args.measure), args.measure)
    # Capacity again after the overload: the host's speed drifts over minutes, and goodput is judged
    # against what Quorum could do on both sides of the phase, not on one 8 s sample.
    after, _ = await capacity_phase(pool, request, concurrency, args.measure, pid)
    return {
        "kind": kind,
        "capacity": (before + after) / 2,
        "capacities": (before, after),
        "offered": before * 2,
        "unloaded": unloaded,
        "loaded": loaded,
        "recovery": recovery,
        "rss": (rss_before, max(watch.samples, default=rss_before), rss_after),
        "cpu": cpu,
        "cpu_per_answer": (cpu_per_answer, 1000 * cpu["quorum"] * elapsed / max(1, loaded["ok"])),
        "refusals": refusals,
    }


async def starvation(pool: Pool, args: argparse.Namespace, routed_rate: float, fusion_rate: float) -> dict:
    """Fusion at twice its capacity while routed traffic runs at half of its own."""
    routed, fusion = await asyncio.gather(
        open_loop(pool, CHAT, request_for("routed"), routed_rate / 2, args.duration),
        open_loop(pool, CHAT, request_for("fusion"), fusion_rate * 2, args.duration),
    )
    return {"routed": summary(routed, args.duration), "fusion": summary(fusion, args.duration)}


def goodput_ratio(result: dict) -> float:
    return result["loaded"]["goodput"] / result["capacity"] if result["capacity"] else 0.0


def p99_ratio(result: dict) -> float:
    unloaded = result["unloaded"]["p99"]
    return result["loaded"]["p99"] / unloaded if unloaded else float("nan")


def median_of(results: list[dict], kind: str, key: str | Callable[[dict], float]) -> float:
    values = [key(r) if callable(key) else r[key] for r in results if r["kind"] == kind]
    return statistics.median(values) if values else float("nan")


async def run(stack: Stack, args: argparse.Namespace) -> tuple[list[dict], dict]:
    pids = {name: p.pid for name, p in stack.processes}
    pids["load generator"] = os.getpid()
    host, port = stack.envoy_url.removeprefix("http://").rsplit(":", 1)
    pool = Pool(host, int(port))
    fusion_runs = stack.config.server.admission.max_fusion_runs or 16
    try:
        results = []
        # Capacity is measured at the concurrency Envoy and Quorum admit, so that it refuses nothing:
        # more clients would make the capacity phase an overload of its own.
        streams = max_extproc_streams(stack.config, stack.config.server.workers)
        for run_number in range(1, args.runs + 1):
            for kind, clients in (("routed", streams), ("fusion", fusion_runs)):
                results.append(await measure_target(pool, stack, kind, args, pids, clients) | {"run": run_number})
        mixed = await starvation(
            pool, args, median_of(results, "routed", "capacity"), median_of(results, "fusion", "capacity")
        )
    finally:
        await pool.close()
    return results, mixed


def admission_cost(config_path: Path) -> tuple[float, float]:
    """(ns per routed request spent in admission, µs of handler work per routed request), in-process.

    The admission check is one compare and two adds on the request path; it is timed on its own,
    best of 5, and set against the whole handler's work for the same request (inproc.py).
    """
    from inproc import handler_us_per_request

    from extproc.admission import Admission
    from extproc.config import load_config

    admission = Admission(load_config(config_path).server.admission)
    n = 200_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            admission.enter_routing()
            admission.leave_routing()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e9, handler_us_per_request(config_path, body(TARGETS["routed"]))


def cap_cpu(pid: int, cores: float) -> Callable[[], None] | None:
    """Limit `pid` (every thread of it) to `cores` of CPU time with a cpu cgroup, as a Kubernetes CPU
    limit on a sidecar does, so that Quorum and not the load generator or Envoy is what saturates;
    returns the undo, or None when this machine has no writable cpu cgroup (v1 `cpu` or v2 `cpu.max`)."""
    period = 10_000  # µs: a short period, so a throttled Quorum waits at most ~10 ms, not ~100 ms
    quota = max(1_000, int(cores * period))
    name = f"quorum-overload-{os.getpid()}"
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            group, root = v1 / name, v1
            group.mkdir()
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
            group, root = v2 / name, v2
            group.mkdir()
            (group / "cpu.max").write_text(f"{quota} {period}")
        else:
            return None
        (group / "cgroup.procs").write_text(str(pid))
    except OSError:
        return None

    def undo() -> None:
        with contextlib.suppress(OSError):
            (root / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()

    return undo


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}"  # nan: nothing to report


def render(
    results: list[dict],
    mixed: dict,
    args: argparse.Namespace,
    stack: Stack,
    notes: list[str],
    cost: tuple[float, float],
) -> str:
    admission = stack.config.server.admission
    layout = (
        "Quorum pinned to CPU 1, everything else to CPU 0 (`--layout dedicated`)"
        if args.layout == "dedicated"
        else "nothing pinned (`--layout shared`)"
    )
    cap = (
        f"Quorum is capped at {args.quorum_cpu:g} of a core by a cpu cgroup (as a Kubernetes CPU limit on the "
        "sidecar would), so that Quorum, not the Python load generator or Envoy on the other core, is what "
        "saturates: uncapped, Quorum routes faster than this load generator can offer twice its rate."
        if args.capped
        else "Quorum is not capped (`--quorum-cpu 0`, or no writable cpu cgroup here): the routed capacity is then "
        "the load generator's and Envoy's on their core, not Quorum's, and the routed overload figures measure them."
    )
    rows = []
    cpu_rows: list[tuple] = []
    verdicts = []
    for r in results:
        loaded, unloaded, recovery = r["loaded"], r["unloaded"], r["recovery"]
        ratio_goodput, ratio_p99 = goodput_ratio(r), p99_ratio(r)
        label = r["kind"] if args.runs == 1 else f"{r['kind']}, run {r['run']}"
        cpu_rows.append((label, *(f"{100 * v:.0f}" for v in r["cpu"].values())))
        rows.append(
            (
                label,
                "{:.0f} ({:.0f} / {:.0f})".format(r["capacity"], *r["capacities"]),
                f"{r['offered']:.0f}",
                f"{loaded['goodput']:.0f} ({ratio_goodput:.0%})",
                f"{_ms(unloaded['p99'])} → {_ms(loaded['p99'])} ({ratio_p99:.1f}x)",
                f"{loaded['refused']} ({_ms(loaded['refused_p50'])} / {_ms(loaded['refused_p99'])})",
                "{} / {}".format(*r["refusals"]),
                "{:.2f} → {:.2f}".format(*r["cpu_per_answer"]),
                f"{loaded['errors']} ({loaded['error_statuses']})" if loaded["errors"] else 0,
                "{:.0f} / {:.0f} / {:.0f}".format(*r["rss"]),
                f"{_ms(recovery['p99'])} ({recovery['p99'] / unloaded['p99']:.1f}x)" if unloaded["p99"] else "-",
            )
        )
    for kind in TARGETS:
        ratio_goodput, ratio_p99 = median_of(results, kind, goodput_ratio), median_of(results, kind, p99_ratio)
        median = "" if args.runs == 1 else f" (median of {args.runs} runs)"
        verdicts.append(
            f"- {kind}: goodput {ratio_goodput:.0%} of capacity{median} (target ≥ {GOODPUT_TARGET:.0%}: "
            f"{'met' if ratio_goodput >= GOODPUT_TARGET else 'NOT met'}); admitted p99 {ratio_p99:.1f}x unloaded "
            f"(target ≤ {P99_TARGET:.0f}x: {'met' if ratio_p99 <= P99_TARGET else 'NOT met'})."
        )
    routed = mixed["routed"]
    lines = [
        "## Overload (open loop at 2x capacity)",
        "",
        environment_lines(
            find_envoy(),
            {
                "admission": admission.model_dump_json(),
                "ext_proc stream cap (Envoy)": str(max_extproc_streams(stack.config, stack.config.server.workers)),
            },
        ),
        "",
        f"One Quorum worker, Envoy `--concurrency 1`, fake backends with {args.latency_ms:.0f} ms latency and the load "
        f"generator (Python, asyncio, keep-alive HTTP/1.1); {layout}. {cap} Latencies in ms from "
        f"each request's scheduled send time. Overload phase: {args.duration:.0f} s; "
        f"other phases {args.measure:.0f} s.",
        "",
        table(
            [
                "target",
                "capacity C (req/s): mean (before / after)",
                "offered (req/s)",
                "goodput at 2·C",
                "p99 unloaded → at 2·C",
                "refused (p50 / p99 ms)",
                "refused by Quorum / by Envoy's stream cap",
                "Quorum CPU ms per answer: at C → at 2·C",
                "other errors",
                "Quorum RSS MiB before / peak / after",
                "recovery p99",
            ],
            rows,
        ),
        "",
        *verdicts,
        "",
        "CPU of each process during the overload phase, % of one core:",
        "",
        table(["target", *results[0]["cpu"]], cpu_rows),
        "",
        f"Fusion at 2·C(fusion) with routed traffic at C(routed)/2 alongside: routed goodput "
        f"{routed['goodput']:.0f} req/s of {median_of(results, 'routed', 'capacity') / 2:.0f} offered, "
        f"p99 {_ms(routed['p99'])} ms, "
        f"{routed['refused']} routed refusals, {routed['errors']} errors ({routed['error_statuses'] or 'none'}); "
        f"fusion refused {mixed['fusion']['refused']} "
        f"of {mixed['fusion']['sent']}.",
        "",
        f"Cost of admission on the routing hot path (in-process, best of 5): {cost[0]:.0f} ns per routed request "
        f"against {cost[1]:.1f} µs of handler work for the same request ({cost[0] / (cost[1] * 1000):.2%}), and Quorum "
        "spends about 500 µs of CPU per routed request in all (routing section), so well below anything a load test "
        "can resolve. In-flight gauges are read when Prometheus scrapes, not updated per request.",
        "",
        *notes,
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of overload per target")
    parser.add_argument("--measure", type=float, default=8.0, help="seconds of each other phase")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="fake backend latency")
    parser.add_argument(
        "--admission",
        default=SIZED_ADMISSION,
        help="server.admission in YAML flow style; '{}': Quorum's defaults (default: %(default)s, sized to the "
        "0.25 of a core the benchmark gives Quorum, docs/configuration.md)",
    )
    parser.add_argument("--runs", type=int, default=1, help="measure each target this many times; verdicts on medians")
    parser.add_argument("--quick", action="store_true", help="5 s overload, 3 s phases")
    parser.add_argument(
        "--quorum-cpu",
        type=float,
        default=0.25,
        help="cap Quorum at this many cores with a cpu cgroup, so that it is what saturates (0: no cap; "
        "default %(default)s)",
    )
    add_layout_option(parser)
    parser.add_argument("--output", help="write the report section into this Markdown file")
    args = parser.parse_args(argv)
    check_layout(parser, args)
    if args.quick:
        args.duration, args.measure = 5.0, 3.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="quorum-overload-"))
    stack = Stack(write_config(workdir, args.admission), workdir, fake_latency_ms=args.latency_ms)
    with stack:
        if args.layout == "dedicated":
            dedicate_cpu({name: p.pid for name, p in stack.processes})
        uncap = cap_cpu(dict(stack.processes)["quorum"].pid, args.quorum_cpu) if args.quorum_cpu else None
        args.capped = uncap is not None
        started = time.monotonic()
        try:
            results, mixed = run_async(run(stack, args))
        finally:
            if uncap is not None:
                uncap()
        notes = [f"Run time {time.monotonic() - started:.0f} s.", *scan_logs(workdir, "Quorum, Envoy and the backends")]
        report = render(results, mixed, args, stack, notes, admission_cost(stack.config_path))
    publish(report, args.output, SECTION, workdir)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
