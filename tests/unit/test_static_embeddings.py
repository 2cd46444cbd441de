"""The static embedding model (wordllama-l2-supercat) and the domain cascade it can front.

The engine reads the token table and tokenizer that the `wordllama` wheel ships (installed with
--no-deps by `make install`), offline; the cascade lets it answer a domain request alone when it is
sure and hands everything else to the domain model (extproc.signals.semantic.CascadeProducer).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest

pytest.importorskip("tokenizers", reason="the static engine needs the semantic extra: pip install 'quorum[semantic]'")

from extproc.config import ConfigError, EmbeddingEngineConfig, parse_config
from extproc.decisions import select
from extproc.openai import ChatRequest, parse_chat_request
from extproc.runtime import build_runtime, make_engine, prepare_runtime, semantic_context
from extproc.semantic.build import MODELS, read_safetensors
from extproc.semantic.engine import LocalEmbeddingEngine, local_engine
from extproc.semantic.static import StaticEmbeddingEngine
from extproc.signals.semantic import CascadeProducer, SemanticContext
from extproc.telemetry.metrics import Metrics

STATIC = "wordllama-l2-supercat"
DOMAINS = Path(__file__).resolve().parents[2] / "tests" / "data" / "domains"


@pytest.fixture(scope="module")
def static() -> StaticEmbeddingEngine:
    engine = local_engine(STATIC)
    assert isinstance(engine, StaticEmbeddingEngine)
    engine.load()
    return engine


def test_static_engine_loads_offline_from_the_installed_wheel_without_importing_wordllama() -> None:
    """A fresh interpreter with sockets disabled: the table loads and embeds, and wordllama's own
    package (whose __init__ needs pydantic, requests, toml) is never imported."""
    code = """
import socket, sys
def no_network(*a, **k):
    raise OSError("network disabled in this test")
