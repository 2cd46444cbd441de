"""Lazy signals benchmark: a keyword-settled `quorum/auto` request no longer pays for an embedding.

    make bench   # .venv/bin/python tests/bench/lazy.py --output docs/benchmarks.md   (about 10 s)
    .venv/bin/python tests/bench/lazy.py --quick                                    # smoke run, ~2 s

In-process (no gRPC, Envoy or sockets): the serialized request_headers and request_body messages
Envoy would send go through `StreamHandler`, as in tests/bench/inproc.py. The config has a keyword
decision (priority 200) above four domain decisions (priority 100, the 4-example domains of
tests/data/domains/examples.yaml, local domain engine as configured by default). Every request
carries a new ~256-token prompt (the engine caches vectors by content), so an embedding, when one
is computed, is a real inference. Arms, interleaved request by request in the same run:

- `lazy`: this code, a prompt the keyword decision matches;
- `eager`: the same runtime with every decision marked as reading any signal, which makes routing
  compute every signal before the first group, as Quorum did before (the same prompt shape);
- `keyword only`: a config with the keyword decision alone (no domain signals, no engine): the floor;
- `domain`: this code, a prompt no keyword matches, routed by its domain: still one inference.

Reported per arm: handler wall time per request (p50, p90), process CPU per request (every thread,
the engine's intra-op threads included) and inferences per request (the engine's own counter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inproc import handle, request_messages
from reportlib import command_line, cpu_model, memory_gib, package_version, publish, table

from extproc.config import parse_config
from extproc.eval.stats import percentile
from extproc.runtime import Runtime, build_runtime, prepare_runtime

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = yaml.safe_load((ROOT / "tests" / "data" / "domains" / "examples.yaml").read_text(encoding="utf-8"))
MEDICAL = (
    "my patient is a sixty year old man with chest pain when breathing deeply, a fever for three days and "
    "a cough; his blood pressure is high and he takes statins; what could cause this and which tests "
)
FILLER = (
    "the report shows that the numbers grew while the costs in the northern region fell and the team expects "
    "further growth next year if the new plan starts on schedule with enough staff and a clear budget "
)


def config(domains: bool) -> Any:
    names = list(DOMAINS) if domains else []
    models = ["general", "coder", *names]
    decisions = [decision("coding", 200, "keyword", "code", "coder")]
    decisions += [decision(name, 100, "domain", name, name) for name in names]
    raw = {
        "providers": {
            "defaults": {"default_model": "general"},
            "models": [{"name": m, "base_url": f"http://127.0.0.1:{9300 + i}/v1"} for i, m in enumerate(models)],
        },
        "routing": {
            "signals": {
                "keyword": [{"name": "code", "keywords": ["python", "stack trace"]}],
                "domain": [{"name": name, "examples": DOMAINS[name]} for name in names],
            },
            "decisions": decisions,
        },
    }
    return parse_config(json.dumps(raw))


def decision(name: str, priority: int, kind: str, signal: str, model: str) -> dict[str, Any]:
    rules = {"type": kind, "name": signal}
    return {"name": name, "priority": priority, "rules": rules, "modelRefs": [{"model": model}]}


def prompt(rng: random.Random, n: int, keyword: bool) -> str:
    """~1,300 characters (past the engine's 256-token budget), new each time."""
    words = (MEDICAL + FILLER).split()
    head = f"request {n}: why does my python script print a stack trace here? " if keyword else f"case {n}: {MEDICAL}"
    return head + " ".join(rng.choice(words) for _ in range(200))


def messages(text: str) -> list[bytes]:
    body = {"model": "quorum/auto", "messages": [{"role": "user", "content": text}]}
    return request_messages(json.dumps(body).encode())


async def one(runtime: Runtime, raw: list[bytes]) -> tuple[float, float, str]:
    """Wall and process-CPU seconds of one request through the handler, and the route it chose."""
    wall, cpu = time.perf_counter(), time.process_time()
    last = await handle(runtime, raw)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    mutation = last.request_body.response.header_mutation
    routed = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
    return wall, cpu, routed.get(runtime.route_header, "?")


def inferences(runtime: Runtime) -> int:
    engine = getattr(runtime.semantic, "domain_engine", None)
    return engine.stats.computed if engine is not None else 0


async def measure(requests: int, seed: int) -> dict[str, Any]:
    lazy = build_runtime(config(domains=True), environ={})
    await prepare_runtime(lazy)
    eager = replace(lazy, decisions=tuple(replace(d, reads=None) for d in lazy.decisions))
    floor = build_runtime(config(domains=False), environ={})
    arms = {
        "lazy": (lazy, True, "coder"),
        "eager (before)": (eager, True, "coder"),
        "keyword only": (floor, True, "coder"),
        "domain": (lazy, False, "medicine"),
    }
    rng = random.Random(seed)
    for name, (runtime, keyword, _) in arms.items():  # warm-up: first inference, first handler
        await one(runtime, messages(prompt(rng, -1, keyword) + name))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    computed = dict.fromkeys(arms, 0)
    for n in range(requests):
        order = list(arms)
        rng.shuffle(order)
        for name in order:
            runtime, keyword, expected = arms[name]
            before = inferences(runtime)
            wall, cpu, model = await one(runtime, messages(prompt(rng, n, keyword) + f" {name}"))
            computed[name] += inferences(runtime) - before
            if not model.startswith(expected):
                raise RuntimeError(f"arm {name}: routed to {model!r}, expected {expected!r}")
            samples[name].append((wall, cpu))
    return {"samples": samples, "computed": computed, "requests": requests}


def render(result: dict[str, Any], elapsed: float) -> str:
    requests = result["requests"]
    rows, p50 = [], {}
    for name, values in result["samples"].items():
        walls = [w * 1000 for w, _ in values]
        cpus = [c * 1000 for _, c in values]
        p50[name] = percentile(walls, 50)
        rows.append(
            [
                name,
                f"{p50[name]:.2f}",
                f"{percentile(walls, 90):.2f}",
                f"{sum(cpus) / len(cpus):.2f}",
                f"{result['computed'][name] / requests:.2f}",
            ]
        )
    floor = p50["keyword only"]
    environment = [
        ("machine", f"{cpu_model()}, {memory_gib()} RAM"),
        ("onnxruntime", package_version("onnxruntime")),
        ("command", command_line()),
    ]
    return "\n".join(
        [
            "## Lazy signals: keyword-settled auto requests skip the embedding",
            "",
            table(["environment", ""], environment, align="ll"),
            "",
            f"{requests} requests per arm, interleaved in random order, each with a new ~256-token prompt; "
            f"in-process through `StreamHandler` (no gRPC, no Envoy); {elapsed:.0f} s in all. Absolute "
            "figures move with this VM's host load, so read ratios.",
            "",
            table(["arm", "p50 ms", "p90 ms", "CPU ms/req", "inferences/req"], rows),
            "",
            f"- keyword-matched `quorum/auto`, domain decisions below it: lazy p50 is "
            f"{p50['lazy'] / floor:.2f}x the keyword-only config's, eager (every signal first, as before) "
            f"{p50['eager (before)'] / floor:.2f}x.",
            "- `domain`: a prompt only a domain decision matches still computes its one embedding.",
            "- CPU: process CPU time (every thread, the engine's intra-op threads included) per request.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", help="Markdown file whose `lazy` section is replaced with the report")
    parser.add_argument("--requests", type=int, default=300, help="requests per arm (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 requests per arm")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    requests = 20 if args.quick else args.requests
    if requests < 1:
        parser.error("--requests must be >= 1")
    started = time.perf_counter()
    result = asyncio.run(measure(requests, args.seed))
    publish(render(result, time.perf_counter() - started), args.output, "lazy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
