"""Semantic-signal benchmark: added routing latency, cold start, and isolation of other requests.

    .venv/bin/python tests/bench/semantic.py --output docs/benchmarks.md   # about 2.5-3 min (part of `make bench`)
    .venv/bin/python tests/bench/semantic.py --quick                       # smoke run, about 1 min

What runs (all on loopback, all sharing this machine's cores, which is 2 on the reference box):
- two stacks started with `extproc.dev.stack.Stack` (fake backend + Envoy `--concurrency 1`), each
  with its own `quorum serve` (one worker) that this script spawns itself to time its start:
  *keyword*: decisions use keyword signals only, no embedding engine is even loaded;
  *semantic*: the same decisions (same names, same models) on domain signals (4 domains), reading one
  embedding of the last user message by the domain model (local int8 engine, multilingual-e5-small).
- Prompts are generated English patient-case questions of ~1,300 characters, 266-313 tokens by
  the engine's own tokenizer, so the model always runs at its full 256-token budget. Every
  request carries a different prompt (the engine caches vectors by content hash); both configs
  route them to decision `medical`, model `med` (prompts that the domain signal would not route
  there are dropped before the run, so both stacks do exactly the same rewrite).

1. **Added latency** at c1 through Envoy: each prompt is sent to the semantic and to the keyword
   stack, alternating which goes first, with one keep-alive HTTP/1.1 connection per stack
   (http.client; the client's own cost is the same on both sides). Added = semantic - keyword:
   the difference of the percentiles (the target: p50 <= 5 ms, issue #13) and the percentiles of the
   per-prompt differences. The same prompts sent again show the cache-hit case. In a child
   process (no gRPC, no Envoy, before the stacks start): `SignalSet.evaluate` on the same prompts
   (cache misses), again (cache hits), on one-line prompts, and on the keyword-only set; and with
   the opt-in domain cascade (routing.embedding.domain_first_stage): how many of these prompts the
   static first stage answers alone, the latency split by which stage decided, and one-line prompts.
   These patient cases are long and full of medical words, so the first stage answers all of them:
   the one-line rows show the fall-through cost a more varied workload pays.
2. **Cold start**: Envoy and the fake backend are up first; `quorum serve` is then spawned and a
   request is sent through Envoy every 20 ms until one is answered 200. Reported: spawn ->
   "listening" in Quorum's log, spawn -> first answered request, that request's own latency;
   the child process splits the semantic part (imports, engine load with its warm-up inference,
   embedding the example phrases).
3. **Isolation**: on the semantic stack, wrk drives c8 (`--load-conns`) of distinct 256-token
   prompts to `quorum/auto` (a Lua script inserts a per-run salt and a counter into each prompt),
   while a c1 wrk probe sends requests with an explicit model name (`general`: Quorum evaluates
   no signal for it). The probe runs alone, during the load, and next to a *burner* (a separate
   process embedding prompts back to back with the same engine: the same CPU pressure, outside
   Quorum); straight at the fake backend as a control for contention alone. Rounds alternate the
   order. In the child process, the event loop's lateness (a 2 ms sleep loop) is measured idle and
   while 8 tasks run `SignalSet.evaluate` on distinct prompts, with the engine as configured and,
   for comparison, with 1 intra-op thread and with the intra-op threads at nice +10; and whether
   the tokenizer call holds the GIL. If inference ran on the loop, the loop would be late by up to
   a whole inference.

This box is shared (other jobs run on it, and the host shares its vCPUs): before each part the
script waits up to --quiet-wait seconds for a quiet second, and the report says how much CPU
others used during the measurements.

The Markdown report goes to stdout and, with --output, replaces only the `semantic` section of
that file (see reportlib.py). Every process started here is stopped on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (
    BenchError,
    WrkResult,
    cpu_seconds,
    ensure_wrk,
    measured,
    parse_wrk_output,
    run_wrk,
    system_cpu_seconds,
)
from loadgen import wrk_version as _wrk_version
from reportlib import environment_lines, package_version, scan_logs, table, write_section

from extproc.dev.stack import Stack, find_envoy, free_port
from extproc.eval.stats import percentile

SECTION = "semantic"
CHAT_PATH = "/v1/chat/completions"
AUTO_MODEL = "quorum/auto"
EXPECTED_DECISION = "medical"
EXPECTED_MODEL = "med"
PROBE_MODEL = "general"  # explicit model name: no signal is evaluated
PROBE_PROVIDER_MODEL = "bench-small"  # what Quorum rewrites it to (sent as is to the fake backend)
ID_MARKER = "@@ID@@"
TARGET_ADDED_P50_MS = 5.0  # issue #13
TARGET_CPU_PER_WALL = 2.0  # Quorum CPU per semantic request <= 2x its wall time (issue #13)

# ---------------------------------------------------------------- configs

COMMON = """\
# Generated by tests/bench/semantic.py for one benchmark run (free ports picked at start).
version: v1
server: {{listen: "127.0.0.1:{grpc}", workers: 1, grace_period: 1s}}
envoy: {{listen: "127.0.0.1:{envoy}", admin: "127.0.0.1:{admin}"}}
observability: {{metrics: {{listen: "127.0.0.1:{metrics}"}}}}
providers:
  defaults: {{default_model: general}}
  models:
    - {{name: general, provider_model_id: bench-small, base_url: "{base_url}"}}
    - {{name: med, provider_model_id: bench-med, base_url: "{base_url}"}}
    - {{name: legal, provider_model_id: bench-legal, base_url: "{base_url}"}}
    - {{name: coder, provider_model_id: bench-coder, base_url: "{base_url}"}}
    - {{name: big, provider_model_id: bench-big, base_url: "{base_url}"}}
routing:
  auto_model_names: ["quorum/auto"]
"""

SEMANTIC_ROUTING = """\
  signals:
    domain:
      - name: medicine
        examples: ["What are the side effects of ibuprofen?", "How is type 2 diabetes treated?",
                   "What causes migraines?", "My blood pressure is high, which medication should I take?",
                   "My father has chest pain and swollen ankles; what tests should the doctor order?",
                   "Can this medication cause dizziness and nausea as side effects?"]
      - name: law
        examples: ["Is this contract clause enforceable?", "How do I file a lawsuit for breach of contract?",
                   "What are my rights as a tenant?", "Can my employer fire me without notice?"]
      - name: cooking
        examples: ["How long should I bake bread?", "What's a good pasta sauce recipe?", "How do I caramelize onions?",
                   "How do I keep a steak juicy?"]
      - name: programming
        examples: ["Why does my python script raise a KeyError?", "How do I reverse a linked list in Java?",
                   "Explain this stack trace from my web server", "How do I write a SQL join?"]
  decisions:
    - {name: medical, priority: 100, rules: {type: domain, name: medicine}, modelRefs: [{model: med}]}
    - {name: legal, priority: 100, rules: {type: domain, name: law}, modelRefs: [{model: legal}]}
    - {name: coding, priority: 100, rules: {type: domain, name: programming}, modelRefs: [{model: coder}]}
"""

KEYWORD_ROUTING = """\
  signals:
    keyword:
      - {name: medicine, keywords: [symptoms, diagnosis, medication]}
      - {name: law, keywords: [lawsuit, contract, tenant]}
      - {name: programming, keywords: [python, "stack trace", sql]}
  decisions:
    - {name: medical, priority: 100, rules: {type: keyword, name: medicine}, modelRefs: [{model: med}]}
    - {name: legal, priority: 100, rules: {type: keyword, name: law}, modelRefs: [{model: legal}]}
    - {name: coding, priority: 100, rules: {type: keyword, name: programming}, modelRefs: [{model: coder}]}
