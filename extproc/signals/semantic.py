"""Signals that need more than string matching: embeddings, domains, complexity, language, PII, jailbreak.

The expensive part of each is a *feature* computed once per request by a producer, off the event
loop, and shared by every signal that reads it: the request's embedding (per text scope), its
language, the PII kinds it contains, the jailbreak pattern scan. Producers of one request run
concurrently; the signals themselves are cheap arithmetic over the features.

Scores over example phrases use the prototype score: best_weight * best similarity +
(1 - best_weight) * mean of the top_k similarities. The best match rewards a close paraphrase; the
mean of the top few keeps one lucky example from deciding alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from extproc.openai import ChatRequest
from extproc.semantic.similarity import prototype_score

if TYPE_CHECKING:
    import numpy as np

    from extproc.semantic.engine import EmbeddingEngine

# Texts shorter than this are scanned on the event loop: a thread hop would cost more than the scan.
INLINE_SCAN_CHARS = 4096

Features = dict[str, Any]


class SemanticContext:
    """What semantic signals share in one process: the embedding engine and the detector executor."""

    def __init__(self, engine: EmbeddingEngine | None, executor: Executor | None = None) -> None:
        self.engine = engine
        self.executor = executor

    async def run(self, func: Any, text: str) -> Any:
        if len(text) < INLINE_SCAN_CHARS:
            return func(text)
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, text)


# ---------------------------------------------------------------- producers


class EmbeddingProducer:
    def __init__(self, ctx: SemanticContext, scope: str) -> None:
        self.key = f"embedding:{scope}"
        self.ctx = ctx
        self.scope = scope

    async def produce(self, chat: ChatRequest) -> np.ndarray:
        assert self.ctx.engine is not None
        vectors = await self.ctx.engine.embed([chat.text(self.scope)])
        return vectors[0]


class DetectorProducer:
    """A synchronous detector over the scope's text (language, PII, jailbreak patterns)."""

    def __init__(self, ctx: SemanticContext, name: str, scope: str, detect: Any) -> None:
        self.key = f"{name}:{scope}"
        self.ctx = ctx
        self.scope = scope
        self.detect = detect

    async def produce(self, chat: ChatRequest) -> Any:
        return await self.ctx.run(self.detect, chat.text(self.scope))


# ---------------------------------------------------------------- signals


class EmbeddingMatch:
    def __init__(self, cfg: Any, ctx: SemanticContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.ctx = ctx
        self.producers = [EmbeddingProducer(ctx, cfg.scope)]
        self.matrix: np.ndarray | None = None

    async def prepare(self) -> None:
        assert self.ctx.engine is not None
        self.matrix = await self.ctx.engine.embed(list(self.cfg.candidates))

    def score(self, features: Features) -> float:
        assert self.matrix is not None, "prepare() was not awaited"
        similarities = self.matrix @ features[f"embedding:{self.cfg.scope}"]
        return prototype_score(similarities, self.cfg.top_k, self.cfg.best_weight)

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Features) -> float | None:
        score = self.score(features)
        return score if score >= self.cfg.threshold else None


class DomainClassifier:
    """Nearest domain among every declared domain of one scope; computed once per request."""

    def __init__(self, domains: Sequence[Any], ctx: SemanticContext, scope: str) -> None:
        self.domains = list(domains)
        self.ctx = ctx
        self.scope = scope
        self.matrices: list[np.ndarray] = []

    async def prepare(self) -> None:
        if not self.matrices:
            assert self.ctx.engine is not None
            self.matrices = [await self.ctx.engine.embed(list(d.examples)) for d in self.domains]

    def classify(self, features: Features) -> tuple[str | None, float, float]:
        """(winning domain or None, its score, its margin over the runner-up)."""
        key = f"domain:{self.scope}"
        if key not in features:
            vector = features[f"embedding:{self.scope}"]
            scores = sorted(
                (
                    (prototype_score(m @ vector, 3, 0.75), d.name)
                    for m, d in zip(self.matrices, self.domains, strict=True)
                ),
                reverse=True,
            )
            best, name = scores[0]
            margin = best - scores[1][0] if len(scores) > 1 else best
            features[key] = (name, best, margin)
        return features[key]