socket.socket.connect = no_network
socket.create_connection = no_network
from extproc.semantic.engine import local_engine
e = local_engine("wordllama-l2-supercat")
e.load()
v = e.infer_now(["How do I season a cast iron skillet?"])
print(v.shape[1], round(float((v[0] ** 2).sum()), 4), "wordllama" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["256", "1.0", "False"], out.stderr


def test_static_vectors_are_wordllamas_mean_pooling(static: StaticEmbeddingEngine) -> None:
    """Each vector is the L2-normalised mean of the table rows of the text's tokens (no special
    tokens), as wordllama pools; computed here independently from the installed files."""
    from tokenizers import Tokenizer

    spec = MODELS[STATIC]
    folder = Path(importlib.util.find_spec("wordllama").origin).parent  # type: ignore[arg-type, union-attr]
    table = read_safetensors(folder / spec.weights_file)["embedding.weight"]
    tokenizer = Tokenizer.from_file(str(folder / spec.tokenizer_file))
    texts = ["Can police search my car without a warrant?", "Grüße aus München", "x"]
    for text, vector in zip(texts, static.infer_now(texts), strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        want = table[ids].mean(axis=0)
        assert np.allclose(vector, want / np.linalg.norm(want), atol=1e-6), text


def test_static_similarity_ranks_paraphrases_above_unrelated_text(static: StaticEmbeddingEngine) -> None:
    a, b, c = static.infer_now(
        ["How long should I boil an egg?", "What is the boiling time for eggs?", "File a patent for my invention"]
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_static_engine_reads_only_max_tokens(static: StaticEmbeddingEngine) -> None:
    short = StaticEmbeddingEngine(STATIC, max_tokens=8, cache_size=0)
    head = "the cat sat on the mat and then"
    long = head + " slept for hours while the rain fell on the roof" * 500
    short.load()
    assert len(short._encode(head).ids) == 8
    cut = short._tokenizer.decode(short._encode(long).ids)
    assert np.allclose(short.infer_now([long])[0], short.infer_now([cut])[0], atol=1e-5)
    assert len(static._encode(long).ids) == static.max_tokens == 256


async def test_static_embed_caches_and_survives_odd_text(static: StaticEmbeddingEngine) -> None:
    before = static.stats.computed
    first = await static.embed(["lone surrogate \ud800 here", ""])
    again = await static.embed(["lone surrogate \ud800 here"])
    assert first.shape == (2, 256) and np.allclose(first[0], again[0])
    assert static.stats.computed == before + 2 and not first[1].any()  # empty text: zero vector, no NaN
    with pytest.raises(TypeError):
        await static.embed("one str")  # type: ignore[arg-type]


def test_static_model_names_and_errors() -> None:
    with pytest.raises(ValueError, match="static table"):
        LocalEmbeddingEngine(STATIC)
    with pytest.raises(ValueError, match="max_tokens"):
        StaticEmbeddingEngine(STATIC, max_tokens=10_000)
    with pytest.raises(ValueError, match="not a static"):
        StaticEmbeddingEngine("multilingual-e5-small")
    from extproc.semantic.build import main

    assert main(["--model", STATIC]) == 0  # nothing to build, and says so


# ---------------------------------------------------------------- config and routing


def config(embedding: dict[str, Any], examples: dict[str, list[str]]) -> Any:
    raw = {
        "providers": {
            "defaults": {"default_model": "general"},
            "models": [
                {"name": m, "base_url": f"http://127.0.0.1:{9100 + i}/v1"} for i, m in enumerate(["general", *examples])
            ],
        },
        "routing": {
            "embedding": embedding,
            "signals": {"domain": [{"name": n, "examples": e} for n, e in examples.items()]},
            "decisions": [
                {"name": n, "priority": 100, "rules": {"type": "domain", "name": n}, "modelRefs": [{"model": n}]}
                for n in examples
            ],
        },
    }
    return parse_config(json.dumps(raw))


def chat(text: str) -> ChatRequest:
    body = {"model": "quorum/auto", "messages": [{"role": "user", "content": text}]}
    return parse_chat_request(json.dumps(body).encode())


def examples() -> dict[str, list[str]]:
    return yaml.safe_load((DOMAINS / "examples.yaml").read_text(encoding="utf-8"))


async def routed(runtime: Any, text: str) -> str | None:
    match = select(runtime.decisions, await runtime.signals.evaluate(chat(text), {}))
    return match.decision.name if match else None


def test_config_accepts_the_static_model_and_checks_the_first_stage() -> None:
    assert EmbeddingEngineConfig(model=STATIC, domain_model=STATIC).domain_engine_model == STATIC
    cfg = EmbeddingEngineConfig(domain_first_stage=STATIC)
    assert cfg.domain_first_stage_confidence == 0.7
    for bad in ({"domain_first_stage": "multilingual-e5-small"}, {"domain_first_stage": "nope"}):
        with pytest.raises(ConfigError, match="domain_first_stage"):
            config(bad, {"cooking": ["a recipe"]})
    with pytest.raises(ConfigError, match="domain_first_stage_confidence"):
        config({"domain_first_stage": STATIC, "domain_first_stage_confidence": 0}, {"cooking": ["a recipe"]})


async def test_a_config_with_the_static_domain_model_routes() -> None:
    runtime = build_runtime(config({"domain_model": STATIC}, examples()), environ={})
    await prepare_runtime(runtime)
    assert isinstance(runtime.semantic.domain_engine, StaticEmbeddingEngine)
    assert await routed(runtime, "What temperature should I roast a whole chicken at, and for how long?") == "cooking"
    assert await routed(runtime, "Is it legal for my landlord to keep my whole security deposit?") == "law"
    assert await routed(runtime, "Tell me a joke about penguins") is None


# ---------------------------------------------------------------- the cascade


@pytest.fixture(scope="module")
def cascade_context() -> Iterator[SemanticContext]:
    """The default domain model (e5) behind the static first stage, as `serve` builds them."""
    cfg = config({"domain_first_stage": STATIC}, examples())
    ctx = semantic_context(cfg, {}, {("domain", n) for n in examples()})
    assert isinstance(ctx.first_stage, StaticEmbeddingEngine) and ctx.first_stage_confidence == 0.7
    yield ctx
    ctx.domain_engine.close()
    ctx.executor.shutdown(wait=True)


async def cascade_runtime(ctx: SemanticContext, confidence: float = 0.7) -> tuple[Any, CascadeProducer]:
    ctx.first_stage_confidence = confidence
    runtime = build_runtime(config({"domain_first_stage": STATIC}, examples()), environ={}, semantic=ctx)
    await prepare_runtime(runtime)
    (producer,) = runtime.signals.producers
    assert isinstance(producer, CascadeProducer)
    return runtime, producer


async def test_cascade_first_stage_answers_when_sure_and_the_domain_model_never_runs(
    cascade_context: SemanticContext,
) -> None:
    runtime, producer = await cascade_runtime(cascade_context)
    e5 = cascade_context.domain_engine
    computed = e5.stats.computed + e5.stats.hits
    text = "How long should I knead bread dough, and how do I know when it has proofed enough?"
    assert await routed(runtime, text) == "cooking"
    assert (producer.answered, producer.fell_through) == (1, 0)
    assert e5.stats.computed + e5.stats.hits == computed, "the domain model embedded a request stage 1 answered"
    results = await runtime.signals.evaluate(chat(text), {})
    assert 0.7 <= results[("domain", "cooking")] <= 1.0  # stage 1's own probability


async def test_cascade_falls_through_on_off_topic_and_unsure_prompts(cascade_context: SemanticContext) -> None:
    runtime, producer = await cascade_runtime(cascade_context)
    e5 = cascade_context.domain_engine
    before = e5.stats.computed
    # Stage 1 never rejects: off-topic text is decided by the domain model (which sends it to the default).
    assert await routed(runtime, "Tell me a joke about penguins") is None
    assert (producer.answered, producer.fell_through) == (0, 1) and e5.stats.computed == before + 1
    # Above every confidence stage 1 can reach, everything falls through and routes as e5 alone does.
    runtime, producer = await cascade_runtime(cascade_context, confidence=1.0 + 1e-9)
    assert await routed(runtime, "Is it legal for my landlord to keep my whole security deposit?") == "law"
    assert (producer.answered, producer.fell_through) == (0, 1)


async def test_cascade_confidence_rises_with_accuracy_on_the_heldout_set(cascade_context: SemanticContext) -> None:
    """As for the domain model alone (test_semantic_signals): over the TEST split routed through
    the cascade, sorted by confidence into thirds, accuracy does not fall from one to the next."""
    runtime, producer = await cascade_runtime(cascade_context)
    data = yaml.safe_load((DOMAINS / "test.yaml").read_text(encoding="utf-8"))
    prompts = [(t["domain"], t["text"]) for t in data["on_topic"]] + [(None, t) for t in data["off_topic"]]
    routed_ok = []
    for want, text in prompts:
        results = await runtime.signals.evaluate(chat(text), {})
        matched = [(name, c) for (_, name), c in results.items() if c is not None]
        if matched:
            routed_ok.append((matched[0][1], matched[0][0] == want))
    routed_ok.sort()
    n = len(routed_ok)
    accuracies = [sum(ok for _, ok in routed_ok[i * n // 3 : (i + 1) * n // 3]) / (n // 3) for i in range(3)]
    assert accuracies == sorted(accuracies) and accuracies[0] < 1.0, accuracies
    assert producer.answered > 0 and producer.fell_through > 0


def test_cascade_is_off_by_default() -> None:
    cfg = config({}, {"cooking": ["a recipe"]})
    ctx = semantic_context(cfg, {}, {("domain", "cooking")})
    try:
        assert ctx.first_stage is None
    finally:
        ctx.domain_engine.close()
        ctx.executor.shutdown(wait=True)


def test_make_engine_builds_the_static_engine() -> None:
    engine = make_engine(EmbeddingEngineConfig(model=STATIC), {})
    assert isinstance(engine, StaticEmbeddingEngine) and engine.loaded
    assert asyncio.run(engine.embed(["hi"])).shape == (1, 256)


def test_default_first_stage_bar_is_the_lowest_as_precise_as_the_domain_model_on_dev() -> None:
    """domain_first_stage_confidence's default, chosen on dev.yaml only: of the bars 0.5-0.99, the
    lowest whose first-stage answers are at least as precise as the domain model's routed answers."""
    from extproc.semantic.background import background_texts
    from extproc.semantic.domains import DomainModel, domain_name_text

    shots = examples()
    data = yaml.safe_load((DOMAINS / "dev.yaml").read_text(encoding="utf-8"))
    texts = [t["text"] for t in data["on_topic"]] + data["off_topic"]
    wanted = [t["domain"] for t in data["on_topic"]] + [None] * len(data["off_topic"])

    def verdicts(model: str) -> list[Any]:
        engine = local_engine(model, cache_size=0)
        vectors = [engine.infer_now([*shots[n], domain_name_text(n)]) for n in shots]
        classifier = DomainModel(list(shots), list(shots.values()), vectors, engine.infer_now(list(background_texts())))
        return [classifier.classify(v) for v in engine.infer_now(texts)]

    def precision(pairs: list[tuple[str | None, Any]]) -> float:
        routed = [(want, v) for want, v in pairs if v.domain is not None]
        return sum(v.domain == want for want, v in routed) / len(routed)

    first, second = verdicts(STATIC), verdicts(EmbeddingEngineConfig().domain_engine_model)
    bar = precision(list(zip(wanted, second, strict=True)))
    ok = [
        tau
        for tau in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
        if precision([(w, v) for w, v in zip(wanted, first, strict=True) if v.confidence >= tau]) >= bar
    ]
    assert ok and ok[0] == EmbeddingEngineConfig().domain_first_stage_confidence, (ok, bar)


def test_signals_explain_names_the_cascade(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from extproc.cli import main

    demo = yaml.safe_load((DOMAINS.parents[2] / "config" / "demo.yaml").read_text(encoding="utf-8"))
    demo.setdefault("routing", {}).setdefault("embedding", {})["domain_first_stage"] = STATIC
    path = tmp_path / "cascade.yaml"
    path.write_text(yaml.safe_dump(demo), encoding="utf-8")
    assert main(["signals", "explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"cascade: {STATIC} classifies first" in out and "confidence >= 0.7" in out, out


async def test_cascade_stages_are_counted_in_prometheus(cascade_context: SemanticContext) -> None:
    runtime, producer = await cascade_runtime(cascade_context)
    metrics = Metrics()
    metrics.watch_cascades(runtime.signals.cascade_counts)
    assert await routed(runtime, "How long should I knead bread dough, and how do I know it has proofed?") == "cooking"
    assert await routed(runtime, "Tell me a joke about penguins") is None
    assert await routed(runtime, "Tell me a joke about giraffes") is None
    text = generate_latest(metrics.registry).decode()
    assert f'quorum_domain_cascade_total{{scope="{producer.scope}",stage="first_stage"}} 1.0' in text
    assert f'quorum_domain_cascade_total{{scope="{producer.scope}",stage="domain_model"}} 2.0' in text