"""


def embedding_settings(args: argparse.Namespace) -> str:
    """`routing.embedding` overrides for the semantic stack (default: none, Quorum's own defaults)."""
    return f"  embedding: {{threads: {args.threads}}}\n" if args.threads else ""


def write_config(path: Path, routing: str) -> Path:
    ports = {k: free_port() for k in ("grpc", "envoy", "admin", "metrics")}
    text = COMMON.format(base_url=f"http://127.0.0.1:{free_port()}/v1", **ports) + routing
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- prompts

SYMPTOMS = [
    "a dull headache behind the eyes", "sharp pain in the lower back", "shortness of breath when climbing stairs",
    "a dry cough that gets worse at night", "swollen ankles by the evening", "blurred vision in the left eye",
    "heart palpitations after coffee", "tingling and numbness in both hands", "a persistent low-grade fever",
    "nausea after most meals", "joint stiffness in the morning", "an itchy rash on the forearms",
    "ringing in the ears", "tightness in the chest", "unexplained weight loss", "frequent urination at night",
    "dizziness when standing up quickly", "painful muscle cramps in the calves", "night sweats",
    "a sore throat with swollen glands", "constant fatigue", "heartburn after lying down", "pain when swallowing",
    "cold hands and feet", "hair loss", "bruising easily",
]  # fmt: skip
MEDS = [
    "ibuprofen", "metformin", "lisinopril", "atorvastatin", "amoxicillin", "levothyroxine", "omeprazole",
    "sertraline", "prednisone", "amlodipine", "warfarin", "insulin", "paracetamol", "aspirin", "losartan",
    "gabapentin", "metoprolol", "furosemide",
]  # fmt: skip
WHO = ["mother", "father", "grandmother", "grandfather", "husband", "wife", "son", "daughter", "brother", "sister",
       "uncle"]  # fmt: skip
LABS = ["blood glucose", "cholesterol", "blood pressure", "TSH", "creatinine", "white blood cell count", "potassium",
        "liver enzymes", "hemoglobin", "vitamin D"]  # fmt: skip
PARTS = ["knee", "hip", "shoulder", "heart", "gallbladder", "spine", "thyroid"]
TEMPLATES = [
    "My {who}, who is {age} years old, has had {s1} for {n} days.",
    "The doctor prescribed {m1} {dose} mg twice a day, but the symptoms have not improved.",
    "Last week a blood test showed {lab} slightly above the normal range.",
    "Could {s1} be a side effect of {m1}, or should we ask for a different diagnosis?",
    "{Pro} also mentions {s1} and {s2}, mostly in the {when}.",
    "Is it safe to combine {m1} with {m2}, and what dose would a physician usually recommend?",
    "The pharmacist said {m2} can interact with {m1} and raise the risk of {s2}.",
    "A nurse measured {lab} twice and both readings were worrying.",
    "We saw a general practitioner {n} days ago who suspected an infection and ordered an x-ray.",
    "{Pro} had surgery on the {part} {n} years ago and has taken {m2} ever since.",
    "The pain is worse after exercise and eases with rest and a warm compress.",
    "There is a family history of diabetes, heart disease and high blood pressure.",
]
OPENING = (
    "I am worried about these symptoms and would like a medical opinion on the diagnosis and treatment (case {id})."
)
CLOSING = "What tests should we ask the doctor for, and which warning signs mean we should go to the emergency room?"


def make_prompt(rng: random.Random, ident: str, min_chars: int = 1180) -> str:
    """~1,300 characters of English (266-313 MiniLM tokens); distinct per `ident` and per draw."""
    parts = [OPENING.format(id=ident)]
    while sum(len(p) + 1 for p in parts) < min_chars:
        s1, s2 = rng.sample(SYMPTOMS, 2)
        m1, m2 = rng.sample(MEDS, 2)
        parts.append(
            rng.choice(TEMPLATES).format(
                who=rng.choice(WHO),
                age=rng.randint(8, 92),
                s1=s1,
                s2=s2,
                n=rng.randint(2, 40),
                m1=m1,
                m2=m2,
                dose=rng.choice([5, 10, 20, 25, 50, 100, 250, 500]),
                lab=rng.choice(LABS),
                when=rng.choice(["morning", "evening", "night", "afternoon"]),
                Pro=rng.choice(["She", "He"]),
                part=rng.choice(PARTS),
            )
        )
    parts.append(CLOSING)
    return " ".join(parts)


def chat(model: str, prompt: str) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- statistics


pct = percentile  # the eval harness's: linear interpolation between closest ranks, nan when empty


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1e3 for v in values_s]
    return {"n": len(ms), "p50": pct(ms, 50), "p90": pct(ms, 90), "p99": pct(ms, 99), "max": max(ms, default=0.0)}


# ---------------------------------------------------------------- in-process child


def child_main(spec_path: str, out_path: str) -> int:
    """Runs in a fresh process: in-process timings of SignalSet.evaluate and the event loop's lateness."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers

    t_import = time.perf_counter() - t0
    from extproc.config import load_config
    from extproc.decisions import select
    from extproc.openai import parse_chat_request
    from extproc.runtime import build_runtime, prepare_runtime

    async def run() -> dict[str, Any]:
        import asyncio

        out: dict[str, Any] = {"import_s": t_import}
        t = time.perf_counter()
        runtime = build_runtime(load_config(spec["semantic_config"]))
        out["build_runtime_s"] = time.perf_counter() - t
        engine = runtime.signals.producers[0].engine
        out["engine"] = {"threads": engine.threads, "precision": engine.precision, "model": engine.model}
        out["engine_load_s"] = engine.load_seconds
        t = time.perf_counter()
        await prepare_runtime(runtime)
        out["prepare_s"] = time.perf_counter() - t
        out["prototype_phrases"] = engine.stats.computed
        kw_runtime = build_runtime(load_config(spec["keyword_config"]))

        counter = tokenizers.Tokenizer.from_file(str(Path(engine.model_path).parent / "tokenizer.json"))
        counter.no_truncation()
        counter.no_padding()
        raw = [len(counter.encode(p).ids) for p in spec["prompts"] + spec["load_prompts"]]
        seen = [len(engine._encode(p).ids) for p in spec["prompts"][:50]]
        out["tokens"] = {"min": min(raw), "median": statistics.median(raw), "max": max(raw), "model_sees": max(seen)}
        out["chars"] = {
            "min": min(len(p) for p in spec["prompts"]),
            "median": statistics.median(len(p) for p in spec["prompts"]),
            "max": max(len(p) for p in spec["prompts"]),
        }

        def parsed(prompt: str) -> Any:
            return parse_chat_request(chat(AUTO_MODEL, prompt))

        async def timed(rt: Any, prompts: list[str]) -> tuple[list[float], list[str | None]]:
            times, decisions = [], []
            for prompt in prompts:
                req = parsed(prompt)
                t = time.perf_counter()
                results = await rt.signals.evaluate(req, {})
                times.append(time.perf_counter() - t)
                match = select(rt.decisions, results)
                decisions.append(match.decision.name if match else None)
            return times, decisions

        await timed(runtime, spec["warmup_prompts"])
        busy0, own0, wall0 = system_cpu_seconds()[0], time.process_time(), time.perf_counter()
        miss, decisions = await timed(runtime, spec["prompts"])
        own, wall = time.process_time() - own0, time.perf_counter() - wall0
        out["miss_cpu"] = {
            "own_pct": 100 * own / wall,
            "other_pct": 100 * (system_cpu_seconds()[0] - busy0 - own) / wall,
        }
        out["decisions"] = decisions
        hit, _ = await timed(runtime, spec["prompts"])
        short, _ = await timed(runtime, [f"How is type 2 diabetes treated? (case {i})" for i in range(60)])
        keyword, kw_decisions = await timed(kw_runtime, spec["prompts"])
        out["keyword_decisions"] = kw_decisions
        out["evaluate"] = {
            "miss": summary_ms(miss),
            "hit": summary_ms(hit),
            "short": summary_ms(short),
            "keyword": summary_ms(keyword),
        }
        out["versus_before"] = versus_before(engine, spec["prompts"][:100])
        out["cascade"] = await cascade_timings(load_config(spec["semantic_config"]), spec["prompts"], timed)

        # The event loop's lateness: a 2 ms sleep loop, idle and next to 8 concurrent evaluations.
        async def ticker(stop: asyncio.Event, lates: list[float]) -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.002)
                lates.append(time.perf_counter() - t - 0.002)

        async def lag(seconds: float, workers: int, rt: Any = runtime) -> tuple[list[float], int]:
            stop, lates, done = asyncio.Event(), [], [0]
            rng = random.Random(4242)

            async def worker(w: int) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    await rt.signals.evaluate(parsed(make_prompt(rng, f"lag-{w}-{i}")), {})
                    done[0] += 1

            tasks = [asyncio.create_task(ticker(stop, lates))]
            tasks += [asyncio.create_task(worker(w)) for w in range(workers)]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks)
            return lates, done[0]

        seconds, workers = spec["lag_seconds"], spec["lag_workers"]
        idle, _ = await lag(seconds / 2, 0)
        out["lag"] = {"idle": summary_ms(idle), "seconds": seconds, "workers": workers, "variants": []}

        async def variant(name: str, rt: Any) -> None:
            busy0, wall0 = system_cpu_seconds()[0], time.perf_counter()
            lates, evaluated = await lag(seconds, workers, rt)
            wall = time.perf_counter() - wall0
            busy = 100 * (system_cpu_seconds()[0] - busy0) / wall
            out["lag"]["variants"].append(
                {"name": name, **summary_ms(lates), "rate": evaluated / wall, "machine_busy_pct": busy}
            )

        await variant("default", runtime)
        # What a knob would buy (routing.embedding has none): one intra-op thread, or the inference threads
        # at nice +10 (a thread's nice value is per thread on Linux, and onnxruntime's pool threads inherit
        # it from the thread that creates the session: here, the engine's executor thread).
        from concurrent.futures import ThreadPoolExecutor

        from extproc.semantic.build import DEFAULT_MODEL
        from extproc.semantic.engine import LocalEmbeddingEngine
        from extproc.signals.semantic import SemanticContext

        for name in ("1 intra-op thread", "intra-op threads at nice +10"):
            engine = LocalEmbeddingEngine(DEFAULT_MODEL, threads=1 if name.startswith("1") else None)
            if name.startswith("1"):
                engine.load()
            else:

                def niced_load(engine: Any = engine) -> None:
                    os.setpriority(os.PRIO_PROCESS, 0, 10)  # 0: the calling thread only
                    engine.load()

                engine._executor.submit(niced_load).result()
            config = load_config(spec["semantic_config"])
            rt = build_runtime(config, semantic=SemanticContext(engine, ThreadPoolExecutor(max_workers=2)))
            await prepare_runtime(rt)
            await variant(name, rt)
            engine.close()
        out["gil"] = gil_shares(counter, spec["prompts"][0])
        return out

    try:
        import uvloop

        result = uvloop.run(run())
    except ImportError:  # pragma: no cover
        import asyncio

        result = asyncio.run(run())
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    os._exit(0)  # skip tearing down onnxruntime's thread pool and the executors


async def cascade_timings(config: Any, prompts: list[str], timed: Any) -> dict[str, Any]:
    """The same semantic config with the opt-in cascade (routing.embedding.domain_first_stage, a fresh
    runtime, so both stages miss their caches): how many of these prompts the static first stage
    answers alone, and `SignalSet.evaluate` when it answers and when it falls through to the model."""
    from extproc.runtime import build_runtime, prepare_runtime

    first = "wordllama-l2-supercat"
    embedding = config.routing.embedding.model_copy(update={"domain_first_stage": first})
    config = config.model_copy(update={"routing": config.routing.model_copy(update={"embedding": embedding})})
    runtime = build_runtime(config)
    await prepare_runtime(runtime)
    (producer,) = runtime.signals.producers
    answered: list[float] = []
    fell: list[float] = []
    routed = 0
    for prompt in prompts:
        before = producer.answered
        times, decisions = await timed(runtime, [prompt])
        (answered if producer.answered > before else fell).extend(times)
        routed += decisions[0] == EXPECTED_DECISION
    short_prompts = [f"How is type 2 diabetes treated? (case {i})" for i in range(60)]
    before = producer.answered
    short, _ = await timed(runtime, short_prompts)
    return {
        "first_stage": first,
        "confidence": embedding.domain_first_stage_confidence,
        "answered": summary_ms(answered),
        "fell_through": summary_ms(fell),
        "all": summary_ms(answered + fell),
        "routed_expected": routed,
        "short": summary_ms(short),
        "short_answered": producer.answered - before,
    }


def versus_before(engine: Any, prompts: list[str]) -> dict[str, Any]:
    """The domain engine against the one domain signals ran on before issue #13 (all-MiniLM-L6-v2 reading
    256 tokens), on the same prompts, interleaved (alternating which goes first), bypassing the caches:
    on a shared box the ratio of the two holds better than either time."""
    from extproc.semantic.engine import LocalEmbeddingEngine

    before = LocalEmbeddingEngine("all-MiniLM-L6-v2", max_tokens=256, cache_size=0, threads=engine.threads)
    before.load()
    times: dict[str, list[float]] = {"now": [], "before": []}
    cpu: dict[str, float] = {"now": 0.0, "before": 0.0}
    for i, prompt in enumerate(prompts):
        order = [("now", engine), ("before", before)]
        for name, eng in order if i % 2 else order[::-1]:
            wall, own = time.perf_counter(), time.process_time()
            eng.infer_now([prompt])
            times[name].append(time.perf_counter() - wall)
            cpu[name] += time.process_time() - own
    before.close()
    ratios = [n / b for n, b in zip(times["now"], times["before"], strict=True)]
    return {
        "now": summary_ms(times["now"]),
        "before": summary_ms(times["before"]),
        "ratio_p50": statistics.median(ratios),
        "cpu_per_wall": {k: cpu[k] / sum(times[k]) for k in times},
    }


def gil_shares(tokenizer: Any, text: str) -> dict[str, float]:
    """How much of its usual pace a pure-Python thread keeps while this thread runs each call in a loop:
    ~1 when the call releases the GIL, ~0.5 or less when it holds it. Also the call's own duration in ms."""
    import threading

    def share(call: Any, n: int) -> tuple[float, float]:
        count, stop = [0], [False]

        def spin() -> None:
            while not stop[0]:
                count[0] += 1

        thread = threading.Thread(target=spin)
        thread.start()
        time.sleep(0.05)
        c0, t0 = count[0], time.perf_counter()
        time.sleep(0.2)
        alone = (count[0] - c0) / (time.perf_counter() - t0)
        c0, t0 = count[0], time.perf_counter()
        for _ in range(n):
            call()
        elapsed = time.perf_counter() - t0
        during = (count[0] - c0) / elapsed
        stop[0] = True
        thread.join()
        return during / alone, 1e3 * elapsed / n

    encode, encode_ms = share(lambda: tokenizer.encode(text), 300)
    batch, batch_ms = share(lambda: tokenizer.encode_batch([text]), 100)
    python, _ = share(lambda: sum(range(20_000)), 300)
    return {"encode": encode, "encode_ms": encode_ms, "encode_batch": batch, "batch_ms": batch_ms, "python": python}


