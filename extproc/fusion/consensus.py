"""Consensus early exit: when every pair of panel answers agrees, the judge has nothing to settle.

Agreement of two answers is the cosine of their embeddings (the local engine, when the runtime has
one) or, with no engine, an exact match after normalisation (case, whitespace, trailing
punctuation): 1.0 or 0.0. If all pairs reach the threshold, the most central answer (highest mean
agreement with the others, panel order on ties) is the reply and judge and synthesis are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from extproc.config import EarlyExitConfig
from extproc.modeltypes import Completion

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip().rstrip(".!").casefold()


@dataclass
class Consensus:
    method: str  # "embedding" or "exact"
    threshold: float
    pairs: list[dict[str, Any]]  # {"a": model, "b": model, "score": float}
    chosen: Completion | None  # the most central answer when every pair agrees, else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "threshold": self.threshold,
            "pairs": self.pairs,
            "reached": self.chosen is not None,
        }
        if self.chosen is not None:
            out["chosen"] = self.chosen.model
        return out


async def pairwise(texts: list[str], embedder: Any | None) -> list[list[float]]:
    """The symmetric agreement matrix of `texts` (diagonal 1.0)."""
    n = len(texts)
    if embedder is None:
        keys = [normalise(t) for t in texts]
        return [[1.0 if keys[i] == keys[j] else 0.0 for j in range(n)] for i in range(n)]
    import numpy as np

    vectors = np.asarray(await embedder.embed(texts), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1, norms)
    return (unit @ unit.T).clip(-1.0, 1.0).tolist()


async def consensus(answers: list[Completion], config: EarlyExitConfig, embedder: Any | None) -> Consensus:
    """Needs at least two answers: one answer agrees with nobody."""
    use = embedder if config.similarity != "exact" else None
    method = "embedding" if use is not None else "exact"
    matrix = await pairwise([a.content for a in answers], use)
    pairs = [
        {"a": answers[i].model, "b": answers[j].model, "score": round(float(matrix[i][j]), 4)}
        for i, j in combinations(range(len(answers)), 2)
    ]
    agreed = len(answers) >= 2 and all(
        matrix[i][j] >= config.consensus for i, j in combinations(range(len(answers)), 2)
    )
    chosen = None
    if agreed:
        centrality = [sum(row) - row[i] for i, row in enumerate(matrix)]
        chosen = answers[max(range(len(answers)), key=lambda i: (centrality[i], -i))]
    return Consensus(method, config.consensus, pairs, chosen)
