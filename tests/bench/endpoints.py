"""Does routing a Responses, completions or embeddings request cost more than a chat request?

    .venv/bin/python tests/bench/endpoints.py --output docs/benchmarks.md   # make bench
    .venv/bin/python tests/bench/endpoints.py --quick                      # a smoke run

Quorum's own CPU time per request (process time, which other jobs on the machine disturb far
less than wall time; headers and body phase through `StreamHandler`, answers serialized,
as `inproc.handler_us_per_request` measures it), for the same prompt in each endpoint's format, at
about 1 KiB and 64 KiB. Envoy's share of a routed request does not depend on the path (same filter
chain, same route table, same ext_proc round trips), so this is where endpoints can differ. Every
round measures every case, interleaved; the report gives each case's best round (noise only adds) and
its ratio to chat in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from builders import config_text
from inproc import handler_us_per_request
from reportlib import environment_lines, table, write_section

from extproc.dev.stack import find_envoy

SECTION = "endpoints"
TESTS = Path(__file__).resolve().parents[1]


def bodies(size: int) -> dict[str, tuple[str, bytes]]:
    """The same prompt ("python" matches the demo's coding decision) as each endpoint sends it."""
    text = "please fix this python code " + "x" * max(0, size - 120)
    return {
        "chat": ("/v1/chat/completions", {"model": "quorum/auto", "messages": [{"role": "user", "content": text}]}),
        "responses": ("/v1/responses", {"model": "quorum/auto", "input": [{"role": "user", "content": text}]}),
        "completions": ("/v1/completions", {"model": "quorum/auto", "prompt": text}),
        "embeddings": ("/v1/embeddings", {"model": "demo-coder", "input": text}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.6, help="measuring time per case and round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 0.2 s")
    parser.add_argument("--output", help="write the section into this Markdown file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 0.2
    # The tests' config: lexical signals only (no model to load), "python" picks the coding decision.
    config = Path(tempfile.mkdtemp(prefix="quorum-bench-endpoints-")) / "quorum.yaml"
    config.write_text(config_text(), encoding="utf-8")
    os.environ.setdefault("QUORUM_TEST_LARGE_KEY", "bench")
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for label, size in (("1 KiB", 1024), ("12 KiB", 12 * 1024)):
            for name, (path, body) in bodies(size).items():
                raw = orjson.dumps(body)
                us = handler_us_per_request(config, raw, seconds=args.seconds, path=path, clock=time.process_time)
                results.setdefault((label, name), []).append(us)
    rows = []
    for (label, name), values in results.items():
        chat = min(results[(label, "chat")])  # noise on a shared machine only adds: the best round is the cost
        best = min(values)
        rows.append([label, name, f"{best:.0f}", f"{best / chat:.2f}", " ".join(f"{v:.0f}" for v in values)])
    body = "\n".join(
        [
            "## Endpoints: routing cost per OpenAI endpoint",
            "",
            "Quorum's handler CPU time per routed request (headers and body phase, answers serialized; no gRPC, no",
            "Envoy) for the same prompt in each endpoint's format (`quorum/auto` through the lexical signals;",
            "embeddings name their model, so no signals run); `vs chat` is the ratio to chat's best round in",
            "the same run. Envoy's part does not depend on the path. The machine was shared with other jobs",
            "while this ran (the per-round spread shows it): the best round is reported, read ratios.",
            "",
            table(["size", "endpoint", "CPU µs/request (best round)", "vs chat", "per round"], rows),
            "",
            environment_lines(find_envoy(), {"run": f"{args.rounds} rounds x {args.seconds} s per case"}),
        ]
    )
    print(body)
    if args.output:
        write_section(args.output, SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