class DomainMatch:
    def __init__(self, cfg: Any, ctx: SemanticContext, classifier: DomainClassifier) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.classifier = classifier
        self.producers = [EmbeddingProducer(ctx, cfg.scope)]

    async def prepare(self) -> None:
        await self.classifier.prepare()

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Features) -> float | None:
        winner, score, margin = self.classifier.classify(features)
        if winner != self.name or score < self.cfg.threshold or margin < self.cfg.margin:
            return None
        return score


class ComplexityMatch:
    def __init__(self, cfg: Any, ctx: SemanticContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.ctx = ctx
        self.producers = [EmbeddingProducer(ctx, cfg.scope)]
        self.hard: np.ndarray | None = None
        self.easy: np.ndarray | None = None

    async def prepare(self) -> None:
        assert self.ctx.engine is not None
        self.hard = await self.ctx.engine.embed(list(self.cfg.hard))
        self.easy = await self.ctx.engine.embed(list(self.cfg.easy))

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Features) -> float | None:
        assert self.hard is not None and self.easy is not None, "prepare() was not awaited"
        vector = features[f"embedding:{self.cfg.scope}"]
        hard = prototype_score(self.hard @ vector, 3, 0.75)
        easy = prototype_score(self.easy @ vector, 3, 0.75)
        lead = hard - easy if self.cfg.level == "hard" else easy - hard
        return min(1.0, 0.5 + lead) if lead >= self.cfg.margin else None


class LanguageMatch:
    def __init__(self, cfg: Any, ctx: SemanticContext, detector: Any) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.detector = detector  # shared by every language signal: the union of their languages
        self.languages = frozenset(cfg.languages or [cfg.name])
        self.producers = [DetectorProducer(ctx, "language", cfg.scope, detector.detect)]

    async def prepare(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.detector.warm_up)  # load models now

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Features) -> float | None:
        code, confidence = features[f"language:{self.cfg.scope}"]
        return confidence if code in self.languages and confidence >= self.cfg.threshold else None


class PIIMatch:
    def __init__(self, cfg: Any, ctx: SemanticContext) -> None:
        from extproc.signals.pii import detect_pii

        self.name = cfg.name
        self.cfg = cfg
        self.kinds = frozenset(cfg.kinds)
        self.producers = [DetectorProducer(ctx, "pii", cfg.scope, detect_pii)]

    async def prepare(self) -> None:
        return None

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Features) -> float | None:
        found: frozenset[str] = features[f"pii:{self.cfg.scope}"]
        return 1.0 if found & self.kinds else None


class JailbreakMatch:
    def __init__(self, cfg: Any, ctx: SemanticContext) -> None:
        from extproc.signals.jailbreak_patterns import scan_jailbreak

        self.name = cfg.name
        self.cfg = cfg
        self.ctx = ctx
        self.producers: list[Any] = [DetectorProducer(ctx, "jailbreak", cfg.scope, scan_jailbreak)]
        if cfg.embeddings:
            self.producers.append(EmbeddingProducer(ctx, cfg.scope))
        self.attacks: np.ndarray | None = None
        self.benign: np.ndarray | None = None

    async def prepare(self) -> None:
        if self.cfg.embeddings:
            from extproc.signals.jailbreak_patterns import BENIGN_EXAMPLES, JAILBREAK_EXAMPLES

            assert self.ctx.engine is not None
            self.attacks = await self.ctx.engine.embed(list(JAILBREAK_EXAMPLES))
            self.benign = await self.ctx.engine.embed(list(BENIGN_EXAMPLES))

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Features) -> float | None:
        pattern_score, _families = features[f"jailbreak:{self.cfg.scope}"]
        score = pattern_score
        if self.attacks is not None and self.benign is not None:
            vector = features[f"embedding:{self.cfg.scope}"]
            attack = prototype_score(self.attacks @ vector, 3, 0.75)
            benign = prototype_score(self.benign @ vector, 3, 0.75)
            if attack > benign:  # closer to known attacks than to lookalike benign prompts
                score = max(score, attack)
        return score if score >= self.cfg.threshold else None
