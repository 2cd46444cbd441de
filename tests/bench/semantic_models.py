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
    ("wordllama-l2-supercat", None, "calibrated"),
]
FIRST_STAGE, SECOND_STAGE = "wordllama-l2-supercat", "multilingual-e5-small"
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)  # first-stage confidence bars shown for dev
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


def calibrated_model(engine: Any, examples: dict[str, list[str]]) -> Any:
    from extproc.semantic.background import background_texts
    from extproc.semantic.domains import DomainModel, domain_name_text

    names = list(examples)
    vectors = [engine.infer_now([*examples[n], domain_name_text(n)]) for n in names]
    return DomainModel(names, [examples[n] for n in names], vectors, engine.infer_now(list(background_texts())))


def routed_calibrated(engine: Any, examples: dict[str, list[str]], texts: list[str]) -> list[tuple[str | None, str]]:
    model = calibrated_model(engine, examples)
    return [(v.domain, v.nearest) for v in map(model.classify, engine.infer_now(texts))]


def split_texts(split: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(on-topic (domain, text), off-topic texts) of dev or test."""
    data = yaml.safe_load((DATA / f"{split}.yaml").read_text())
    return [(t["domain"], t["text"]) for t in data["on_topic"]], list(data["off_topic"])


def child(model: str, max_tokens: int | None, method: str, rounds: int) -> dict[str, Any]:
    """One row, measured in this (fresh) process."""
    from extproc.semantic.engine import local_engine

    before = rss_mib()
    engine = local_engine(model, max_tokens=max_tokens, cache_size=0)
    engine.load()
    added = rss_mib() - before
    examples = yaml.safe_load((DATA / "examples.yaml").read_text())
    result: dict[str, Any] = {"rss_mib": added, "max_tokens": engine.max_tokens, "threads": engine.threads}
    for split in ("dev", "test"):
        on, off = split_texts(split)
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


def cascade_child(rounds: int) -> dict[str, Any]:
    """The cascade (extproc.signals.semantic.CascadeProducer's rule) on dev and test: the first
    stage answers when its verdict names a domain with confidence >= the bar, else the second
    stage decides. The bar is routing.embedding.domain_first_stage_confidence's default, chosen on
    dev as the lowest of SWEEP whose first-stage answers are at least as precise as the second
    stage's routed answers. Latency: embedding + classification per test prompt, in this process."""
    from extproc.config import EmbeddingEngineConfig
    from extproc.semantic.engine import local_engine

    bar = EmbeddingEngineConfig().domain_first_stage_confidence
    examples = yaml.safe_load((DATA / "examples.yaml").read_text())
    first, second = local_engine(FIRST_STAGE, cache_size=0), local_engine(SECOND_STAGE, cache_size=0)
    first.load()
    second.load()
    first_model, second_model = calibrated_model(first, examples), calibrated_model(second, examples)
    result: dict[str, Any] = {"bar": bar}

    def precision(pairs: list[tuple[str | None, Any]]) -> tuple[float | None, int]:
        routed = [(want, v) for want, v in pairs if v.domain is not None]
        return (sum(v.domain == want for want, v in routed) / len(routed) if routed else None), len(routed)

    for split in ("dev", "test"):
        on, off = split_texts(split)
        texts = [t for _, t in on] + off
        wanted: list[str | None] = [d for d, _ in on] + [None] * len(off)
        ones = list(map(first_model.classify, first.infer_now(texts)))
        twos = list(map(second_model.classify, second.infer_now(texts)))

        sweep = {}
        for tau in (*SWEEP, bar):
            picked = [(o.domain is not None and o.confidence >= tau, o) for o in ones]
            answered = [(want, o) for want, (ok, o) in zip(wanted, picked, strict=True) if ok]
            final = [o if ok else t for (ok, o), t in zip(picked, twos, strict=True)]
            sweep[str(tau)] = {
                "answered": len(answered) / len(texts),
                "precision": precision(answered)[0],
                "on": sum(v.domain == d for v, (d, _) in zip(final, on, strict=False)) / len(on),
                "off": sum(v.domain is None for v in final[len(on) :]) / len(off),
            }
        result[split] = {"sweep": sweep, "second_precision": precision(list(zip(wanted, twos, strict=True)))[0]}
        result[split]["n_on"], result[split]["n_off"] = len(on), len(off)
        if split == "test":
            times: dict[str, list[float]] = {"answered": [], "fell_through": [], "second_alone": []}
            for _ in range(max(1, rounds // 20)):
                for text in texts:
                    start = time.perf_counter()
                    verdict = first_model.classify(first.infer_now([text])[0])
                    if verdict.domain is not None and verdict.confidence >= bar:
                        times["answered"].append(time.perf_counter() - start)
                    else:
                        second_model.classify(second.infer_now([text])[0])
                        times["fell_through"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    second_model.classify(second.infer_now([text])[0])
                    times["second_alone"].append(time.perf_counter() - start)
            result["latency_ms"] = {
                k: {"n": len(v), "p50": statistics.median(v) * 1000 if v else None} for k, v in times.items()
            }
            result["latency_ms"]["all"] = {
                "n": len(times["answered"]) + len(times["fell_through"]),
                "p50": statistics.median(times["answered"] + times["fell_through"]) * 1000,
            }
    second.close()
    return result


def render_cascade(c: dict[str, Any]) -> str:
    bar = str(c["bar"])
    rows = []
    for tau in (*SWEEP,):
        d = c["dev"]["sweep"][str(tau)]
        rows.append(
            [f"{tau:g}" + (" (default)" if str(tau) == bar else ""), pct(d["answered"]), pct(d["precision"], 2),
             pct(d["on"]), pct(d["off"])]
        )  # fmt: skip
    t = c["test"]["sweep"][bar]
    lat = c["latency_ms"]

    def ms(key: str) -> str:
        v = lat[key]
        return "-" if v["p50"] is None else f"{v['p50']:.2f} (n={v['n']})"

    return "\n".join(
        [
            "",
            f"### The cascade: {FIRST_STAGE} first, {SECOND_STAGE} when it is unsure",
            "",
            "`routing.embedding.domain_first_stage` (opt-in). The first stage answers alone when its calibrated "
            "verdict names a domain with confidence >= the bar; it never rejects (off-topic and unsure prompts go "
            "to the second stage). The bar is chosen on dev: the lowest bar whose first-stage answers are at "
            f"least as precise as {SECOND_STAGE}'s routed answers on dev "
            f"({pct(c['dev']['second_precision'], 2)}).",
            "",
            table(
                ["bar (dev)", "answered by stage 1", "stage-1 precision", "cascade on-topic", "cascade off-topic"],
                rows,
                align="lrrrr",
            ),
            "",
            table(
                ["held-out test, bar " + bar, "value"],
                [
                    ("answered by stage 1", pct(t["answered"])),
                    (
                        "stage-1 precision",
                        f"{pct(t['precision'])} ({SECOND_STAGE} alone: {pct(c['test']['second_precision'])})",
                    ),
                    ("cascade on-topic", f"**{pct(t['on'])}**"),
                    ("cascade off-topic", f"**{pct(t['off'])}**"),
                    ("p50 ms, answered by stage 1", ms("answered")),
                    ("p50 ms, fell through", ms("fell_through")),
                    ("p50 ms, every test prompt", ms("all")),
                    (f"p50 ms, {SECOND_STAGE} alone, same prompts", ms("second_alone")),
                ],
                align="lr",
            ),
            "",
            verdict(t, lat),
            "Latency: embedding + classification in this process, no Envoy; the semantic section shows what "
            "stage 1 answers of its own prompt set.",
        ]
    )


def verdict(test: dict[str, Any], lat: dict[str, Any]) -> str:
    """Issue #13's bar for adopting the cascade as the default: >= 90% on- and off-topic held out,
    and a lower p50 than the second stage alone."""
    fails = [f"held-out {name} {pct(test[key])} < 90%" for key, name in (("on", "on-topic"), ("off", "off-topic"))
             if test[key] < 0.9]  # fmt: skip
    if lat["all"]["p50"] >= lat["second_alone"]["p50"]:
        fails.append("no lower p50 than the second stage alone")
    if fails:
        return f"Verdict: the cascade stays opt-in ({'; '.join(fails)})."
    return "Verdict: the cascade meets the held-out bar and cuts the p50: a candidate for the default."


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def ms_cpu(ms: float, cpu: float) -> str:
    """Latency with enough digits for the static model's sub-millisecond calls."""
    return f"{ms:.2f} ({cpu:.1f}x)" if ms < 1 else f"{ms:.1f} ({cpu:.1f}x)"


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
                ms_cpu(r["short_ms"], r["short_cpu"]),
                ms_cpu(r["long_ms"], r["long_cpu"]),
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
                    ("machine", f"{os.cpu_count()} CPUs (nproc), {cpu_model()}"),
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
            f"embedding in-process with {first['threads']} intra-op threads (spinning within a run only), "
            "p50 over distinct "
            "texts (wordllama: no threads, the calling thread); CPU/wall is process CPU time over wall time "
            "(for wordllama's ~0.05 ms calls it is at the clock's resolution: measured over 2,000 calls in a row "
            "it is 1.0x). RSS: what loading the engine added. The rows "
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
        print(json.dumps(cascade_child(rounds) if method == "cascade" else child(model, tokens, method, rounds)))
        return 0
    started = time.perf_counter()
    results = []
    for row in [*ROWS, (FIRST_STAGE, None, "cascade")]:
        cmd = [sys.executable, __file__, "--child", json.dumps(row), *(["--quick"] if args.quick else [])]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900).stdout
        results.append((row, json.loads(out.strip().splitlines()[-1])))
        print(f"{row}: done", file=sys.stderr)
    cascade = results.pop()[1]
    body = render(results, time.perf_counter() - started) + "\n" + render_cascade(cascade)
    print(body)
    if args.output:
        write_section(args.output, "semantic-models", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
