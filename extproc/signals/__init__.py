"""Signals: facts computed from one request, which decision rules test by `(type, name)`.

A signal returns a confidence in (0, 1] when it matches and None when it does not. Signals are
synchronous and cheap; anything expensive (an embedding, a classifier) will be computed once per
request by a producer off the event loop and handed to the signals that read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from extproc.openai import ChatRequest
from extproc.signals.lexical import KeywordMatcher, RegexMatcher
from extproc.signals.request import ContextLength, HeaderMatch

SignalKey = tuple[str, str]  # (type, name) as written in a rule leaf
SignalResults = dict[SignalKey, float | None]


class Signal(Protocol):
    name: str

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str]) -> float | None: ...


SIGNAL_KINDS: dict[str, Callable[[Any], Signal]] = {
    "keyword": KeywordMatcher,
    "regex": RegexMatcher,
    "context": ContextLength,
    "header": HeaderMatch,
}


class SignalSet:
    """The signals some decision uses, compiled once; evaluated together per request."""

    __slots__ = ("_signals",)

    def __init__(self, signals: Iterable[tuple[SignalKey, Signal]]) -> None:
        self._signals = tuple(signals)

    def __len__(self) -> int:
        return len(self._signals)

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str]) -> SignalResults:
        return {key: signal.evaluate(chat, headers) for key, signal in self._signals}


def compile_signals(signals_config: Any, used: set[SignalKey]) -> SignalSet:
    """Build only the signals in `used`; the rest of the configuration costs nothing per request."""
    compiled = []
    for kind, factory in SIGNAL_KINDS.items():
        for cfg in getattr(signals_config, kind):
            if (kind, cfg.name) in used:
                compiled.append(((kind, cfg.name), factory(cfg)))
    return SignalSet(compiled)
