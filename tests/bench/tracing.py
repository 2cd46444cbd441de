"""Routing throughput with tracing exported over OTLP/gRPC vs tracing off, in one run.

Two identical stacks (fake backend, `quorum serve`, Envoy) differ only in
`observability.tracing`: `none`, or `otlp_grpc` to an OTLP sink in this process that accepts every
export (it does not decode the spans, like a collector on another host would cost us nothing).
Rounds alternate off / on so drift on this shared 2-core box hits both alike; each round's
on/off ratio pairs two back-to-back runs, and the target is judged on the median of those paired
ratios (the ratio of the median throughputs is shown too). Quorum's CPU per request in each run
is reported as well: it is what tracing costs, whatever the neighbours on the host are doing.
Usage: `python tests/bench/tracing.py --output docs/benchmarks.md`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import chat_body, cpu_seconds, dedicate_cpu, ensure_wrk, run_wrk
from reportlib import environment_lines, table, write_section

from extproc.dev.stack import Stack, find_envoy, free_port

TARGET_RATIO = 0.85
CONFIG = """
version: v1
server: {{listen: "127.0.0.1:{grpc}", grace_period: 1s}}
envoy: {{listen: "127.0.0.1:{envoy}", admin: "127.0.0.1:{admin}"}}
observability:
  metrics: {{listen: "127.0.0.1:{metrics}"}}
  access_log: false
  tracing: {tracing}
providers:
  defaults: {{default_model: general}}
  models:
    - {{name: general, provider_model_id: bench-small, base_url: "http://127.0.0.1:{backend}/v1"}}
    - {{name: coder, provider_model_id: bench-coder, cluster: coder, base_url: "http://127.0.0.1:{backend}/v1"}}
routing:
  auto_model_names: ["quorum/auto"]
  signals: {{keyword: [{{name: code, keywords: [python, "stack trace"]}}]}}
  decisions: [{{name: coding, priority: 100, rules: {{type: keyword, name: code}}, modelRefs: [{{model: coder}}]}}]
"""


def start_sink() -> tuple[grpc.Server, int, list[int]]:
    """An OTLP/gRPC trace endpoint that acknowledges every export; counts the bytes it received."""
    received = [0]

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        received[0] += len(request)
        return b""  # an empty ExportTraceServiceResponse

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, received


def write_config(workdir: Path, tracing: str) -> Path:
    path = workdir / "quorum.yaml"
    ports = {k: free_port() for k in ("grpc", "envoy", "admin", "metrics", "backend")}
    path.write_text(CONFIG.format(tracing=tracing, **ports), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", "-o", help="Markdown file whose `tracing` section is replaced")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s")
    parser.add_argument(
        "--layout",
        choices=("dedicated", "shared"),
        default="dedicated",
        help="dedicated: each Quorum on CPU 1, everything else on CPU 0 (as in run.py); shared: no pinning",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 3.0, 1
    wrk = ensure_wrk()
    sink, sink_port, received = start_sink()
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "500"
    work = Path(tempfile.mkdtemp(prefix="quorum-bench-tracing-"))
    body = work / "body.json"
    body.write_bytes(chat_body("quorum/auto", 1024, "My python script fails with the stack trace below. "))
    variants = {
        "tracing off": "{exporter: none}",
        "tracing on (OTLP/gRPC)": f"{{exporter: otlp_grpc, endpoint: 'http://127.0.0.1:{sink_port}'}}",
    }
    stacks = {}
    results: dict[str, list[float]] = {name: [] for name in variants}
    p50s: dict[str, list[float]] = {name: [] for name in variants}
    cpu_us: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for name, tracing in variants.items():
            workdir = work / name.split()[1]
            workdir.mkdir()
            stacks[name] = Stack(write_config(workdir, tracing), workdir).start()
            if args.layout == "dedicated":
                dedicate_cpu({f"{n}-{name}": p.pid for n, p in stacks[name].processes})
        for stack in stacks.values():  # warm-up
            run_wrk(wrk, f"{stack.envoy_url}/v1/chat/completions", body, connections=16, duration_s=2)
        for round_no in range(args.rounds):
            order = list(stacks.items())
            for name, stack in order if round_no % 2 == 0 else order[::-1]:  # off-on, on-off, ...
                quorum = dict(stack.processes)["quorum"].pid
                cpu0 = cpu_seconds(quorum)
                r = run_wrk(
                    wrk, f"{stack.envoy_url}/v1/chat/completions", body, connections=16, duration_s=args.duration
                )
                if r.non_2xx or r.socket_errors:
                    raise SystemExit(f"{name}: {r.non_2xx} non-2xx, {r.socket_errors} socket errors")
                results[name].append(r.ok_rps)
                p50s[name].append(r.p50_ms)
                cpu_us[name].append(1e6 * (cpu_seconds(quorum) - cpu0) / max(r.requests, 1))
                print(
                    f"{name}: {r.ok_rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, Quorum {cpu_us[name][-1]:.0f} µs CPU/req",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for stack in stacks.values():
            stack.stop()
        sink.stop(0)
    off_name, on_name = variants
    paired = [on / off for off, on in zip(results[off_name], results[on_name], strict=True)]
    ratio = statistics.median(paired)
    of_medians = statistics.median(results[on_name]) / statistics.median(results[off_name])
    rows = [
        [
            n,
            ", ".join(f"{v:,.0f}" for v in results[n]),
            f"{statistics.median(results[n]):,.0f}",
            f"{statistics.median(p50s[n]):.2f}",
            f"{statistics.median(cpu_us[n]):,.0f}",
        ]
        for n in variants
    ]
    added_cpu = statistics.median(cpu_us[on_name]) - statistics.median(cpu_us[off_name])
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    report = "\n\n".join(
        [
            "## Tracing cost: routing throughput with spans exported over OTLP vs tracing off",
            environment_lines(find_envoy()),
            "Two identical stacks (Envoy `--concurrency 1`, one Quorum worker, one fake backend each) routed by a "
            + (
                "keyword decision; each Quorum pinned to CPU 1 and everything else (Envoys, fake backends, wrk, the "
                "OTLP sink) to CPU 0, as in the routing section; "
                if args.layout == "dedicated"
                else "keyword decision, no CPU pinning; "
            )
            + "1 KiB bodies, wrk `-t2 -c16`, rounds alternating off/on; the *on* stack exports "
            "every request's spans (`quorum.request`, `quorum.signals`, `quorum.decision`) with the SDK's batch "
            f"processor to an OTLP/gRPC sink on this machine ({received[0] / 1e6:.1f} MB of spans received). "
            "Access logs were off in both, so the difference is tracing alone.",
            table(["stack", "req/s per round", "median req/s", "median p50 ms", "Quorum CPU µs/req (median)"], rows),
            f"Paired on/off ratios, one per round: {', '.join(f'{p:.1%}' for p in paired)}; ratio of the median "
            f"throughputs {of_medians:.1%}. Tracing adds {added_cpu:,.0f} µs of Quorum CPU per request (median "
            "of the runs): all three spans, their encoding and the export, which the batch processor's thread "
            "does on the same core.",
            table(
                ["target", "measured", "result"],
                [
                    [
                        f"throughput with OTLP tracing ≥ {TARGET_RATIO:.0%} of tracing off",
                        f"{ratio:.1%} (median of the paired rounds)",
                        verdict,
                    ]
                ],
            ),
        ]
    )
    print(report)
    if args.output:
        write_section(args.output, "tracing", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
