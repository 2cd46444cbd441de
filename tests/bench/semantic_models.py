"""Domain routing: which embedding model and method, measured on the project's own prompt sets.

    .venv/bin/python tests/bench/semantic_models.py --output docs/benchmarks.md   # ~2-4 min (part of `make bench`)
    .venv/bin/python tests/bench/semantic_models.py --quick                       # fewer timing rounds

For each (model, method) row, on tests/data/domains/ with the 4 examples per domain of
examples.yaml and default settings:
- *nearest*: the share of on-topic prompts whose nearest domain is right (no rejection at all);
- *on-topic*: the share routed to their own domain; *off-topic*: the share sent to the default model;
  on dev.yaml (tuned on) and test.yaml (held out; nothing was chosen on it);
- latency of one embedding (p50 over distinct texts, in this process, no Envoy) for a one-line
  prompt and a ~290-token one (the engine reads `max_tokens` of it), and the CPU it took per call
  (process CPU time / wall time: above 1 means the intra-op threads ran in parallel or spun);
- the RSS the loaded engine added (each model is measured in its own child process).

Methods: *prototype* is the domain classifier before issue #13 (prototype score over the examples,
the old defaults threshold 0.25 and margin 0.02); *calibrated* is extproc.semantic.domains
(centred centroids with the domain name, background phrases, no threshold). The machine is shared
(other jobs run on it), so latencies are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reportlib import command_line, cpu_model, package_version, table, write_section  # noqa: E402

DATA = ROOT / "tests" / "data" / "domains"
ROWS = [  # (model, max_tokens or None for the model's default, method)
    ("all-MiniLM-L6-v2", None, "prototype"),
    ("all-MiniLM-L6-v2", None, "calibrated"),
    ("multilingual-e5-small", 256, "calibrated"),
    ("multilingual-e5-small", None, "calibrated"),
]
WORDS = """the patient reports a persistent cough with mild fever and fatigue for three weeks and asks whether
antibiotics or further tests such as a chest x-ray are needed before returning to work next month"""


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def routed_prototype(engine: Any, examples: dict[str, list[str]], texts: list[str]) -> list[str | None]:
    """The pre-#13 DomainClassifier: prototype score (top 3, best weight 0.75), threshold 0.25, margin 0.02."""
    from extproc.semantic.similarity import prototype_score

    banks = {name: engine.infer_now(ex) for name, ex in examples.items()}
    out: list[str | None] = []
    for vector in engine.infer_now(texts):
        scores = sorted(((prototype_score(b @ vector, 3, 0.75), n) for n, b in banks.items()), reverse=True)
        (best, name), (second, _) = scores[0], scores[1]
        out.append(name if best >= 0.25 and best - second >= 0.02 else None)
    return out


def routed_calibrated(engine: Any, examples: dict[str, list[str]], texts: list[str]) -> list[tuple[str | None, str]]:
    from extproc.semantic.background import background_texts
    from extproc.semantic.domains import DomainModel, domain_name_text

    names = list(examples)
    vectors = [engine.infer_now([*examples[n], domain_name_text(n)]) for n in names]
    model = DomainModel(names, [examples[n] for n in names], vectors, engine.infer_now(list(background_texts())))
    return [(v.domain, v.nearest) for v in map(model.classify, engine.infer_now(texts))]