def burner_main() -> int:
    """Runs in a fresh process: the engine Quorum uses (same defaults), embedding distinct 256-token prompts
    back to back until SIGTERM, then prints how many. The same CPU pressure as a semantic load, outside Quorum."""
    import asyncio

    from extproc.semantic.engine import LocalEmbeddingEngine

    async def run() -> int:
        engine = LocalEmbeddingEngine(cache_size=0)
        engine.load()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        rng, done = random.Random(99), 0
        print("ready", flush=True)
        while not stop.is_set():
            await engine.embed([make_prompt(rng, f"burn-{done}")])
            done += 1
        return done

    done = asyncio.run(run())
    print(f"embedded {done}", flush=True)
    os._exit(0)


# ---------------------------------------------------------------- processes

_CHILDREN: list[tuple[subprocess.Popen[Any], bool]] = []  # (process, own session): stopped in main()'s finally


def _stop(proc: subprocess.Popen[Any] | None, group: bool = True) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
        proc.wait()


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    _CHILDREN.append((proc, True))
    return proc


def run_child(workdir: Path, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    spec_path, out_path = workdir / "inproc-spec.json", workdir / "inproc-out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path), str(out_path)]
    proc = spawn(argv, workdir / "inproc.log")
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"the in-process measurement took over {timeout:.0f} s; see {workdir}/inproc.log") from None
    finally:
        _stop(proc)
    if code != 0 or not out_path.exists():
        log = (workdir / "inproc.log").read_text(errors="replace")[-3000:]
        raise BenchError(f"the in-process measurement failed (exit {code}):\n{log}")
    return json.loads(out_path.read_text(encoding="utf-8"))


@dataclass
class Target:
    """One stack: fake backend + Envoy (devstack.Stack) and a `quorum serve` spawned here."""

    name: str
    config_path: Path
    workdir: Path
    stack: Stack = field(init=False)
    quorum: subprocess.Popen[bytes] | None = None
    spawned_wall: float = 0.0
    cold: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(self.config_path, self.workdir, workers=1, envoy_concurrency=1, with_quorum=False)

    @property
    def url(self) -> str:
        return self.stack.envoy_url

    @property
    def fake_url(self) -> str:
        (host, port), _ = next(iter(self.stack.fake_backends().items()))
        return f"http://{host}:{port}"

    def pids(self) -> dict[str, int]:
        procs = dict(self.stack.processes)
        fake = next(p for n, p in procs.items() if n.startswith("fake-"))
        assert self.quorum is not None
        return {"quorum": self.quorum.pid, "envoy": procs["envoy"].pid, "fake": fake.pid}

    def start_quorum(self, first_body: bytes, timeout: float = 90.0) -> None:
        """Spawn `quorum serve`, then try a request through Envoy every 20 ms until one is answered."""
        argv = [sys.executable, "-m", "extproc", "serve", "--config", str(self.config_path), "--workers", "1"]
        self.spawned_wall = time.time()
        spawned = time.perf_counter()
        self.quorum = spawn(argv, self.workdir / "quorum.log")
        attempts = 0
        while True:
            attempts += 1
            sent = time.perf_counter()
            status, headers, raw = post(self.url, first_body, timeout=30)
            answered = time.perf_counter()
            if status == 200:
                break
            if self.quorum.poll() is not None:
                raise BenchError(f"quorum serve ({self.name}) exited with {self.quorum.returncode}; see its log")
            if answered - spawned > timeout:
                raise BenchError(
                    f"quorum serve ({self.name}) answered nothing 200 within {timeout:.0f} s: {raw[:300]!r}"
                )
            time.sleep(0.02)
        check_route(self.name, headers)
        self.cold = {
            "first_answer_s": answered - spawned,
            "first_latency_s": answered - sent,
            "attempts": attempts,
            **self.log_times(),
        }

    def log_times(self) -> dict[str, float]:
        """Seconds from spawn to Quorum's own log lines (asctime has ms resolution)."""
        out = {}
        for line in (self.workdir / "quorum.log").read_text(errors="replace").splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)", line)
            if not m:
                continue
            stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if m.group(2).startswith("semantic signals ready"):
                out["signals_ready_s"] = stamp - self.spawned_wall
                ready = re.search(r"in ([\d.]+)s", m.group(2))
                if ready:
                    out["prepare_logged_s"] = float(ready.group(1))
            elif "ext_proc listening" in m.group(2):
                out["listening_s"] = stamp - self.spawned_wall
        return out

    def stop(self) -> None:
        _stop(self.quorum)
        self.stack.stop()


