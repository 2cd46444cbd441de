"""Per-endpoint routing overhead through Envoy: /v1/responses, /v1/completions, /v1/embeddings vs chat.

    .venv/bin/python tests/bench/endpoints_envoy.py --output docs/benchmarks.md   # make bench (about 2 min)
    .venv/bin/python tests/bench/endpoints_envoy.py --quick                       # smoke run

One run starts the fake backend, `quorum serve` + Envoy and a bare Envoy (no ext_proc filter, same
clusters: run.py's BareEnvoy), then, interleaved over --repeat rounds, sends each endpoint's request
(same model, same body size, the text padded to --size bytes) through both Envoys with wrk. What
Quorum adds to an endpoint is its p50 minus the bare Envoy's p50 for the same request, and Quorum's
CPU time per request; the report gives both per endpoint and as a ratio to chat completions'.
Explicit model requests (`coder`, rewritten to `bench-coder`) exercise parse + rewrite on every
endpoint; `quorum/auto` requests (chat and Responses) add the keyword signal and the decision.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from loadgen import BenchError, cpu_seconds, run_wrk
from reportlib import environment_lines, scan_logs, table, write_section
from run import PROMPT, PROVIDER_MODEL, ROUTED_MODEL, BareEnvoy, http, write_config

from extproc.config import load_config
from extproc.dev.stack import Stack, find_envoy

SECTION = "endpoints-envoy"
CONNECTIONS = 4


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    field: str  # where the text goes: messages, input, prompt
    model: str  # what the client names; the bare Envoy gets PROVIDER_MODEL

    def body(self, model: str, size: int) -> bytes:
        def encode(pad: str) -> bytes:
            text = PROMPT + pad
            value = [{"role": "user", "content": text}] if self.field == "messages" else text
            return json.dumps({"model": model, self.field: value}, separators=(",", ":")).encode()

        short = encode("")
        if len(short) > size:
            raise BenchError(f"--size {size} is smaller than the smallest {self.label} body ({len(short)} bytes)")
        return encode("x" * (size - len(short)))


CASES = (
    Case("chat completions", "/v1/chat/completions", "messages", ROUTED_MODEL),
    Case("responses", "/v1/responses", "input", ROUTED_MODEL),
    Case("completions", "/v1/completions", "prompt", ROUTED_MODEL),
    Case("embeddings", "/v1/embeddings", "input", ROUTED_MODEL),
    Case("chat completions, auto", "/v1/chat/completions", "messages", "quorum/auto"),
    Case("responses, auto", "/v1/responses", "input", "quorum/auto"),
)


@dataclass
class Sample:
    bare_p50_ms: float
    quorum_p50_ms: float
    bare_rps: float
    quorum_rps: float
    quorum_us: float  # Quorum's CPU time per request

    @property
    def added_ms(self) -> float:
        return self.quorum_p50_ms - self.bare_p50_ms


def preflight(bare_url: str, quorum_url: str, size: int) -> None:
    """Every case answers 200 through both Envoys, and Quorum routed it to the benchmark model."""
    for case in CASES:
        for name, url, model in (("bare Envoy", bare_url, PROVIDER_MODEL), ("Envoy + Quorum", quorum_url, case.model)):
            status, headers, raw = http(url + case.path, case.body(model, size))
            if status != 200:
                raise BenchError(f"{name} answered {status} to {case.label}: {raw[:300]!r}")
            if name == "Envoy + Quorum" and headers.get("x-quorum-model") != ROUTED_MODEL:
                raise BenchError(f"{case.label}: Quorum routed to {headers.get('x-quorum-model')}")


def measure(args: argparse.Namespace, wrk: str, workdir: Path) -> dict[str, list[Sample]]:
    config_path = write_config(workdir)
    stack = Stack(config_path, workdir / "stack", workers=1, envoy_concurrency=1)
    bare = BareEnvoy(load_config(config_path), workdir)
    try:
        stack.start()
        bare.start()
        procs = dict(stack.processes)
        assert bare.proc is not None
        fake = next(name for name in procs if name.startswith("fake-"))
        pids = {"quorum": procs["quorum"].pid, "envoy": procs["envoy"].pid, "fake": procs[fake].pid}
        pids["envoy-bare"] = bare.proc.pid
        if args.layout == "dedicated":
            loadgen.dedicate_cpu(pids)
        preflight(bare.url, stack.envoy_url, args.size)
        files = {}
        for i, case in enumerate(CASES):
            for target, model in (("bare", PROVIDER_MODEL), ("quorum", case.model)):
                files[case, target] = workdir / f"body-{i}-{target}.json"
                files[case, target].write_bytes(case.body(model, args.size))
        samples: dict[str, list[Sample]] = {c.label: [] for c in CASES}
        for round_no in range(1, args.repeat + 1):
            for case in CASES:
                runs = {}
                for target, url in (("bare", bare.url), ("quorum", stack.envoy_url)):
                    body = files[case, target]
                    if args.warmup:
                        run_wrk(wrk, url + case.path, body, connections=CONNECTIONS, duration_s=args.warmup)
                    before = cpu_seconds(pids["quorum"])
                    result = run_wrk(wrk, url + case.path, body, connections=CONNECTIONS, duration_s=args.duration)
                    if result.non_2xx or result.socket_errors:
                        raise BenchError(f"{case.label} via {target}: {result.non_2xx} non-2xx, errors")
                    runs[target] = (result, cpu_seconds(pids["quorum"]) - before)
                (bare_run, _), (quorum_run, quorum_cpu) = runs["bare"], runs["quorum"]
                sample = Sample(
                    bare_run.p50_ms,
                    quorum_run.p50_ms,
                    bare_run.rps,
                    quorum_run.rps,
                    1e6 * quorum_cpu / quorum_run.requests,
                )
                samples[case.label].append(sample)
                print(
                    f"  [{round_no}/{args.repeat}] {case.label:<24} bare p50 {sample.bare_p50_ms:.3f} ms, "
                    f"+Quorum {sample.added_ms:+.3f} ms, Quorum {sample.quorum_us:,.0f} µs CPU/req",
                    file=sys.stderr,
                    flush=True,
                )
        for name, proc in {**procs, "envoy-bare": bare.proc}.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited during the run with code {proc.returncode}")
        return samples
    finally:
        bare.stop()
        stack.stop()


def render(samples: dict[str, list[Sample]], args: argparse.Namespace, elapsed: float, notes: list[str]) -> str:
    def med(label: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in samples[label])

    chat_added, chat_us = med(CASES[0].label, "added_ms"), med(CASES[0].label, "quorum_us")
    auto_added, auto_us = med(CASES[4].label, "added_ms"), med(CASES[4].label, "quorum_us")
    rows = []
    cpu_ratios, added_ratios = [], []
    for case in CASES:
        reference = (auto_added, auto_us) if case.model == "quorum/auto" else (chat_added, chat_us)
        added, us = med(case.label, "added_ms"), med(case.label, "quorum_us")
        if case.path != CASES[0].path:
            cpu_ratios.append(us / reference[1])
            added_ratios.append(added / reference[0] if reference[0] > 0 else float("nan"))
        rows.append(
            (
                f"{case.label} (`{case.path}`)",
                f"{med(case.label, 'bare_p50_ms'):.3f}",
                f"{added:+.3f}",
                f"{added / reference[0]:.2f}" if reference[0] > 0 else "n/a",
                f"{us:,.0f}",
                f"{us / reference[1]:.2f}",
                f"{med(case.label, 'quorum_rps') / med(case.label, 'bare_rps'):.2f}",
            )
        )
    header = (
        "endpoint",
        "bare Envoy p50 ms",
        "added by Quorum, p50 ms",
        "added / chat's",
        "Quorum CPU µs/req",
        "CPU / chat's",
        "req/s Quorum / bare",
    )
    return "\n".join(
        [
            "## Endpoint overhead through Envoy: Responses, Completions, Embeddings vs chat completions",
            "",
            environment_lines(find_envoy(), {"wrk": f"{CONNECTIONS} connections, {args.duration} s per case"}),
            "",
            f"The run took {elapsed:.0f} s. Each endpoint's request ({args.size} bytes, text padded) went through "
            "a bare Envoy (no ext_proc, same cluster) and through Envoy + Quorum in the same run, interleaved over "
            f"{args.repeat} round(s); figures are medians. The explicit-model rows are compared with chat "
            "completions naming the same model, the `quorum/auto` rows with chat completions on `quorum/auto`. "
            "On this 2-core VM absolute numbers move with the host's load; the ratios (same run, same load) "
            "are what this section is for; "
            "Quorum CPU µs per request is the least noisy of them.",
            "",
            table(header, rows, align="lrrrrrr"),
            "",
            f"**Result:** Quorum's CPU per request on the new endpoints is {min(cpu_ratios):.2f}-"
            f"{max(cpu_ratios):.2f}x chat completions' for the same request size and route. The added p50 is "
            f"{min(added_ratios):.2f}-{max(added_ratios):.2f}x chat's; on this run the chat rows' own added p50 "
            f"moved between {_spread(samples[CASES[0].label])} ms from round to round, so differences of that size "
            "are the machine's, not the endpoint's. Re-run on a quiet machine (`make bench`) before quoting "
            "absolute latencies.",
            "",
            "Logs:",
            *notes,
        ]
    )


def _spread(samples: list[Sample]) -> str:
    values = [s.added_ms for s in samples]
    return f"{min(values):+.3f} and {max(values):+.3f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", "-o", help="Markdown file whose `endpoints-envoy` section is replaced")
    parser.add_argument("--duration", type=int, default=3, help="measured seconds per case (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per case (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds over every case (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1024, help="request body bytes (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --duration 1 --warmup 0 --repeat 1")
    loadgen.add_layout_option(parser)
    args = parser.parse_args(argv)
    loadgen.check_layout(parser, args)
    if args.quick:
        args.duration, args.warmup, args.repeat = 1, 0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop every child on SIGTERM as on Ctrl-C
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="quorum-bench-endpoints-envoy-"))
    samples = loadgen.measured(lambda: measure(args, loadgen.ensure_wrk(), workdir), workdir)
    if isinstance(samples, int):
        return samples
    notes = scan_logs(workdir, "the fake backend, Quorum or either Envoy")
    shutil.rmtree(workdir, ignore_errors=True)
    report = render(samples, args, time.monotonic() - started, notes)
    print(report)
    if args.output:
        write_section(args.output, SECTION, report)
        print(f"wrote the `{SECTION}` section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