def child(model: str, max_tokens: int | None, method: str, rounds: int) -> dict[str, Any]:
    """One row, measured in this (fresh) process."""
    from extproc.semantic.engine import LocalEmbeddingEngine

    before = rss_mib()
    engine = LocalEmbeddingEngine(model, max_tokens=max_tokens, cache_size=0)
    engine.load()
    added = rss_mib() - before
    examples = yaml.safe_load((DATA / "examples.yaml").read_text())
    result: dict[str, Any] = {"rss_mib": added, "max_tokens": engine.max_tokens, "threads": engine.threads}
    for split in ("dev", "test"):
        data = yaml.safe_load((DATA / f"{split}.yaml").read_text())
        on = [(t["domain"], t["text"]) for t in data["on_topic"]]
        off = list(data["off_topic"])
        texts = [t for _, t in on] + off
        if method == "prototype":
            routes = routed_prototype(engine, examples, texts)
            nearest = None
        else:
            pairs = routed_calibrated(engine, examples, texts)
            routes = [r for r, _ in pairs]
            nearest = sum(n == d for (_, n), (d, _) in zip(pairs, on, strict=False)) / len(on)
        result[split] = {
            "nearest": nearest,
            "on": sum(r == d for r, (d, _) in zip(routes, on, strict=False)) / len(on),
            "off": sum(r is None for r in routes[len(on) :]) / len(off),
            "n_on": len(on),
            "n_off": len(off),
        }
    rng = random.Random(13)
    for label, words in (("short", 12), ("long", 220)):
        walls, cpus = [], []
        for i in range(rounds):
            text = f"{i} " + " ".join(rng.choice(WORDS.split()) for _ in range(words))
            wall, cpu = time.perf_counter(), time.process_time()
            engine.infer_now([text])
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        result[f"{label}_ms"] = statistics.median(walls) * 1000
        result[f"{label}_cpu"] = sum(cpus) / sum(walls)
    engine.close()
    return result


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render(results: list[tuple[tuple[str, int | None, str], dict[str, Any]]], elapsed: float) -> str:
    rows = []
    for (model, _, method), r in results:
        rows.append(
            [
                model,
                str(r["max_tokens"]),
                method,
                pct(r["dev"]["nearest"]),
                pct(r["dev"]["on"]),
                pct(r["dev"]["off"]),
                pct(r["test"]["nearest"]),
                f"**{pct(r['test']['on'])}**",
                f"**{pct(r['test']['off'])}**",
                f"{r['short_ms']:.1f} ({r['short_cpu']:.1f}x)",
                f"{r['long_ms']:.1f} ({r['long_cpu']:.1f}x)",
                f"{r['rss_mib']:.0f}",
            ]
        )
    first = results[0][1]
    header = [
        "model",
        "tokens read",
        "method",
        "dev nearest",
        "dev on-topic",
        "dev off-topic",
        "test nearest",
        "test on-topic",
        "test off-topic",
        "one line: ms (CPU/wall)",
        "~290 tokens: ms (CPU/wall)",
        "RSS MiB",
    ]
    return "\n".join(
        [
            "## Domain routing: models and methods at 4 examples per domain",
            "",
            table(
                ["environment", ""],
                [
                    ("date", time.strftime("%Y-%m-%d %H:%M %Z")),
                    ("machine", f"{os.cpu_count()} CPUs (nproc), {cpu_model()}, shared with other jobs"),
                    ("onnxruntime", package_version("onnxruntime")),
                    (
                        "data",
                        f"tests/data/domains: 7 domains x 4 examples; dev {first['dev']['n_on']} on-topic + "
                        f"{first['dev']['n_off']} off-topic; test {first['test']['n_on']} + {first['test']['n_off']}",
                    ),
                    ("command", command_line()),
                    ("run time", f"{elapsed:.0f} s"),
                ],
                align="ll",
            ),
            "",
            table(header, rows, align="lllrrrrrrrrr"),
            "",
            "*nearest*: the nearest domain is right (no rejection); *on-topic*: routed to its domain; "
            "*off-topic*: sent to the default model. dev was tuned on, test is held out. Latency: one "
            f"embedding in-process with {first['threads']} intra-op threads, spinning off, p50 over distinct "
            "texts; CPU/wall is process CPU time over wall time. RSS: what loading the engine added. The rows "
            "run one after another, so on a busy machine their latencies compare loosely; the semantic section "
            "times e5 (32 tokens) against MiniLM (256 tokens) interleaved on the same prompts.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", help="Markdown file whose `semantic-models` section is replaced")
    parser.add_argument("--quick", action="store_true", help="20 timing rounds instead of 100")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rounds = 20 if args.quick else 100
    if args.child:
        model, tokens, method = json.loads(args.child)
        print(json.dumps(child(model, tokens, method, rounds)))
        return 0
    started = time.perf_counter()
    results = []
    for row in ROWS:
        cmd = [sys.executable, __file__, "--child", json.dumps(row), *(["--quick"] if args.quick else [])]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900).stdout
        results.append((row, json.loads(out.strip().splitlines()[-1])))
        print(f"{row}: done", file=sys.stderr)
    body = render(results, time.perf_counter() - started)
    print(body)
    if args.output:
        write_section(args.output, "semantic-models", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