def post(url: str, body: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url + CHAT_PATH, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
    except OSError as err:
        return 0, {}, str(err).encode()


def check_route(name: str, headers: dict[str, str], model: str = EXPECTED_MODEL) -> None:
    got = headers.get("x-quorum-model")
    if got != model:
        raise BenchError(f"{name}: routed to {got!r} (decision {headers.get('x-quorum-decision')!r}), expected {model}")


def reference_ms() -> float:
    """A fixed single-core pure-Python loop, best of 3, in ms: a spot check of how fast this (shared) host
    runs right now. On a VM whose neighbours compete for the same physical cores it varies by 2x or more."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i
        best = min(best, time.perf_counter() - t)
    return best * 1e3


QUIET: dict[str, float] = {}  # phase -> seconds waited for other jobs to finish (negative: gave up)


def wait_quiet(phase: str, max_wait: float) -> None:
    """Wait (up to `max_wait` s) for a second in which the whole machine used < 0.15 CPU-seconds: other jobs on
    this shared box (test runs, builds) would otherwise land in the middle of a measurement."""
    started = time.monotonic()
    while True:
        b0, t0 = system_cpu_seconds()[0], time.monotonic()
        time.sleep(1.0)
        busy = (system_cpu_seconds()[0] - b0) / (time.monotonic() - t0)
        waited = time.monotonic() - started
        if busy < 0.15:
            QUIET[phase] = waited - 1.0
            return
        if waited >= max_wait:
            QUIET[phase] = -waited
            print(f"  the machine is still busy ({100 * busy:.0f}% CPU) before {phase}; going on", file=sys.stderr)
            return


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- part 1: c1 paired


class Client:
    """One keep-alive HTTP/1.1 connection (http.client): a few tens of µs per request of its own."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, body: bytes) -> tuple[float, int, dict[str, str]]:
        started = time.perf_counter()
        self.conn.request("POST", CHAT_PATH, body, {"content-type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        elapsed = time.perf_counter() - started
        return elapsed, resp.status, {k.lower(): v for k, v in resp.getheaders()}

    def close(self) -> None:
        self.conn.close()


def paired(sem: Target, kw: Target, prompts: list[str], warmup: list[str]) -> dict[str, Any]:
    clients = {"semantic": Client(sem.url), "keyword": Client(kw.url)}
    pids = {"semantic": sem.pids()["quorum"], "keyword": kw.pids()["quorum"]}
    ours = {f"{t.name}-{k}": v for t in (sem, kw) for k, v in t.pids().items()} | {"client": os.getpid()}
    try:
        for prompt in warmup:
            for c in clients.values():
                c.post(chat(AUTO_MODEL, prompt))
        times: dict[str, list[float]] = {"semantic": [], "keyword": []}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        with CpuMeter(ours) as meter:
            for i, prompt in enumerate(prompts):
                body = chat(AUTO_MODEL, prompt)
                for name in ("semantic", "keyword") if i % 2 == 0 else ("keyword", "semantic"):
                    elapsed, status, headers = clients[name].post(body)
                    if status != 200:
                        raise BenchError(f"{name} stack answered {status}")
                    check_route(name, headers)
                    times[name].append(elapsed)
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        # The same prompts again: every embedding is now in the semantic Quorum's cache.
        hits: dict[str, list[float]] = {"semantic": [], "keyword": []}
        for i, prompt in enumerate(prompts[: max(50, len(prompts) // 3)]):
            body = chat(AUTO_MODEL, prompt)
            for name in ("semantic", "keyword") if i % 2 == 0 else ("keyword", "semantic"):
                elapsed, status, _ = clients[name].post(body)
                if status != 200:
                    raise BenchError(f"{name} stack answered {status}")
                hits[name].append(elapsed)
    finally:
        for c in clients.values():
            c.close()
    diff = [s - k for s, k in zip(times["semantic"], times["keyword"], strict=True)]
    q = max(1, len(prompts) // 4)
    quarters = [
        (pct(times["semantic"][i : i + q], 50) * 1e3, pct(times["keyword"][i : i + q], 50) * 1e3)
        for i in range(0, q * 4, q)
    ]
    hit_diff = [s - k for s, k in zip(hits["semantic"], hits["keyword"], strict=True)]
    return {
        "miss": {k: summary_ms(v) for k, v in times.items()},
        "hit": {k: summary_ms(v) for k, v in hits.items()},
        "diff": summary_ms(diff),
        "hit_diff": summary_ms(hit_diff),
        "cpu_ms_per_req": {k: 1e3 * v / len(prompts) for k, v in cpu.items()},
        "quarters": quarters,
        "other_pct": meter.window.other_pct,
    }


def same_stack(sem: Target, prompts: list[str]) -> dict[str, Any]:
    """On the semantic stack alone (the keyword stack stopped): each distinct prompt to `quorum/auto`
    (embedded, routed to `medical`) and the same body naming the model (`general`: no signal
    computed), alternating which goes first. What one deployment adds for an embedding-based decision,
    without a second stack's processes running between the two requests of a pair. Quorum's CPU per
    explicit request is measured first, alone, so that its CPU per auto request can be told apart."""
    client = Client(sem.url)
    pid = sem.pids()["quorum"]
    times: dict[str, list[float]] = {"auto": [], "explicit": []}
    kinds = {"auto": (AUTO_MODEL, EXPECTED_MODEL), "explicit": (PROBE_MODEL, PROBE_MODEL)}

    def send(name: str, prompt: str) -> float:
        model, expected = kinds[name]
        elapsed, status, headers = client.post(chat(model, prompt))
        if status != 200:
            raise BenchError(f"semantic stack answered {status} to {name}")
        check_route(name, headers, expected)
        return elapsed

    try:
        cpu0 = cpu_seconds(pid)
        for prompt in prompts:
            send("explicit", prompt)
        cpu_explicit = (cpu_seconds(pid) - cpu0) / len(prompts)
        cpu0 = cpu_seconds(pid)
        for i, prompt in enumerate(prompts):
            for name in ("auto", "explicit") if i % 2 == 0 else ("explicit", "auto"):
                times[name].append(send(name, prompt))
        cpu_auto = (cpu_seconds(pid) - cpu0) / len(prompts) - cpu_explicit
    finally:
        client.close()
    diff = [a - e for a, e in zip(times["auto"], times["explicit"], strict=True)]
    return {
        **{k: summary_ms(v) for k, v in times.items()},
        "diff": summary_ms(diff),
        "cpu_ms_per_req": {"auto": cpu_auto * 1e3, "explicit": cpu_explicit * 1e3},
    }


# ---------------------------------------------------------------- part 3: isolation under load

LOAD_LUA = """\
-- POST a distinct prompt per request: body lines hold @@ID@@, replaced by <salt>-<counter>.
-- Counts answers whose x-quorum-decision is not the expected one. Prints BENCHCSV (as post.lua)
-- and SEMCSV,answers,mismatches.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
   bodies, counter, seen, mismatches = {}, 0, 0, 0
   salt, expected = args[2], args[3]
   for line in io.lines(args[1]) do
      local s, e = string.find(line, "@@ID@@", 1, true)
      if s then table.insert(bodies, {string.sub(line, 1, s - 1), string.sub(line, e + 1)}) end
   end
   if #bodies == 0 then error("no bodies in " .. args[1]) end
end
function request()
   counter = counter + 1
   local b = bodies[(counter % #bodies) + 1]
   return wrk.format(nil, nil, nil, b[1] .. salt .. "-" .. counter .. b[2])
end
function response(status, headers, body)
   seen = seen + 1
   if headers["x-quorum-decision"] ~= expected then mismatches = mismatches + 1 end
end
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCHCSV,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.1f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.mean, latency.max, e.status, e.connect, e.read, e.write, e.timeout))
   local n, m = 0, 0
   for _, t in ipairs(threads) do n = n + t:get("seen"); m = m + t:get("mismatches") end
   io.write(string.format("SEMCSV,%d,%d\\n", n, m))
end
"""


@dataclass
class LoadResult:
    wrk: WrkResult
    answers: int
    mismatches: int


class SemanticLoad:
    """wrk in the background: `connections` closed-loop clients of distinct 256-token prompts."""

    def __init__(self, wrk: str, url: str, lua: Path, bodies: Path, connections: int, seconds: int, salt: str):
        self.argv = [
            wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout=10s", "--latency", "-s", str(lua),
            url + CHAT_PATH, "--", str(bodies), salt, EXPECTED_DECISION,
        ]  # fmt: skip
        self.seconds = seconds
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> SemanticLoad:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _CHILDREN.append((self.proc, False))
        return self

    def finish(self) -> LoadResult:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 40)
        finally:
            _stop(self.proc, group=False)
        if self.proc.returncode != 0:
            raise BenchError(f"wrk (semantic load) exited with {self.proc.returncode}:\n{out[-2000:]}")
        m = re.search(r"^SEMCSV,(\d+),(\d+)$", out, re.M)
        return LoadResult(parse_wrk_output(out), int(m.group(1)) if m else 0, int(m.group(2)) if m else -1)


@dataclass
class Window:
    """CPU seconds per process (and the rest of the machine) over one measured window."""

    seconds: float
    cpu: dict[str, float]
    other: float

    def pct(self, name: str) -> float:
        return 100.0 * self.cpu.get(name, 0.0) / self.seconds if self.seconds else 0.0

    @property
    def other_pct(self) -> float:
        return 100.0 * max(0.0, self.other) / self.seconds if self.seconds else 0.0


class CpuMeter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def __enter__(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        self.c0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.b0, _ = system_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, _ = system_cpu_seconds()
        cpu = {n: cpu_seconds(p) - self.c0[n] for n, p in self.pids.items()}
        self.window = Window(time.perf_counter() - self.t0, cpu, (busy - self.b0) - sum(cpu.values()))


def isolation(wrk: str, sem: Target, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of: probe alone (through Quorum, then direct), load alone, load + probes; medians."""
    probe_prompt = make_prompt(random.Random(7), "probe")
    probe_q, probe_f = workdir / "probe-quorum.json", workdir / "probe-fake.json"
    probe_q.write_bytes(chat(PROBE_MODEL, probe_prompt))
    probe_f.write_bytes(chat(PROBE_PROVIDER_MODEL, probe_prompt))
    status, headers, raw = post(sem.url, probe_q.read_bytes())
    if status != 200:
        raise BenchError(f"the probe request answered {status}: {raw[:300]!r}")
    check_route("probe", headers, PROBE_MODEL)
    if headers.get("x-quorum-decision") != "explicit":
        raise BenchError(f"the probe went through decision {headers.get('x-quorum-decision')!r}, not `explicit`")
    lua = workdir / "semantic-load.lua"
    lua.write_text(LOAD_LUA, encoding="utf-8")
    pids = sem.pids()
    urls = {"quorum": sem.url + CHAT_PATH, "fake": sem.fake_url + CHAT_PATH}
    bodies = {"quorum": probe_q, "fake": probe_f}
    d = args.duration
    rounds: list[dict[str, Any]] = []

    def probe(target: str) -> tuple[WrkResult, Window]:
        with CpuMeter(pids) as meter:
            r = run_wrk(wrk, urls[target], bodies[target], connections=1, duration_s=d)
        meter.window.cpu["wrk"] = r.wrk_cpu_s
        if r.non_2xx or r.socket_errors:
            raise BenchError(f"probe ({target}): {r.non_2xx} non-2xx, {r.socket_errors} socket errors")
        return r, meter.window

    def load(salt: str, seconds: int) -> SemanticLoad:
        return SemanticLoad(wrk, sem.url, lua, workdir / "load-bodies.txt", args.load_conns, seconds, salt)

    def settle() -> None:
        time.sleep(1.0)  # requests wrk abandoned at its end may still be queued for the inference worker

    def burner(res: dict[str, Any]) -> None:
        """The probe while another process runs the same inferences back to back: CPU contention only."""
        argv = [sys.executable, str(Path(__file__).resolve()), "--burner"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
        _CHILDREN.append((proc, True))
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise BenchError("the inference burner did not start")
            time.sleep(0.5)
            started = time.perf_counter()
            res["probe_quorum_burner"] = probe("quorum")
            elapsed = time.perf_counter() - started
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            _stop(proc)
        m = re.search(r"embedded (\d+)", out)
        res["burner_rate"] = int(m.group(1)) / (elapsed + 0.5) if m else 0.0

    # Warm up the load path (and leave the executor queue empty again).
    load(f"w{random.randrange(10**6)}", 2).start().finish()
    for n in range(1, args.rounds + 1):
        wait_quiet(f"isolation round {n}", args.quiet_wait)
        res: dict[str, Any] = {}
        salt = f"r{n}x{random.randrange(10**6)}"

        def alone(res: dict[str, Any], salt: str) -> None:
            res["probe_quorum_alone"] = probe("quorum")
            res["probe_fake_alone"] = probe("fake")
            bg = load(salt + "a", d).start()
            with CpuMeter(pids) as meter:
                res["load_alone"] = bg.finish()
            res["load_alone_cpu"] = meter.window
            settle()

        def loaded(res: dict[str, Any], salt: str) -> None:
            bg = load(salt + "b", 2 * d + 2).start()
            try:
                time.sleep(1.0)  # let the executor's queue fill first
                res["probe_quorum_loaded"] = probe("quorum")
                res["probe_fake_loaded"] = probe("fake")
            finally:
                res["load_with_probe"] = bg.finish()
            settle()

        for step in (alone, loaded) if n % 2 else (loaded, alone):
            step(res, salt)
        burner(res)
        res["reference_ms"] = reference_ms()
        rounds.append(res)
        q0, q1, q2 = (res[f"probe_quorum_{k}"][0] for k in ("alone", "loaded", "burner"))
        la = res["load_alone"].wrk
        print(
            f"  [{n}/{args.rounds}] probe via Quorum p50/p99 alone {q0.p50_ms:.2f}/{q0.p99_ms:.2f} ms, during the "
            f"load {q1.p50_ms:.2f}/{q1.p99_ms:.2f} ms, next to the burner {q2.p50_ms:.2f}/{q2.p99_ms:.2f} ms; "
            f"load c{args.load_conns} alone {la.rps:.0f} req/s p50 {la.p50_ms:.0f} ms; burner "
            f"{res['burner_rate']:.0f} embeddings/s",
            file=sys.stderr,
            flush=True,
        )
    for res in rounds:
        for key in ("load_alone", "load_with_probe"):
            r: LoadResult = res[key]
            if r.wrk.non_2xx or r.wrk.socket_errors:
                raise BenchError(f"semantic load: {r.wrk.non_2xx} non-2xx, {r.wrk.socket_errors} socket errors")
    return {"rounds": rounds, "rss_mib": rss_mib(pids["quorum"])}


# ---------------------------------------------------------------- report


def f1(v: float) -> str:
    return f"{v:.1f}"


def f2(v: float) -> str:
    return f"{v:.2f}"


def med(values: list[float]) -> float:
    return statistics.median(values)


def cascade_rows(c: dict[str, Any], lat_row: Any) -> list[list[str]]:
    """The opt-in cascade's rows: every prompt, then split by which stage decided it."""
    n = c["all"]["n"]
    head = f"cascade ({c['first_stage']} first, confidence >= {c['confidence']:g}), 256-token prompts"
    rows = [
        (f"{head}, all; {c['routed_expected']}/{n} to `{EXPECTED_DECISION}`", c["all"]),
        (f"... answered by the first stage alone ({c['answered']['n']}/{n})", c["answered"]),
        (f"... fell through to the domain model ({c['fell_through']['n']}/{n})", c["fell_through"]),
        (f"cascade, one-line prompts ({c['short_answered']}/{c['short']['n']} answered by stage 1)", c["short"]),
    ]
    return [lat_row(label, values)[:-1] if values["n"] else [label, "0", "-", "-", "-", "-"] for label, values in rows]


def render(r: dict[str, Any], args: argparse.Namespace, wrk: str, elapsed: float) -> tuple[str, bool]:
    ip, p1, iso = r["inproc"], r["paired"], r["isolation"]
    ev, lag, vb = ip["evaluate"], ip["lag"], ip["versus_before"]
    cores = os.cpu_count() or 1
    rounds = iso["rounds"]
    nr = len(rounds)
    engine = ip["engine"]

    solo = r["one_stack"]
    # The targets read the one-stack pass (what one deployment adds); the two-stack comparison is
    # reported next to it (its interleaving of two whole stacks on 2 cores adds to both figures).
    added_p50 = solo["auto"]["p50"] - solo["explicit"]["p50"]
    added_p99 = solo["auto"]["p99"] - solo["explicit"]["p99"]
    ok_added = added_p50 <= TARGET_ADDED_P50_MS
    cpu_auto = solo["cpu_ms_per_req"]["auto"]
    cpu_per_wall = cpu_auto / solo["auto"]["p50"]
    ok_cpu = cpu_per_wall <= TARGET_CPU_PER_WALL
    cpu_added = cpu_auto - solo["cpu_ms_per_req"]["explicit"]
    two_added_p50 = p1["miss"]["semantic"]["p50"] - p1["miss"]["keyword"]["p50"]
    two_added_p99 = p1["miss"]["semantic"]["p99"] - p1["miss"]["keyword"]["p99"]

    # ---- part 1
    def lat_row(label: str, s: dict[str, float], cpu: str = "-") -> list[str]:
        return [label, f"{s['n']:,}", f2(s["p50"]), f2(s["p90"]), f2(s["p99"]), f2(s["max"]), cpu]

    cpu = p1["cpu_ms_per_req"]
    t1 = table(
        ["through Envoy + Quorum, c1", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "Quorum CPU ms/req"],
        [
            lat_row("keyword-only decisions", p1["miss"]["keyword"], f2(cpu["keyword"])),
            lat_row("domain decisions, distinct prompts", p1["miss"]["semantic"], f2(cpu["semantic"])),
            lat_row("keyword-only decisions (second pass)", p1["hit"]["keyword"]),
            lat_row("domain decisions, same prompts again (cache hits)", p1["hit"]["semantic"]),
            lat_row("one stack: `quorum/auto`, domain decisions, distinct prompts", solo["auto"], f2(cpu_auto)),
            lat_row(
                "one stack: the same bodies naming the model (no signal)",
                solo["explicit"],
                f2(solo["cpu_ms_per_req"]["explicit"]),
            ),
        ],
    )
    t1d = table(
        ["added by embedding-based signals", "p50 ms", "p99 ms"],
        [
            ["one stack: difference of the percentiles (auto - explicit)", f2(added_p50), f2(added_p99)],
            ["one stack: percentiles of the per-prompt differences", f2(solo["diff"]["p50"]), f2(solo["diff"]["p99"])],
            [
                "two stacks: difference of the percentiles (semantic - keyword), cache misses",
                f2(two_added_p50),
                f2(two_added_p99),
            ],
            [
                "two stacks: percentiles of the per-prompt differences, cache misses",
                f2(p1["diff"]["p50"]),
                f2(p1["diff"]["p99"]),
            ],
            [
                "difference of the percentiles, cache hits",
                f2(p1["hit"]["semantic"]["p50"] - p1["hit"]["keyword"]["p50"]),
                f2(p1["hit"]["semantic"]["p99"] - p1["hit"]["keyword"]["p99"]),
            ],
        ],
    )
    t1i = table(
        [
            "`SignalSet.evaluate` in-process (no gRPC, no Envoy, stacks not started)",
            "calls",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
        ],
        [
            lat_row("domain decisions, 256-token prompts, cache misses", ev["miss"])[:-1],
            lat_row("same prompts again: cache hits", ev["hit"])[:-1],
            lat_row("one-line prompts (~12 tokens), cache misses", ev["short"])[:-1],
            lat_row("keyword-only set, same 256-token prompts", ev["keyword"])[:-1],
            lat_row(f"one inference by {engine['model']} (what domains read), interleaved with:", vb["now"])[:-1],
            lat_row("one inference by all-MiniLM-L6-v2 at 256 tokens (domains before #13)", vb["before"])[:-1],
            *cascade_rows(ip["cascade"], lat_row),
        ],
    )

    # ---- part 2
    sc, kc = r["cold"]["semantic"], r["cold"]["keyword"]

    def cold_row(label: str, c: dict[str, float], steady: float, rss: float) -> list[str]:
        return [
            label,
            f2(c.get("listening_s", float("nan"))),
            f2(c["first_answer_s"]),
            f1(1e3 * c["first_latency_s"]),
            f1(steady),
            str(c["attempts"] - 1),
            f"{rss:.0f}",
        ]

    t2 = table(
        [
            "`quorum serve` start",
            "spawn → listening s",
            "spawn → first answered request s",
            "first request ms",
            "steady p50 ms",
            "requests refused before",
            "RSS MiB",
        ],
        [
            cold_row("keyword-only config", kc, p1["miss"]["keyword"]["p50"], r["rss"]["keyword"]),
            cold_row("semantic config", sc, p1["miss"]["semantic"]["p50"], r["rss"]["semantic"]),
        ],
    )
    t2b = table(
        ["semantic start-up, split in a child process (stacks not started)", "seconds"],
        [
            ["import numpy + onnxruntime + tokenizers", f2(ip["import_s"])],
            [
                "`build_runtime`: engine load (ONNX session) + one 256-token warm-up inference",
                f2(ip["build_runtime_s"]),
            ],
            [f"`prepare_runtime`: embed the {ip['prototype_phrases']} example phrases", f2(ip["prepare_s"])],
            [
                "the same in `quorum serve` (its log: *semantic signals ready in*)",
                f2(sc["prepare_logged_s"]) if "prepare_logged_s" in sc else "n/a",
            ],
        ],
    )

    # ---- part 3
    def m(key: str, attr: str) -> float:
        return med([getattr(res[key][0], attr) for res in rounds])

    def rounds_of(key: str, attr: str) -> str:
        return " (rounds: " + ", ".join(f2(getattr(res[key][0], attr)) for res in rounds) + ")" if nr > 1 else ""

    def probe_cells(key: str) -> list[str]:
        return [f2(m(key, "p50_ms")), f2(m(key, "p99_ms")), f2(m(key, "max_ms")), f"{m(key, 'rps'):,.0f}"]

    load_label = f"during the c{args.load_conns} semantic load"
    t3 = table(
        ["c1 probe (wrk)", "window", "p50 ms", "p99 ms", "max ms", "probe req/s"],
        [
            ["explicit model via Envoy + Quorum", "alone", *probe_cells("probe_quorum_alone")],
            ["explicit model via Envoy + Quorum", load_label, *probe_cells("probe_quorum_loaded")],
            [
                "explicit model via Envoy + Quorum",
                "next to the same inferences in another process",
                *probe_cells("probe_quorum_burner"),
            ],
            ["fake backend direct (control)", "alone", *probe_cells("probe_fake_alone")],
            ["fake backend direct (control)", load_label, *probe_cells("probe_fake_loaded")],
        ],
        align="llrrrr",
    )

    def load_row(label: str, key: str) -> list[str]:
        vals = [res[key] for res in rounds]
        w = [v.wrk for v in vals]
        cpu_ms = [1e3 * res["load_alone_cpu"].cpu["quorum"] / max(1, res["load_alone"].wrk.requests) for res in rounds]
        per_req = f"{med(cpu_ms):.1f}" if key == "load_alone" else "-"
        return [
            label,
            f"{med([x.rps for x in w]):,.1f}",
            f1(med([x.p50_ms for x in w])),
            f1(med([x.p99_ms for x in w])),
            per_req,
            f"{sum(x.non_2xx + x.socket_errors for x in w):,}",
            f"{sum(v.answers for v in vals):,}",
            f"{sum(v.mismatches for v in vals):,}",
        ]

    t3l = table(
        [
            f"semantic load (wrk -c{args.load_conns}, `quorum/auto`, distinct 256-token prompts)",
            "req/s",
            "p50 ms",
            "p99 ms",
            "Quorum CPU ms/req",
            "errors",
            "answers",
            f"not routed to `{EXPECTED_DECISION}`",
        ],
        [load_row("alone", "load_alone"), load_row("with the probes running", "load_with_probe")],
    )

    def cpu_cells(w: list[Window], probe: bool = True) -> list[str]:
        cells = [f"{med([x.pct(n) for x in w]):.0f}" for n in ("quorum", "envoy", "fake")]
        return [
            *cells,
            f"{med([x.pct('wrk') for x in w]):.0f}" if probe else "-",
            f"{med([x.other_pct for x in w]):.0f}",
        ]

    t3c = table(
        [
            "window",
            "Quorum CPU %",
            "Envoy %",
            "fake backend %",
            "probe wrk %",
            f"rest of the machine % (load wrk or burner, kernel; of {100 * cores})",
        ],
        [
            ["probe alone (via Quorum)", *cpu_cells([res["probe_quorum_alone"][1] for res in rounds])],
            ["semantic load alone", *cpu_cells([res["load_alone_cpu"] for res in rounds], probe=False)],
            ["probe via Quorum during the load", *cpu_cells([res["probe_quorum_loaded"][1] for res in rounds])],
            ["probe via Quorum next to the burner", *cpu_cells([res["probe_quorum_burner"][1] for res in rounds])],
            ["probe direct during the load", *cpu_cells([res["probe_fake_loaded"][1] for res in rounds])],
        ],
    )
    variants = {v["name"]: v for v in lag["variants"]}
    busy = variants["default"]
    t3lag = table(
        [
            "event loop of a process running `SignalSet.evaluate` (child process, 2 ms sleeps)",
            "ticks",
            "late p50 ms",
            "p99 ms",
            "max ms",
            "evaluations/s",
            "machine busy %",
        ],
        [
            ["idle, nothing else running", f"{lag['idle']['n']:,}", f2(lag["idle"]["p50"]), f2(lag["idle"]["p99"]),
             f2(lag["idle"]["max"]), "-", "-"],
            *[
                [
                    f"{lag['workers']} tasks evaluating distinct 256-token prompts, engine "
                    + ("as configured (default)" if v["name"] == "default" else f"with {v['name']}"),
                    f"{v['n']:,}", f2(v["p50"]), f2(v["p99"]), f2(v["max"]), f"{v['rate']:.0f}",
                    f"{v['machine_busy_pct']:.0f}",
                ]
                for v in lag["variants"]
            ],
        ],
    )  # fmt: skip

    # ---- verdicts
    infer_ms = ev["miss"]["p50"]
    alone_p50, loaded_p50 = m("probe_quorum_alone", "p50_ms"), m("probe_quorum_loaded", "p50_ms")
    burner_p50 = m("probe_quorum_burner", "p50_ms")
    alone_p99, loaded_p99 = m("probe_quorum_alone", "p99_ms"), m("probe_quorum_loaded", "p99_ms")
    burner_p99 = m("probe_quorum_burner", "p99_ms")
    loaded_rps = m("probe_quorum_loaded", "rps")
    lag_ok = busy["p99"] < infer_ms / 2
    probe_ok = loaded_p50 < infer_ms and loaded_rps > 1e3 / infer_ms
    targets = table(
        ["target / check", "measured", "result"],
        [
            [
                f"added p50 with embedding-based signals, 256-token prompts, c1 ≤ {TARGET_ADDED_P50_MS:g} ms",
                f"{added_p50:.2f} ms (p99 {added_p99:+.2f} ms)",
                "PASS" if ok_added else "FAIL",
            ],
            [
                f"Quorum's CPU per semantic request ≤ {TARGET_CPU_PER_WALL:g}x its wall time (p50)",
                f"{cpu_auto:.2f} ms CPU for {solo['auto']['p50']:.2f} ms: {cpu_per_wall:.2f}x "
                f"(the embedding's share: {cpu_added:.2f} ms CPU for {added_p50:.2f} ms added, "
                f"{cpu_added / added_p50 if added_p50 > 0 else float('inf'):.2f}x)",
                "PASS" if ok_cpu else "FAIL",
            ],
            [
                "check: the event loop is not held for an inference (in-process lateness p99 < half an inference)",
                f"p99 {busy['p99']:.2f} ms, max {busy['max']:.2f} ms vs inference p50 {infer_ms:.1f} ms",
                "PASS" if lag_ok else "FAIL",
            ],
            [
                "check: during the semantic load, explicit-model requests are not queued behind inferences "
                "(probe p50 < one inference and probe req/s > inferences/s one at a time)",
                f"p50 {loaded_p50:.2f} ms (alone {alone_p50:.2f}), {loaded_rps:,.0f} req/s vs {infer_ms:.1f} ms "
                f"= {1e3 / infer_ms:.0f}/s",
                "PASS" if probe_ok else "FAIL",
            ],
        ],
        align="lrl",
    )

    la_w = [res["load_alone"].wrk for res in rounds]
    load_rps = med([w.rps for w in la_w])
    q_alone_cpu = med([res["load_alone_cpu"].pct("quorum") for res in rounds])
    burn_rate = med([res["burner_rate"] for res in rounds])
    lw = [res["load_with_probe"].wrk for res in rounds]
    refs = r["reference_ms"]
    quarters = ", ".join(f"{s_:.1f}/{k_:.1f}" for s_, k_ in p1["quarters"])
    others = [
        ("in-process timings", ip["miss_cpu"]["other_pct"]),
        ("part 1", p1["other_pct"]),
        *[(f"probe alone, round {n}", res["probe_quorum_alone"][1].other_pct) for n, res in enumerate(rounds, 1)],
    ]
    autogroup = r["autogroup"]
    one, niced = variants.get("1 intra-op thread"), variants.get("intra-op threads at nice +10")
    notes = [
        f"- **Everything shares {cores} cores**, and not only with this benchmark: other jobs may run on this VM, "
        "and the VM itself runs faster or slower with its host's load (no steal time is reported, but a fixed "
        "loop's duration varies). CPU used by processes that are not part of the benchmark (plus the kernel), "
        "measured where nothing else of ours was running: "
        + ", ".join(f"{k} {v:.0f}%" for k, v in others)
        + f" (of {100 * cores}%). A fixed single-core Python loop took {min(refs.values()):.1f}-"
        f"{max(refs.values()):.1f} ms at the run's checkpoints ("
        + ", ".join(f"{k} {v:.1f}" for k, v in refs.items())
        + "). One inference uses "
        f"{engine['threads']} onnxruntime intra-op threads (the default: the CPU count, at most 4; they spin "
        "within an inference and stop at its end), "
        "so it is the first thing to slow down when anything else runs. Compare rows of one run (interleaved or "
        "back to back), not runs.",
        f"- **Added latency** is essentially one embedding: in-process `SignalSet.evaluate` takes "
        f"{ev['miss']['p50']:.1f} ms p50 ({ev['miss']['p99']:.1f} ms p99), and through Envoy, on one stack, a "
        f"`quorum/auto` request is {added_p50:.1f} ms slower at p50 than the same body naming its model "
        f"(per-prompt differences: p50 {solo['diff']['p50']:.1f} ms, p99 {solo['diff']['p99']:.1f} ms). That is the "
        "target's figure: what one deployment adds for an embedding-based decision. The two-stack comparison "
        f"(semantic vs keyword-only stack, requests alternating between them) gives {two_added_p50:.1f} ms "
        f"(per-prompt p50 {p1['diff']['p50']:.1f} ms; medians semantic/keyword by quarter of the run: {quarters} "
        f"ms; Quorum's CPU per semantic request {cpu['semantic']:.1f} ms there, {cpu_auto:.1f} ms on one stack): "
        "there each semantic request follows one through the other stack's Envoy, Quorum and backend, which "
        "on a busier host has made it up to 1.7 ms more than the one-stack figure (5.0 vs 3.3 ms on 2026-12-07, "
        "when Quorum's own processing histogram still said 3.4 ms per semantic request). "
        f"On one stack Quorum spends {cpu_auto:.1f} ms of CPU per semantic request vs "
        f"{solo['cpu_ms_per_req']['explicit']:.2f} ms per explicit one: {cpu_per_wall:.1f}x the semantic request's "
        f"p50 wall time; the embedding's share, {cpu_added:.1f} ms, is about 2x the latency it adds, because both "
        "intra-op threads work through the whole inference (they spin between its operators, not after it). "
        "A cache hit costs "
        f"{ev['hit']['p50'] * 1e3:.0f} µs in-process and is lost in the noise through Envoy; a one-line prompt "
        f"embeds in {ev['short']['p50']:.1f} ms. Interleaved on the same prompts in the same process, one "
        f"inference of the domain model costs {vb['ratio_p50']:.2f}x one of all-MiniLM-L6-v2 at 256 tokens (what "
        f"domains ran before issue #13): {vb['now']['p50']:.1f} vs {vb['before']['p50']:.1f} ms p50 here "
        f"(CPU/wall {vb['cpu_per_wall']['now']:.2f} vs {vb['cpu_per_wall']['before']:.2f}).",
        f"- **Cold start**: the semantic `quorum serve` answered its first request {sc['first_answer_s']:.2f} s after "
        f"it was spawned, vs {kc['first_answer_s']:.2f} s for the keyword-only one. In the child process the "
        f"semantic part took {ip['import_s']:.2f} s of imports, {ip['build_runtime_s']:.2f} s of engine load with "
        f"its warm-up inference and {ip['prepare_s']:.2f} s to embed the example phrases; the rest of the "
        "difference is importing the semantic modules in a fresh process. Quorum listens only once all that is "
        "done (Envoy refuses requests, fail closed, until then), so the first request finds everything ready: it "
        f"took {1e3 * sc['first_latency_s']:.0f} ms (new gRPC connection from Envoy, empty cache) vs a steady-state "
        f"p50 of {p1['miss']['semantic']['p50']:.1f} ms. RSS after part 1: {r['rss']['semantic']:.0f} MiB vs "
        f"{r['rss']['keyword']:.0f} MiB.",
        f"- **Semantic throughput**: at c{args.load_conns} the semantic stack serves {load_rps:.0f} req/s "
        f"(p50 {med([w.p50_ms for w in la_w]):.0f} ms: requests queue for the single inference worker) with Quorum "
        f"at {q_alone_cpu:.0f}% CPU of the {100 * cores}% there is: the embeddings alone saturate the machine; with "
        f"the probes running next to it, {med([w.rps for w in lw]):.0f} req/s.",
        f"- **Isolation**: the explicit-model probe through Envoy + Quorum had p50 {alone_p50:.2f} ms alone and "
        f"{loaded_p50:.2f} ms during the semantic load{rounds_of('probe_quorum_loaded', 'p50_ms')}, p99 "
        f"{alone_p99:.2f} and {loaded_p99:.2f} ms{rounds_of('probe_quorum_loaded', 'p99_ms')}, and made "
        f"{loaded_rps:,.0f} req/s during the load. Had the inference run on Quorum's event loop, every probe would "
        f"wait for the rest of a {infer_ms:.0f} ms inference (one is running nearly all the time at this load), so "
        f"its p50 would exceed that and it could not pass {1e3 / infer_ms:.0f} req/s. "
        + (
            "So the loop is not blocked: what the probe pays is CPU contention on a 3-process path (Envoy, Quorum, "
            "fake backend) with the inference threads. "
            if probe_ok
            else "**These numbers do not rule out that the probe waits behind inferences.** "
        )
        + (
            "That contention hurts the tail much more when the inference runs inside Quorum than when the same "
            "work runs in another process"
            if loaded_p99 > 1.5 * burner_p99
            else "The same work in another process costs the probe about as much"
        )
        + f": next to the burner ({burn_rate:.0f} embeddings/s) the probe had p50 {burner_p50:.2f} ms / p99 "
        f"{burner_p99:.2f} ms. "
        + (
            "With autogroup scheduling on (`/proc/sys/kernel/sched_autogroup_enabled` = 1 here; a container's "
            "cgroup CPU limit does the same) each `quorum serve` gets one share of the CPU for all its threads, so "
            "its event loop competes with its own intra-op threads for it. "
            if autogroup == "1"
            else ""
        )
        + f"In-process (child process) with 8 evaluations in flight the loop was late by {busy['p50']:.2f} ms p50 / "
        f"{busy['p99']:.2f} ms p99 / {busy['max']:.2f} ms max (idle: {lag['idle']['p50']:.2f} / "
        f"{lag['idle']['p99']:.2f} / {lag['idle']['max']:.2f} ms): scheduling delay and the GIL held while "
        + ("tokenising (see below), never a whole inference" if lag_ok else "tokenising (see below)")
        + (
            f"; with one intra-op thread: p99 {one['p99']:.2f} ms at {one['rate']:.0f} evaluations/s, with the "
            f"intra-op threads at nice +10: p99 {niced['p99']:.2f} ms at {niced['rate']:.0f}/s (default: "
            f"{busy['rate']:.0f}/s)."
            if one and niced
            else "."
        ),
        *r["log_notes"],
    ]
    gil = ip["gil"]
    hot = [
        "- `LocalEmbeddingEngine._infer` (→ `self._encode(text)`): `tokenizers.Tokenizer.encode` holds "
        f"the GIL: a pure-Python thread kept {gil['encode']:.0%} of its pace while another thread encoded one of "
        f"these prompts in a loop ({gil['encode_ms']:.2f} ms each), about what it keeps next to pure-Python work "
        f"({gil['python']:.0%}); next to `encode_batch([text])` it kept {gil['encode_batch']:.0%} (that call "
        f"releases the GIL, but took {gil['batch_ms']:.2f} ms here). So each semantic request can stall the event "
        "loop for its tokenisation; onnxruntime's `run` (next line) does release the GIL.",
        "- `LocalEmbeddingEngine`: the intra-op thread count defaults to every core (at most 4; "
        f"{engine['threads']} here; `routing.embedding.threads` sets it), spinning within a run only, "
        "so on a small sidecar an "
        "inference still competes with Envoy and with Quorum's own event loop for every core while it runs. "
        "The in-process variants above show what fewer threads or a lower priority would buy: "
        + (
            f"1 intra-op thread: event-loop lateness p99 {one['p99']:.2f} ms at {one['rate']:.0f} evaluations/s; "
            f"the threads at nice +10 (set on the executor thread before `load()`, the pool threads inherit it): "
            f"p99 {niced['p99']:.2f} ms at {niced['rate']:.0f}/s; default: p99 {busy['p99']:.2f} ms at "
            f"{busy['rate']:.0f}/s."
            if one and niced
            else "(not measured)."
        ),
        "- Routing computes signals one priority group at a time (`extproc.decisions.choose`): a `quorum/auto` "
        "request that a higher keyword decision settles does not wait for the embedding (the `lazy` section).",
    ]
    setup = (
        f"**Setup.** One machine, loopback only: **all processes share the same {cores} cores** (wrk, this script's "
        "Python client, Envoy, the fake backend, one or two `quorum serve`). Two stacks, each a fake OpenAI "
        "backend + Envoy `--concurrency 1` (started by `extproc.dev.stack.Stack`) + `quorum serve` with one "
        "worker: *keyword* has three decisions on keyword signals; *semantic* has the same three decisions (same "
        "names and models) on four domain signals (one only competes), all reading one embedding of the "
        f"last user message from the local engine ({engine['model']}, {engine['precision']}, onnxruntime "
        f"{package_version('onnxruntime')}, {engine['threads']} intra-op threads, cache 4,096 entries). "
        "Requests are generated English patient-case questions of "
        f"{ip['chars']['min']:,}-{ip['chars']['max']:,} characters, {ip['tokens']['min']}-{ip['tokens']['max']} "
        f"tokens by the engine's tokenizer (the model sees the first {ip['tokens']['model_sees']}), every one "
        "different so the embedding cache does not answer; both stacks route them to decision "
        f"`{EXPECTED_DECISION}` (checked on every answer). *Added latency*: the same prompts to both stacks, "
        "alternating which goes first, c1 keep-alive http.client; cache hits are the same prompts again. "
        "*One stack* (the targets' figures; the keyword stack stopped): as many new distinct prompts, each sent "
        f'to `quorum/auto` and as the same body with `"model": "{PROBE_MODEL}"` (explicit: no signal), alternating '
        "which goes first; Quorum's CPU per explicit request measured first in a pass of its own. "
        "*Isolation*: on the semantic stack, wrk `-t1 -c"
        f"{args.load_conns}` sends distinct prompts to `quorum/auto` (a Lua script inserts a salt and a counter) "
        f'while a wrk `-c1` probe sends `"model": "{PROBE_MODEL}"` (explicit: no signal is evaluated) for '
        f"{args.duration} s: alone, during the load, and next to a *burner* (a separate process embedding prompts "
        "back to back with the same engine: the same kind of CPU pressure, outside Quorum), through Envoy + Quorum "
        "and, as a control, straight at the fake backend; "
        f"{nr} round{'s' if nr > 1 else ''} (alternating the order), medians shown. *CPU %*: "
        "utime+stime from /proc over the window, 100 = one core. Latencies: the client's own clock "
        "(http.client) or wrk's histogram."
    )
    quiet = ", ".join(
        f"{k} {v:.0f} s" if v >= 0 else f"{k} gave up after {-v:.0f} s" for k, v in r["quiet"].items() if v
    )
    run_line = (
        f"{p1['miss']['semantic']['n']} paired prompts at c1; {nr} isolation round(s), {args.duration} s per "
        f"window; whole run {elapsed:.0f} s" + (f"; waited for other jobs to finish before {quiet}" if quiet else "")
    )
    parts = [
        "## Semantic signals: added latency, cold start, other requests under embedding load",
        environment_lines(
            find_envoy(),
            {
                "wrk": _wrk_version(wrk),
                "onnxruntime / tokenizers": f"{package_version('onnxruntime')} / {package_version('tokenizers')}",
                "run": run_line,
            },
        ),
        setup,
        "### Targets",
        targets,
        "### 1. Added routing latency, 256-token prompts, c1",
        t1,
        t1d,
        t1i,
        "### 2. Cold start",
        t2,
        t2b,
        "### 3. Non-semantic requests while other requests are embedded",
        t3,
        t3l,
        t3c,
        t3lag,
        "### Reading the numbers",
        "\n".join(notes),
        "### Hot spots (not changed here)",
        "\n".join(hot),
    ]
    return "\n\n".join(parts) + "\n", ok_added and ok_cpu


# ---------------------------------------------------------------- main


def measure(args: argparse.Namespace, wrk: str, workdir: Path) -> dict[str, Any]:
    rng = random.Random(20261122)
    n = args.prompts
    warmup = [make_prompt(rng, f"w{i}") for i in range(10)]
    candidates = [make_prompt(rng, f"p{i}") for i in range(n)]
    load_prompts = [make_prompt(rng, ID_MARKER) for _ in range(300)]
    (workdir / "load-bodies.txt").write_bytes(b"\n".join(chat(AUTO_MODEL, p) for p in load_prompts) + b"\n")
    configs = {
        "keyword": write_config(workdir / "keyword.yaml", KEYWORD_ROUTING),
        "semantic": write_config(workdir / "semantic.yaml", SEMANTIC_ROUTING + embedding_settings(args)),
    }

    print(f"in-process timings in a child process ({n} prompts) ...", file=sys.stderr, flush=True)
    spec = {
        "semantic_config": str(configs["semantic"]),
        "keyword_config": str(configs["keyword"]),
        "warmup_prompts": warmup,
        "prompts": candidates,
        "load_prompts": load_prompts[:50],
        "lag_seconds": args.lag_seconds,
        "lag_workers": 8,
    }
    wait_quiet("the in-process part", args.quiet_wait)
    reference = {"start": reference_ms()}
    inproc = run_child(workdir, spec, timeout=120)
    reference["after the in-process part"] = reference_ms()
    prompts = [p for p, d in zip(candidates, inproc["decisions"], strict=True) if d == EXPECTED_DECISION]
    dropped = len(candidates) - len(prompts)
    print(
        f"  evaluate p50 {inproc['evaluate']['miss']['p50']:.1f} ms (miss), {inproc['evaluate']['hit']['p50']:.3f} ms "
        f"(hit); {dropped} prompt(s) not routed to {EXPECTED_DECISION} dropped",
        file=sys.stderr,
        flush=True,
    )

    targets = {name: Target(name, path, workdir / name) for name, path in configs.items()}
    try:
        print("starting two stacks (fake backend + Envoy), then each quorum serve, timed ...", file=sys.stderr)
        for t in targets.values():
            t.stack.start()
        cold_prompt = make_prompt(rng, "cold")
        for name in ("keyword", "semantic"):
            wait_quiet(f"the {name} cold start", args.quiet_wait)
            targets[name].start_quorum(chat(AUTO_MODEL, cold_prompt))
            c = targets[name].cold
            print(
                f"  {name}: first answer {c['first_answer_s']:.2f} s after spawn "
                f"(listening at {c.get('listening_s', float('nan')):.2f} s), "
                f"first request {1e3 * c['first_latency_s']:.0f} ms",
                file=sys.stderr,
                flush=True,
            )
        print(f"added latency: {len(prompts)} prompts to each stack at c1 ...", file=sys.stderr, flush=True)
        wait_quiet("part 1", args.quiet_wait)
        reference["before part 1"] = reference_ms()
        pair = paired(targets["semantic"], targets["keyword"], prompts, warmup)
        reference["after part 1"] = reference_ms()
        print(
            f"  p50 semantic {pair['miss']['semantic']['p50']:.2f} ms, keyword {pair['miss']['keyword']['p50']:.2f} ms",
            file=sys.stderr,
            flush=True,
        )
        rss = {name: rss_mib(t.pids()["quorum"]) for name, t in targets.items()}
        targets["keyword"].stop()  # idle from here on; its processes would only add noise
        print(f"added latency on one stack: {len(prompts)} more prompts, auto vs explicit ...", file=sys.stderr)
        wait_quiet("part 1b", args.quiet_wait)
        one = same_stack(targets["semantic"], [make_prompt(rng, f"one-{i}") for i in range(len(prompts))])
        print(f"  added p50 {one['diff']['p50']:.2f} ms", file=sys.stderr, flush=True)
        print(
            f"isolation: {args.rounds} round(s), c{args.load_conns} semantic load + c1 probes, "
            f"{args.duration} s windows ...",
            file=sys.stderr,
            flush=True,
        )
        iso = isolation(wrk, targets["semantic"], workdir, args)
        quorum = targets["semantic"].quorum
        if quorum is None or quorum.poll() is not None:
            raise BenchError("the semantic quorum serve exited during the run")
        for n, res in enumerate(iso["rounds"], 1):
            reference[f"after isolation round {n}"] = res["reference_ms"]
        return {
            "reference_ms": reference,
            "quiet": dict(QUIET),
            "inproc": inproc,
            "paired": pair,
            "one_stack": one,
            "dropped": dropped,
            "cold": {name: t.cold for name, t in targets.items()},
            "rss": rss,
            "isolation": iso,
            "autogroup": Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
            if Path("/proc/sys/kernel/sched_autogroup_enabled").exists()
            else "n/a",
        }
    finally:
        for t in targets.values():
            t.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", help="Markdown file whose `semantic` section is replaced with the report")
    parser.add_argument("--quick", action="store_true", help="smoke run, about 1 min")
    parser.add_argument("--prompts", type=int, help="distinct prompts for the c1 comparison (default 300, quick 100)")
    parser.add_argument("--duration", type=int, help="seconds per isolation window (default 6, quick 3)")
    parser.add_argument("--rounds", type=int, help="isolation rounds (default 2, quick 1)")
    parser.add_argument("--threads", type=int, help="routing.embedding.threads of the semantic stack (default: unset)")
    parser.add_argument("--load-conns", type=int, default=8, help="semantic load connections (default %(default)s)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each part, wait up to this many s for other jobs on the machine to finish (default 10, quick 3)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory with all logs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target fails")
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--burner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.prompts = args.prompts or (100 if quick else 300)
    args.duration = args.duration or (3 if quick else 6)
    args.rounds = args.rounds or (1 if quick else 2)
    args.lag_seconds = 2.0 if quick else 3.0
    if args.quiet_wait is None:
        args.quiet_wait = 3.0 if quick else 10.0
    if args.prompts < 10 or args.duration < 1 or args.rounds < 1 or args.load_conns < 1:
        parser.error("--prompts >= 10, --duration, --rounds and --load-conns >= 1")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.burner:
        return burner_main()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        wrk = ensure_wrk()
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="quorum-bench-semantic-"))
    try:
        results = measured(lambda: measure(args, wrk, workdir), workdir)
    finally:
        for proc, own_session in _CHILDREN:
            _stop(proc, group=own_session)
    if isinstance(results, int):
        return results
    results["log_notes"] = scan_logs(workdir, "the fake backends, either Quorum or either Envoy")
    if args.keep_logs:
        print(f"logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    report, ok = render(results, args, wrk, time.monotonic() - started)
    print(report)
    if args.output:
        write_section(args.output, SECTION, report)
        print(f"wrote the `{SECTION}` section of {args.output}", file=sys.stderr)
    if not ok:
        print("the acceptance target FAILs (see the report)", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
