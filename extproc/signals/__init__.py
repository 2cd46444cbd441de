"""Signals: facts computed from one request, which decision rules test by `(type, name)`.

A signal returns a confidence in (0, 1] when it matches and None when it does not. Signals are
synchronous and cheap. Anything expensive (an embedding, language detection, a PII scan) is a
*producer*: computed once per request, off the event loop, concurrently with the other producers
needed at the same time, and handed to every signal that reads it as `features`.

A request's producer-backed signals are computed on demand (`Evaluation.need`; the cheap ones all
at once): routing asks for the signals of one priority group of decisions at a time, so a request
that a keyword decision settles never waits for an embedding that only a lower decision reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from extproc.openai import ChatRequest
from extproc.signals.lexical import KeywordMatcher, RegexMatcher
from extproc.signals.request import ContextLength, HeaderMatch

# Kinds whose module (and its numpy / onnxruntime / lingua dependencies) loads only when used.
SEMANTIC_KINDS = ("embedding", "domain", "complexity", "language", "pii", "jailbreak")
NEEDS_ENGINE = ("embedding", "domain", "complexity")  # plus jailbreak with `embeddings: true`

SignalKey = tuple[str, str]  # (type, name) as written in a rule leaf
SignalResults = dict[SignalKey, float | None]


def needs_engine(signals: Any, used: Iterable[SignalKey]) -> bool:
    """Whether the signals rules use (`used`) need the embedding engine (`signals`: SignalsConfig)."""
    used = set(used)
    return any(kind in NEEDS_ENGINE for kind, _ in used) or any(
        s.embeddings for s in signals.jailbreak if ("jailbreak", s.name) in used
    )


class Producer(Protocol):
    key: str

    async def produce(self, chat: ChatRequest) -> Any: ...


class Signal(Protocol):
    name: str

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Any = None) -> float | None: ...


LEXICAL_KINDS: dict[str, Any] = {
    "keyword": KeywordMatcher,
    "regex": RegexMatcher,
    "context": ContextLength,
    "header": HeaderMatch,
}


class SignalSet:
    """The signals some decision uses, compiled once; computed per request by an `Evaluation`."""

    __slots__ = ("_producers", "_signals")

    def __init__(self, signals: Iterable[tuple[SignalKey, Signal]]) -> None:
        self._signals = tuple(signals)
        producers: dict[str, Producer] = {}
        for _, signal in self._signals:
            for producer in getattr(signal, "producers", ()):
                producers.setdefault(producer.key, producer)
        self._producers = tuple(producers.values())

    def __len__(self) -> int:
        return len(self._signals)

    @property
    def keys(self) -> frozenset[SignalKey]:
        return frozenset(key for key, _ in self._signals)

    def subset(self, keys: Iterable[SignalKey]) -> SignalSet:
        """The signals named in `keys`, sharing this set's compiled instances (and their loaded models)."""
        wanted = set(keys)
        return SignalSet((key, signal) for key, signal in self._signals if key in wanted)

    @property
    def producers(self) -> tuple[Producer, ...]:
        return self._producers

    def cascade_counts(self) -> list[tuple[str, int, int]]:
        """(scope, answered by the first stage, fell through) of each domain cascade, read when
        Prometheus scrapes (semantic.CascadeProducer)."""
        return [p.stage_counts() for p in self._producers if hasattr(p, "stage_counts")]

    async def prepare(self, skip: set[int] | None = None) -> None:
        """Embed example phrases and load models before the first request (not on it).
        `skip` holds ids of signals already prepared (subsets share instances); it is updated."""
        done = set() if skip is None else skip
        for _, signal in self._signals:
            prepare = getattr(signal, "prepare", None)
            if prepare is not None and id(signal) not in done:
                done.add(id(signal))
                await prepare()

    @property
    def items(self) -> tuple[tuple[SignalKey, Signal], ...]:
        return self._signals

    async def evaluate(self, chat: ChatRequest, headers: Mapping[str, str]) -> SignalResults:
        """Every signal of the set, at once."""
        evaluation = Evaluation(self, chat, headers)
        return await evaluation.need(None)


