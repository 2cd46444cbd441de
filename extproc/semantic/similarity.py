"""Scoring helpers over L2-normalised embeddings (as every EmbeddingEngine returns them).

For unit vectors the cosine similarity is the dot product, so scoring a request against a bank
of n example phrases is one [n, d] @ [d] product.

The prototype score (vLLM Semantic Router's embedding signal, `best_weight`/`top_m`)::

    score = best_weight * max(s) + (1 - best_weight) * mean(top_k(s))

where s are the similarities of the request to the examples of one signal. The best match
rewards a close paraphrase of any single example; the mean of the k best keeps one lucky
example from deciding alone, so a request near several examples outranks one that brushes a
single example equally closely. best_weight=1 is plain max; best_weight=0 is the top-k mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["NearestLabel", "cosine_scores", "l2_normalize", "label_scores", "nearest_label", "prototype_score"]


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows (or one vector) scaled to unit length, as float32; zero vectors stay zero."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.maximum(norms, eps)


def cosine_scores(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine similarities of normalised `query` ([d] -> [n], or [m, d] -> [m, n]) to the rows
    of normalised `candidates` ([n, d])."""
    candidates = np.asarray(candidates, dtype=np.float32)
    query = np.asarray(query, dtype=np.float32)
    if candidates.ndim != 2:
        raise ValueError(f"candidates must be a [n, d] matrix, got shape {candidates.shape}")
    if query.shape[-1] != candidates.shape[1]:
        raise ValueError(f"dimension mismatch: query {query.shape[-1]}, candidates {candidates.shape[1]}")
    return query @ candidates.T


def prototype_score(scores: np.ndarray, top_k: int = 3, best_weight: float = 0.75) -> float:
    """best_weight * max(scores) + (1 - best_weight) * mean of the top_k scores (see module doc).

    top_k larger than the number of scores uses them all. Raises ValueError on no scores.
    """
    values = np.asarray(scores, dtype=np.float32).ravel()
    if values.size == 0:
        raise ValueError("prototype_score needs at least one score")
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    if not 0.0 <= best_weight <= 1.0:
        raise ValueError("best_weight must be within [0, 1]")
    k = min(top_k, values.size)
    top = np.partition(values, values.size - k)[values.size - k :]
    return float(best_weight * top.max() + (1.0 - best_weight) * top.mean())


def label_scores(
    query: np.ndarray, banks: Mapping[str, np.ndarray], top_k: int = 3, best_weight: float = 0.75
) -> dict[str, float]:
    """The prototype score of normalised `query` against each label's bank of example embeddings."""
    return {label: prototype_score(cosine_scores(query, bank), top_k, best_weight) for label, bank in banks.items()}


@dataclass(frozen=True)
class NearestLabel:
    label: str
    score: float
    runner_up: str | None  # None when there was only one label
    runner_up_score: float | None
    margin: float  # score - runner_up_score (inf with a single label)

    def confident(self, min_score: float = float("-inf"), min_margin: float = 0.0) -> bool:
        """The label clears `min_score` and beats the runner-up by at least `min_margin`."""
        return self.score >= min_score and self.margin >= min_margin


def nearest_label(scores: Mapping[str, float]) -> NearestLabel | None:
    """The best-scoring label and its margin over the runner-up; None for no labels.

    Ties go to the label that sorts first, so the answer does not depend on dict order.
    """
    if not scores:
        return None
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    label, score = ranked[0]
    if len(ranked) == 1:
        return NearestLabel(label, float(score), None, None, float("inf"))
    runner_up, runner_up_score = ranked[1]
    return NearestLabel(label, float(score), runner_up, float(runner_up_score), float(score - runner_up_score))
