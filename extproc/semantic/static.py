"""Static token embeddings: a sentence vector is the mean of its tokens' vectors (no encoder).

`wordllama-l2-supercat` is WordLlama's `l2_supercat` table at 256 dimensions (the `wordllama` PyPI
package ships it in its wheel: `weights/l2_supercat_256.safetensors`, fp16 [32000, 256], and the
Llama-2 tokenizer as `tokenizers/l2_supercat_tokenizer_config.json`). This module reads those two
files directly, so neither wordllama's own dependencies (pydantic, requests, toml) nor a download
are needed, and pools the way wordllama does: the text is tokenised without special tokens, each
token's row is looked up, the rows are averaged, and the mean is L2-normalised.

An embedding is a tokenizer call plus a gather and a mean over a few hundred rows: ~0.05 ms for a
one-line prompt, ~0.3 ms at 256 tokens, far less than one transformer inference. So the
engine computes on the event loop (no thread, no onnxruntime pool), which is what makes it useful
as a first stage in front of multilingual-e5-small (see extproc.signals.semantic, the cascade).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from extproc.semantic.engine import CachingEmbeddingEngine, encode_beginning
from extproc.semantic.errors import EngineUnavailable

if TYPE_CHECKING:
    import numpy as np

__all__ = ["StaticEmbeddingEngine"]


class StaticEmbeddingEngine(CachingEmbeddingEngine):
    """A `source="static"` entry of `extproc.semantic.build.MODELS`, offline, on the calling thread.

    `max_tokens`: tokens averaged per text (default: the model's `default_max_tokens`); a longer
    text keeps its first tokens. The other LocalEmbeddingEngine arguments (threads, precision) mean
    nothing here and are not taken.
    """

    def __init__(self, model: str, max_tokens: int | None = None, cache_size: int = 4096) -> None:
        from extproc.semantic.build import model_spec

        super().__init__(cache_size)
        self.spec = model_spec(model)
        if self.spec.source != "static":
            raise ValueError(f"{model!r} is not a static embedding model")
        max_tokens = max_tokens or self.spec.default_max_tokens
        if not 1 <= max_tokens <= self.spec.max_positions:
            raise ValueError(f"max_tokens must be between 1 and {self.spec.max_positions}, got {max_tokens}")
        self.model = model
        self.max_tokens = max_tokens
        self.threads = 1
        self.load_seconds: float | None = None
        self._table: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return self.spec.dimensions

    @property
    def loaded(self) -> bool:
        return self._table is not None

    def load(self, warmup: bool = True) -> None:
        """Read the table and the tokenizer from the installed package (~0.1 s); idempotent."""
        from extproc.semantic.build import check_weights, read_safetensors, require_runtime, source_dir

        del warmup  # nothing to warm: no buffers to allocate
        with self._lock:
            if self._table is not None:
                return
            started = time.perf_counter()
            require_runtime(static=True)
            folder = source_dir(self.spec)
            check_weights(self.spec, folder)
            from tokenizers import Tokenizer

            # Kept in its stored fp16 (16 MB instead of 33); each lookup's rows are widened to float32.
            tensors = read_safetensors(folder / self.spec.weights_file, float32=False)
            table = tensors.get("embedding.weight")
            if table is None or table.ndim != 2 or table.shape[1] != self.spec.dimensions:
                raise EngineUnavailable(f"{folder / self.spec.weights_file} is not a {self.spec.name} table")
            tokenizer = Tokenizer.from_file(str(folder / self.spec.tokenizer_file))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.max_tokens)
            self._tokenizer = tokenizer
            self._table = table
            self.load_seconds = time.perf_counter() - started

    async def warmup(self) -> None:
        self.load()

    def infer_now(self, texts: Sequence[str]) -> np.ndarray:
        """Embed on the calling thread, bypassing the cache."""
        self.load()
        return self._infer(list(texts))

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        await self._cancel_tasks()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """As CachingEmbeddingEngine.embed, computed right here: no task, no thread, no single
        flight (nothing awaits, so no other caller can be computing the same text meanwhile)."""
        import numpy as np

        from extproc.semantic.engine import text_key

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one str")
        self.load()
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for i, text in enumerate(texts):
            key = text_key(text)
            row = self._pinned.get(key)
            if row is None:
                row = self._cache.get(key)
            if row is not None:
                self.stats.hits += 1
            else:
                row = self._infer([text])[0]
                row.setflags(write=False)
                self._cache.put(key, row)
                self.stats.computed += 1
                self.stats.batches += 1
            out[i] = row
        return out

    def _infer(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        last = self._table.shape[0] - 1
        for i, text in enumerate(texts):
            ids = np.asarray(self._encode(text).ids, dtype=np.int64)
            if ids.size:
                out[i] = self._table[np.clip(ids, 0, last)].astype(np.float32).mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _encode(self, text: str) -> Any:
        # The Rust tokenizer rejects lone surrogates (possible in JSON-decoded prompts).
        if not text.isascii():
            text = text.encode("utf-8", "replace").decode("utf-8")
        return encode_beginning(partial(self._tokenizer.encode, add_special_tokens=False), text, self.max_tokens)