class Evaluation:
    """One request's signal results, computed on demand and at most once each.

    `results` holds exactly the signals computed so far: a rule may read it only after `need`
    returned for every signal the rule names, because an absent signal reads as "did not match"
    (and a NOT over it as a match).
    """

    __slots__ = ("_features", "chat", "headers", "results", "signals", "started")

    def __init__(self, signals: SignalSet, chat: ChatRequest, headers: Mapping[str, str]) -> None:
        self.signals = signals
        self.chat = chat
        self.headers = headers
        self.results: SignalResults = {}
        self.started: float | None = None  # perf_counter of the first `need`, for the signals span
        self._features: dict[str, Any] = {}

    @property
    def skipped(self) -> int:
        """How many signals of the set were never needed."""
        return len(self.signals) - len(self.results)

    def ordered(self) -> SignalResults:
        """The results computed so far, in the set's order (as eager evaluation lists them)."""
        return {key: self.results[key] for key, _ in self.signals.items if key in self.results}

    async def need(self, keys: Iterable[SignalKey] | None) -> SignalResults:
        """Compute the signals in `keys` (None: all of the set's) not computed yet; keys the set does
        not hold are ignored (they read as no match, as with eager evaluation).

        The first call also computes every signal of the set that needs no producer (keyword, regex,
        header, context: microseconds), so later groups of lexical rules are decided at once and the
        debug header lists every lexical match. The producers the other missing signals read run
        concurrently, those not run yet only; then the signals themselves, on the event loop."""
        if self.started is None:
            self.started = time.perf_counter()
            for key, signal in self.signals.items:
                if not getattr(signal, "producers", ()):
                    self.results[key] = signal.evaluate(self.chat, self.headers, self._features)
        wanted = None if keys is None else set(keys)
        missing = [
            (key, signal)
            for key, signal in self.signals.items
            if key not in self.results and (wanted is None or key in wanted)
        ]
        if not missing:
            return self.results
        producers: dict[str, Producer] = {}
        for _, signal in missing:
            for producer in getattr(signal, "producers", ()):
                if producer.key not in self._features:
                    producers.setdefault(producer.key, producer)
        if producers:
            values = await asyncio.gather(*(p.produce(self.chat) for p in producers.values()))
            self._features.update(zip(producers, values, strict=True))
        for key, signal in missing:
            self.results[key] = signal.evaluate(self.chat, self.headers, self._features)
        return self.results


def compile_signals(signals_config: Any, used: set[SignalKey], semantic: Any = None) -> SignalSet:
    """Build only the signals in `used`; the rest of the configuration costs nothing per request.

    `semantic` is the process's SemanticContext (engine and executor), needed only when a used
    signal is a semantic one.
    """
    compiled: list[tuple[SignalKey, Signal]] = []
    for kind, factory in LEXICAL_KINDS.items():
        for cfg in getattr(signals_config, kind):
            if (kind, cfg.name) in used:
                compiled.append(((kind, cfg.name), factory(cfg)))
    if any(kind not in LEXICAL_KINDS for kind, _ in used):
        compiled.extend(_semantic(signals_config, used, semantic))
    return SignalSet(compiled)


def _semantic(signals_config: Any, used: set[SignalKey], ctx: Any) -> list[tuple[SignalKey, Signal]]:
    from extproc.signals import semantic as sem

    if ctx is None:
        raise RuntimeError("semantic signals need a SemanticContext")
    out: list[tuple[SignalKey, Signal]] = []
    classifiers: dict[str, sem.DomainClassifier] = {}
    for cfg in signals_config.domain:
        if cfg.scope not in classifiers:
            same_scope = [d for d in signals_config.domain if d.scope == cfg.scope]
            classifiers[cfg.scope] = sem.DomainClassifier(same_scope, ctx, cfg.scope)
    language_signals = [c for c in signals_config.language if ("language", c.name) in used]
    if language_signals:
        from extproc.signals.language import DEFAULT_LANGUAGES, get_language_detector

        codes = set(DEFAULT_LANGUAGES).union(*(c.languages or [c.name] for c in language_signals))
        # Preloaded so no request pays for loading a language model (at the cost of memory: ~25 MB a language).
        detector = get_language_detector(codes, preload=True)
        for cfg in language_signals:
            out.append((("language", cfg.name), sem.LanguageMatch(cfg, ctx, detector)))
    for kind, factory in (
        ("embedding", sem.EmbeddingMatch),
        ("complexity", sem.ComplexityMatch),
        ("pii", sem.PIIMatch),
        ("jailbreak", sem.JailbreakMatch),
    ):
        for cfg in getattr(signals_config, kind):
            if (kind, cfg.name) in used:
                out.append(((kind, cfg.name), factory(cfg, ctx)))
    for cfg in signals_config.domain:
        if ("domain", cfg.name) in used:
            out.append((("domain", cfg.name), sem.DomainMatch(cfg, ctx, classifiers[cfg.scope])))
    return out
