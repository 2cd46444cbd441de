"""Signals that need more than string matching: embeddings, domains, complexity, language, PII, jailbreak.

The expensive part of each is a *feature* computed once per request by a producer, off the event
loop, and shared by every signal that reads it: the request's embedding (per text scope), its
language, the PII kinds it contains, the jailbreak pattern scan. Producers of one request run
concurrently; the signals themselves are cheap arithmetic over the features.

Scores over example phrases (embedding, complexity, jailbreak) use the prototype score: best_weight *
best similarity + (1 - best_weight) * mean of the top_k similarities. The best match rewards a close
paraphrase; the mean of the top few keeps one lucky example from deciding alone. Domains use the
calibrated centroid classifier of extproc.semantic.domains.
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

    from extproc.semantic.domains import DomainModel, Verdict
    from extproc.semantic.engine import EmbeddingEngine

# Texts shorter than this are scanned on the event loop: a thread hop would cost more than the scan.
INLINE_SCAN_CHARS = 4096

Features = dict[str, Any]


class SemanticContext:
    """What semantic signals share in one process: the embedding engine and the detector executor."""

    def __init__(
        self,
        engine: EmbeddingEngine | None,
        executor: Executor | None = None,
        *,
        domain_engine: EmbeddingEngine | None = None,
        first_stage: EmbeddingEngine | None = None,
        first_stage_confidence: float = 1.0,
    ) -> None:
        self.engine = engine
        self.executor = executor
        # Domain signals may run on another model (routing.embedding.domain_model); default: the same.
        self.domain_engine = domain_engine or engine
        # The cascade (routing.embedding.domain_first_stage): a static model that may accept a domain
        # first, when its confidence reaches first_stage_confidence; otherwise domain_engine decides.
        self.first_stage = first_stage
        self.first_stage_confidence = first_stage_confidence

    async def run(self, func: Any, text: str) -> Any:
        if len(text) < INLINE_SCAN_CHARS:
            return func(text)
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, text)


# ---------------------------------------------------------------- producers


class EmbeddingProducer:
    """The embedding of a scope's text by one engine (the signals' or the domains' model)."""

    def __init__(self, ctx: SemanticContext, scope: str, *, domains: bool = False) -> None:
        self.engine = ctx.domain_engine if domains else ctx.engine
        separate = domains and ctx.domain_engine is not ctx.engine
        self.key = embedding_key(scope, separate)
        self.scope = scope

    async def produce(self, chat: ChatRequest) -> np.ndarray:
        assert self.engine is not None
        vectors = await self.engine.embed([chat.text(self.scope)])
        return vectors[0]


def embedding_key(scope: str, domain_engine: bool = False) -> str:
    """The feature key of a scope's embedding (by the domain engine when it is a separate one)."""
    return f"{'domain-' if domain_engine else ''}embedding:{scope}"


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
    """The calibrated nearest domain among every declared domain of one scope (extproc.semantic.domains);
    computed once per request and shared by that scope's domain signals. With a first stage
    configured, its producer is a CascadeProducer, whose feature is the verdict itself."""

    def __init__(self, domains: Sequence[Any], ctx: SemanticContext, scope: str) -> None:
        self.domains = list(domains)
        self.ctx = ctx
        self.scope = scope
        self.producer: EmbeddingProducer | CascadeProducer
        if ctx.first_stage is not None:
            self.producer = CascadeProducer(self, ctx, scope)
        else:
            self.producer = EmbeddingProducer(ctx, scope, domains=True)
        self.model: DomainModel | None = None
        self.first_model: DomainModel | None = None

    async def prepare(self) -> None:
        if self.model is None:
            self.model = await build_domain_model(self.domains, self.ctx)
        if self.first_model is None and self.ctx.first_stage is not None:
            self.first_model = await build_domain_model(self.domains, self.ctx, self.ctx.first_stage)

    def classify(self, features: Features) -> Verdict:
        if isinstance(self.producer, CascadeProducer):
            return features[self.producer.key]
        key = f"domain:{self.scope}"
        if key not in features:
            assert self.model is not None, "prepare() was not awaited"
            features[key] = self.model.classify(features[self.producer.key])
        return features[key]


class CascadeProducer:
    """The scope's domain verdict, by the first stage when it is sure, else by the domain model.

    The static first stage embeds on the event loop (~0.02-0.3 ms, extproc.semantic.static) and
    classifies with its own calibrated DomainModel. It only ever *accepts*: when its verdict names a
    domain with confidence >= `first_stage_confidence`, that verdict (its own confidence) is the
    answer and the domain model never runs; a rejection or a less confident domain falls through to
    the domain model, which decides as without the cascade. `answered` and `fell_through` count
    requests (the semantic benchmark reports them).
    """

    def __init__(self, classifier: DomainClassifier, ctx: SemanticContext, scope: str) -> None:
        self.classifier = classifier
        self.ctx = ctx
        self.scope = scope
        self.key = f"domain-cascade:{scope}"
        self.answered = 0
        self.fell_through = 0

    async def produce(self, chat: ChatRequest) -> Verdict:
        first, model = self.classifier.first_model, self.classifier.model
        assert first is not None and model is not None, "prepare() was not awaited"
        assert self.ctx.first_stage is not None and self.ctx.domain_engine is not None
        text = chat.text(self.scope)
        verdict = first.classify((await self.ctx.first_stage.embed([text]))[0])
        if verdict.domain is not None and verdict.confidence >= self.ctx.first_stage_confidence:
            self.answered += 1
            return verdict
        self.fell_through += 1
        return model.classify((await self.ctx.domain_engine.embed([text]))[0])

    def stage_counts(self) -> tuple[str, int, int]:
        """(scope, answered by the first stage, fell through), for `SignalSet.cascade_counts`."""
        return self.scope, self.answered, self.fell_through


async def build_domain_model(
    domains: Sequence[Any], ctx: SemanticContext, engine: EmbeddingEngine | None = None
) -> DomainModel:
    """Embed the domains' examples, names and the background phrases with `engine` (default: the
    domain engine); calibrate (see domains.py)."""
    from extproc.semantic.background import background_texts
    from extproc.semantic.domains import DomainModel, domain_name_text

    engine = engine or ctx.domain_engine
    assert engine is not None
    vectors = [await engine.embed([*d.examples, domain_name_text(d.name)]) for d in domains]
    background = await engine.embed(list(background_texts()))
    return DomainModel(
        [d.name for d in domains],
        [d.examples for d in domains],
        vectors,
        background,
        thresholds=[d.threshold for d in domains],
        margins=[d.margin for d in domains],
    )


class DomainMatch:
    """Matches when this domain is the scope's accepted domain; the confidence is its probability."""

    def __init__(self, cfg: Any, ctx: SemanticContext, classifier: DomainClassifier) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.classifier = classifier
        self.producers = [classifier.producer]

    async def prepare(self) -> None:
        await self.classifier.prepare()

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Features) -> float | None:
        verdict = self.classifier.classify(features)
        return verdict.confidence if verdict.domain == self.name else None


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
