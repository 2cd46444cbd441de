"""The hot path with hot reload vs without: ExternalProcessor.Process in-process, this tree vs a
baseline commit (before the reload machinery), in the same run.

Each variant runs in its own Python process (the baseline from `git archive BASELINE`), routing the
same request through `ExternalProcessor.Process` (request_headers + request_body, as Envoy sends
them in duplex mode) in batches; rounds alternate between the variants so machine noise hits both.
The third variant is this tree with the config watcher polling at the default 1 s on the same loop.

    python tests/bench/reload.py [--baseline REV] [--rounds N] [--seconds S] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from reportlib import environment_lines, table, write_section

from extproc.dev.stack import find_envoy

ROOT = Path(__file__).resolve().parents[2]
# main just before the RuntimeHolder and the reloader were merged into it: the runtime was a plain attribute.
DEFAULT_BASELINE = "592f5c7"

CONFIG = """
providers:
  defaults: {default_model: small}
  models:
    - {name: small, base_url: "http://127.0.0.1:9001/v1"}
    - {name: coder, base_url: "http://127.0.0.1:9002/v1"}
routing:
  signals:
    keyword: [{name: code, keywords: [python, "stack trace"]}]
  decisions:
    - {name: coding, priority: 100, rules: {type: keyword, name: code}, modelRefs: [{model: coder}]}
"""

# Runs inside the variant's process: prints the CPU microseconds per request of each batch, as JSON.
# CPU time of the process, not wall time: on a shared machine, time spent preempted is not ours.
WORKER = r"""
import asyncio, json, sys, time
from pathlib import Path
from extproc.config import load_config
from extproc.pb import core, ep
from extproc.runtime import build_runtime
from extproc.server import ExternalProcessor

config_path, watch, batches, per_batch = sys.argv[1], sys.argv[2] == "watch", int(sys.argv[3]), int(sys.argv[4])
pairs = {":authority": "127.0.0.1", ":path": "/v1/chat/completions", ":method": "POST", ":scheme": "http",
         "content-type": "application/json", "x-request-id": "0b9c0f3e-6a44-4d8e-9b8f-1f2e3d4c5b6a"}
body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "fix my python stack trace " * 30}]})
headers = core.HeaderMap(headers=[core.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()])
messages = [
    ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=headers)).SerializeToString(),
    ep.ProcessingRequest(request_body=ep.HttpBody(body=body.encode(), end_of_stream=True)).SerializeToString(),
]
runtime = build_runtime(load_config(config_path))

async def stream():
    for raw in messages:
        yield ep.ProcessingRequest.FromString(raw)

async def main():
    processor = ExternalProcessor(runtime)
    if watch:
        from extproc.config import ConfigSource
        from extproc.reload import Reloader
        source = ConfigSource(config_path)
        reloader = Reloader(source, processor.holder)
        processor.holder.digest = source.read().digest
        watcher = asyncio.ensure_future(reloader.run(1.0))
    last = None
    for _ in range(200):  # warm up, and check that it routes
        async for last in processor.Process(stream(), None):
            last.SerializeToString()
    assert last.request_body.response.clear_route_cache, last
    out = []
    for _ in range(batches):
        start = time.process_time()
        for _ in range(per_batch):
            async for response in processor.Process(stream(), None):
                response.SerializeToString()
        out.append((time.process_time() - start) / per_batch * 1e6)
    print(json.dumps(out))

asyncio.run(main())
"""


def export_baseline(rev: str, into: Path) -> Path:
    archive = into / "baseline.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "extproc"], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def run_variant(tree: Path, config: Path, watch: bool, batches: int, per_batch: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-c", WORKER, str(config), "watch" if watch else "plain", str(batches), str(per_batch)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=tree)
    if out.returncode != 0:
        raise RuntimeError(f"variant failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision without hot reload")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the variants")
    parser.add_argument("--batches", type=int, default=5, help="batches per variant per round")
    parser.add_argument("--per-batch", type=int, default=2000, help="requests per batch")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 small batches")
    parser.add_argument("--output", "-o", help="Markdown file whose `reload` section is replaced")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batches, args.per_batch = 2, 3, 500
    with tempfile.TemporaryDirectory(prefix="quorum-bench-reload-") as tmp:
        tmpdir = Path(tmp)
        config = tmpdir / "quorum.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        variants = {
            f"baseline `{args.baseline}` (runtime attribute)": (export_baseline(args.baseline, tmpdir), False),
            "this tree (RuntimeHolder)": (ROOT, False),
            "this tree, watcher polling every 1 s": (ROOT, True),
        }
        results: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_no in range(args.rounds):
            shift = round_no % len(names)  # rotate the order, so no variant always runs first or last
            for name in names[shift:] + names[:shift]:
                tree, watch = variants[name]
                results[name] += run_variant(tree, config, watch, args.batches, args.per_batch)
    base_name = next(iter(variants))
    base = statistics.median(results[base_name])
    rows = [
        [name, f"{min(v):.1f}", f"{statistics.median(v):.1f}", f"{statistics.median(v) / base:.3f}"]
        for name, v in results.items()
    ]
    spread = statistics.pstdev(results[base_name]) / base
    report = "\n\n".join(
        [
            "## Hot reload on the routing hot path (in-process)",
            environment_lines(find_envoy()),
            f"`ExternalProcessor.Process` driven in-process (no gRPC, no Envoy) with the two ext_proc messages of a "
            f"routed duplex request (1 KiB body, keyword decision), {args.rounds} rounds alternating the variants, "
            f"{args.batches} batches of {args.per_batch} requests per variant per round, each variant in its own "
            "process, the order rotating every round; each batch is timed in CPU time of its process (time spent "
            "preempted by other jobs is not counted). The baseline (exported with `git archive`) is `main` as it was "
            "just before the reload machinery was merged with it: the same code but for the holder and the watcher. "
            "On this 2-core VM absolute numbers move with the host's load, so compare the ratios.",
            table(["variant", "best CPU µs/req", "median CPU µs/req", "median vs baseline"], rows),
            f"Batch-to-batch spread of the baseline (standard deviation / median): {spread:.1%}. A stream reads "
            "`holder.runtime` once when it opens; the watcher wakes once a second for a few `stat` calls. "
            "Differences within the spread are noise, i.e. the reload machinery costs nothing measurable.",
        ]
    )
    print(report)
    if args.output:
        write_section(args.output, "reload", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
