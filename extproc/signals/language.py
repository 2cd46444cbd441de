"""Offline language identification with lingua (`lingua-language-detector`, import `lingua`).

lingua ships its n-gram models inside the wheel (no downloads) and is the Python sibling of the
lingua-go detector that vLLM Semantic Router uses for its `language` signal.

`detect_language(text)` returns `(iso_639_1_code, confidence)` or `(None, 0.0)` when the text has no
letters to judge. Confidences are lingua's relative values: they sum to 1 over the configured
languages, so the value depends on that set (a smaller set gives higher values).

Cost with the 16 default languages (2-core dev box, other jobs running, so ranges):
- high accuracy, models loaded lazily (default): no build cost, but the first detection of a
  Latin-script text loads models on the spot (0.6-0.9 s, +100 MB RSS); once every language has been
  seen, ~1.2 s more in total and +300 MB;
- high accuracy, `preload=True`: build 3.4-4.8 s, +420-440 MB RSS;
- `low_accuracy=True` (trigram models only): build 0.1-0.3 s with or without preload, +40-50 MB RSS;
  as good on sentences, weaker on very short texts (< 120 characters: 31/34 vs 34/34 short phrases
  right in a spot check, e.g. "fix this bug" -> pt).
Per call: ~0.6-1.7 ms for a 200-word text, ~0.06 ms for a short question, whatever the mode.
A server should build its detector at start (`warm_up()`, with `preload=True`), not on the first
requests; where ~430 MB is too much, `low_accuracy=True` is the lighter configuration.

Texts longer than `max_chars` are cut to head, middle and tail thirds (as the anchor does for its
semantic signals), which bounds the time per call (~0.5 ms per 1,000 characters otherwise).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import cache
from typing import Any

__all__ = [
    "DEFAULT_LANGUAGES",
    "LanguageDetector",
    "detect_language",
    "get_language_detector",
    "supported_languages",
]

DEFAULT_LANGUAGES: tuple[str, ...] = (
    "en", "de", "fr", "es", "it", "pt", "nl", "zh", "ja", "ko", "ru", "ar", "hi", "tr", "pl", "sv",
)  # fmt: skip
DEFAULT_MAX_CHARS = 2048


def _lingua() -> Any:
    try:
        import lingua
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "language detection needs the 'lingua-language-detector' package (pip install lingua-language-detector)"
        ) from exc
    return lingua


@cache
def supported_languages() -> frozenset[str]:
    """ISO 639-1 codes lingua can detect (75 languages)."""
    return frozenset(lang.iso_code_639_1.name.lower() for lang in _lingua().Language.all())


def _bounded(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    third = max_chars // 3
    mid = (len(text) - third) // 2
    return f"{text[:third]}\n{text[mid : mid + third]}\n{text[len(text) - third :]}"


class LanguageDetector:
    """A lingua detector over a fixed set of languages, built on first use (or by `warm_up()`).

    Thread-safe: the build happens once under a lock; lingua's detector itself may be shared by
    threads (it holds the GIL while detecting, so calls do not run in parallel).
    """

    def __init__(
        self,
        languages: Iterable[str] | None = DEFAULT_LANGUAGES,
        *,
        preload: bool = False,
        low_accuracy: bool = False,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        """`languages`: ISO 639-1 codes (case-insensitive), None for all 75 lingua languages.
        `preload`: load every model when building instead of on demand. `low_accuracy`: trigram
        models only (much less memory, weaker on short texts). Raises ValueError for unknown codes."""
        lingua = _lingua()
        if languages is None:
            codes = tuple(sorted(supported_languages()))
        else:
            codes = tuple(dict.fromkeys(code.strip().lower() for code in languages))
        if not codes:
            raise ValueError("language detection needs at least one language")
        supported = supported_languages()
        unknown = sorted(set(codes) - supported)
        if unknown:
            raise ValueError(
                f"unsupported language code(s) {unknown}: use ISO 639-1 codes lingua supports "
                f"({', '.join(sorted(supported))})"
            )
        if max_chars < 3:
            raise ValueError("max_chars must be at least 3")
        self.languages: tuple[str, ...] = codes
        self.preload = preload
        self.low_accuracy = low_accuracy
        self.max_chars = max_chars
        self._iso = tuple(lingua.IsoCode639_1.from_str(code.upper()) for code in codes)
        self._detector: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        builder = _lingua().LanguageDetectorBuilder.from_iso_codes_639_1(*self._iso)
        if self.low_accuracy:
            builder = builder.with_low_accuracy_mode()
        if self.preload:
            builder = builder.with_preloaded_language_models()
        return builder.build()

    def _get(self) -> Any:
        detector = self._detector
        if detector is None:
            with self._lock:
                detector = self._detector
                if detector is None:
                    detector = self._detector = self._build()
        return detector

    def warm_up(self) -> None:
        """Build now (loading all models when `preload`), so no request pays for it."""
        self._get().compute_language_confidence_values("warm up")

    def confidences(self, text: str) -> dict[str, float]:
        """Every configured language with a non-zero confidence, highest first."""
        values = self._get().compute_language_confidence_values(_bounded(text, self.max_chars))
        return {v.language.iso_code_639_1.name.lower(): v.value for v in values if v.value > 0.0}

    def detect(self, text: str) -> tuple[str | None, float]:
        """(ISO 639-1 code, confidence in (0, 1]) of the most likely language, or (None, 0.0)."""
        if not text or text.isspace():
            return None, 0.0
        values = self._get().compute_language_confidence_values(_bounded(text, self.max_chars))
        if not values or values[0].value <= 0.0:
            return None, 0.0
        top = values[0]
        return top.language.iso_code_639_1.name.lower(), float(top.value)


_shared: dict[tuple[tuple[str, ...] | None, bool, bool, int], LanguageDetector] = {}
_shared_lock = threading.Lock()


def get_language_detector(
    languages: Iterable[str] | None = DEFAULT_LANGUAGES,
    *,
    preload: bool = False,
    low_accuracy: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> LanguageDetector:
    """One shared detector per configuration (the same language set in any order or case shares)."""
    langs = None if languages is None else tuple(sorted({code.strip().lower() for code in languages}))
    key = (langs, preload, low_accuracy, max_chars)
    with _shared_lock:
        detector = _shared.get(key)
        if detector is None:
            detector = _shared[key] = LanguageDetector(
                langs, preload=preload, low_accuracy=low_accuracy, max_chars=max_chars
            )
    return detector


def detect_language(
    text: str,
    languages: Iterable[str] | None = DEFAULT_LANGUAGES,
    *,
    preload: bool = False,
    low_accuracy: bool = False,
) -> tuple[str | None, float]:
    """(ISO 639-1 code, confidence) of `text` among `languages`, or (None, 0.0) if undecidable."""
    return get_language_detector(languages, preload=preload, low_accuracy=low_accuracy).detect(text)
