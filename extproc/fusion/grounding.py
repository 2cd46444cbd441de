"""Grounding-aware panels: score each panel answer before the judge, leave ungrounded ones out.

The reference is the request's own context (system, developer and tool messages: instructions,
retrieved documents, tool results) when it has some, else the other panel answers (cross-model
agreement: an answer the rest of the panel does not support scores low). Scores are cosine
similarities with the embedding engine when one is loaded, else lexical support: the share of an
answer's content words (and numbers) found in the context, or, against the panel, the mean Dice
overlap with the other answers. No model is called. Answers below `min_score` are dropped from the
judge and synthesis prompts, but never all of them: the best one always stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from extproc.config import GroundingConfig
from extproc.modeltypes import Completion
from extproc.openai import message_text

CONTEXT_ROLES = frozenset({"system", "developer", "tool"})
_WORD = re.compile(r"[^\W_]+")
_STOPWORDS = """
the and for are but not you your with this that from have has had was were will would can could
should there their they them its it's his her she him our ours who what when where which why how
all any some one two out into over than then also just only very more most such been being does
did about because while these those here
"""
_STOP = frozenset(_STOPWORDS.split())


def context_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return "\n".join(message_text(m) for m in messages if isinstance(m, dict) and m.get("role") in CONTEXT_ROLES)


def content_words(text: str) -> set[str]:
    return {w for w in (m.casefold() for m in _WORD.findall(text)) if (len(w) > 2 or w.isdigit()) and w not in _STOP}


@dataclass
class Grounding:
    reference: str  # "context" or "panel"
    method: str  # "embedding" or "lexical"
    scores: list[float]  # per answer, in the given order
    kept: list[Completion]
    dropped: list[Completion]


async def _embedding_scores(texts: list[str], context: str | None, embedder: Any) -> list[float]:
    import numpy as np

    rows = np.asarray(await embedder.embed([*texts, context] if context else texts), dtype=np.float32)
    rows = rows / np.where((n := np.linalg.norm(rows, axis=1, keepdims=True)) == 0, 1, n)
    if context:
        return (rows[:-1] @ rows[-1]).clip(-1, 1).tolist()
    sims = rows @ rows.T
    count = len(texts) - 1
    return [float((sims[i].sum() - sims[i, i]) / count) for i in range(len(texts))]


def _lexical_scores(texts: list[str], context: str | None) -> list[float]:
    bags = [content_words(t) for t in texts]
    if context:
        reference = content_words(context)
        return [len(b & reference) / len(b) if b else 0.0 for b in bags]

    def dice(a: set[str], b: set[str]) -> float:
        return 2 * len(a & b) / (len(a) + len(b)) if a or b else 1.0

    return [sum(dice(a, b) for j, b in enumerate(bags) if j != i) / (len(bags) - 1) for i, a in enumerate(bags)]


async def ground(
    answers: list[Completion], body: dict[str, Any], config: GroundingConfig, embedder: Any | None
) -> Grounding | None:
    """Score and filter `answers`; None when there is nothing to compare against."""
    context = context_text(body).strip() if config.reference != "panel" else ""
    if not context and (config.reference == "context" or len(answers) < 2):
        return None
    use = embedder if config.similarity != "lexical" else None
    if config.similarity == "embedding" and use is None:
        raise RuntimeError("no embedding engine is loaded")
    texts = [a.content for a in answers]
    if use is not None:
        scores = await _embedding_scores(texts, context or None, use)
    else:
        scores = _lexical_scores(texts, context or None)
    best = max(range(len(answers)), key=lambda i: (scores[i], -i))
    keep = [scores[i] >= config.min_score or i == best for i in range(len(answers))]
    kept = [a for a, k in zip(answers, keep, strict=True) if k]
    dropped = [a for a, k in zip(answers, keep, strict=True) if not k]
    return Grounding("context" if context else "panel", "embedding" if use else "lexical", scores, kept, dropped)
