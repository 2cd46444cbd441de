"""`routing.signals`: what each kind of signal is configured with, and the embedding engine."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from extproc.config.base import (
    INTERNAL_HEADER_PREFIX,
    NAME_PATTERN,
    Fraction,
    Scope,
    Strict,
    Tokens,
)


class KeywordSignal(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    keywords: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    operator: Literal["any", "all", "none"] = "any"
    case_sensitive: bool = False
    scope: Scope = "last_user"

    @field_validator("operator", mode="before")
    @classmethod
    def _anchor_operators(cls, v: Any) -> Any:
        # vLLM Semantic Router spells these OR / AND / NOR.
        return {"or": "any", "and": "all", "nor": "none"}.get(str(v).lower(), str(v).lower())


class RegexSignal(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    patterns: list[str] = Field(min_length=1)
    operator: Literal["any", "all", "none"] = "any"
    case_sensitive: bool = True
    scope: Scope = "last_user"

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        from extproc.signals.lexical import compile_regex

        for i, pattern in enumerate(v):
            try:
                compile_regex(pattern)
            except ValueError as exc:
                raise ValueError(f"patterns[{i}]: {exc}") from None
        return v


class ContextSignal(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    min_tokens: Tokens = 0
    max_tokens: Tokens | None = None

    @model_validator(mode="after")
    def _range(self) -> ContextSignal:
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError("max_tokens must be >= min_tokens")
        if self.min_tokens == 0 and self.max_tokens is None:
            raise ValueError("set min_tokens, max_tokens or both")
        return self


class HeaderSignal(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    header: str
    values: list[str] | None = None  # None: the header being present is enough
    case_sensitive: bool = False

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        v = v.lower()
        if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", v):
            raise ValueError(f"{v!r} is not a valid header name")
        if v.startswith(INTERNAL_HEADER_PREFIX):
            raise ValueError(f"{INTERNAL_HEADER_PREFIX}* headers are removed before routing and cannot be signals")
        return v


class EmbeddingSignal(Strict):
    """Similar to example phrases: score = best_weight * best + (1 - best_weight) * mean of the top_k."""

    name: str = Field(pattern=NAME_PATTERN)
    candidates: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    threshold: Fraction = 0.6
    top_k: int = Field(3, ge=1, le=64)
    best_weight: Fraction = 0.75
    scope: Scope = "last_user"


class DomainSignal(Strict):
    """One domain; the request gets the nearest domain of its scope when it is closer to it than to
    generic background phrases (calibrated at load, extproc.semantic.domains). `threshold` (a
    minimum centred cosine) replaces that background test, and `margin` also asks for a lead over
    the runner-up domain: both are overrides, unset by default."""

    name: str = Field(pattern=NAME_PATTERN)
    examples: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    threshold: Fraction | None = None
    margin: Fraction | None = None
    scope: Scope = "last_user"


class ComplexitySignal(Strict):
    """Matches when the request is closer to the `level` side (hard or easy examples) by `margin`."""

    name: str = Field(pattern=NAME_PATTERN)
    hard: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    easy: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    level: Literal["hard", "easy"] = "hard"
    margin: Fraction = 0.02
    scope: Scope = "last_user"


class LanguageSignal(Strict):
    """Matches when the detected language (ISO 639-1) is one of `languages` (default: the name)."""

    name: str = Field(pattern=NAME_PATTERN)
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] | None = None
    threshold: Fraction = 0.5
    scope: Scope = "last_user"

    @model_validator(mode="after")
    def _supported(self) -> LanguageSignal:
        try:
            from extproc.signals.language import supported_languages
        except ImportError:
            return self  # reported when the signal is built: the semantic extra is missing
        try:
            known = supported_languages()
        except Exception:  # lingua not installed
            return self
        unknown = sorted(set(self.languages or [self.name]) - known)
        if unknown:
            raise ValueError(f"unsupported language code(s) {unknown}; use ISO 639-1 codes lingua knows")
        return self


PIIKind = Literal["email", "phone", "payment_card", "iban", "ip_address", "us_ssn"]


class PIISignal(Strict):
    """Matches when any of `kinds` is found; reports which kinds, never the values."""

    name: str = Field(pattern=NAME_PATTERN)
    kinds: list[PIIKind] = ["email", "phone", "payment_card", "iban", "ip_address", "us_ssn"]
    scope: Scope = "user"


class JailbreakSignal(Strict):
    """Known attack phrasing (patterns), plus similarity to attack examples when `embeddings`."""

    name: str = Field(pattern=NAME_PATTERN)
    threshold: Fraction = 0.5
    embeddings: bool = True
    scope: Scope = "user"


class SignalsConfig(Strict):
    keyword: list[KeywordSignal] = []
    regex: list[RegexSignal] = []
    context: list[ContextSignal] = []
    header: list[HeaderSignal] = []
    embedding: list[EmbeddingSignal] = []
    domain: list[DomainSignal] = []
    complexity: list[ComplexitySignal] = []
    language: list[LanguageSignal] = []
    pii: list[PIISignal] = []
    jailbreak: list[JailbreakSignal] = []


class EmbeddingEngineConfig(Strict):
    """Where embeddings come from: the bundled offline model, or an OpenAI-compatible endpoint."""

    backend: Literal["local", "remote"] = "local"
    # embedding, complexity and jailbreak signals (their default thresholds are MiniLM's)
    model: str = "all-MiniLM-L6-v2"
    # domain signals (default: multilingual-e5-small locally, `model` with the remote backend)
    domain_model: str | None = None
    # the cascade: a static local model (wordllama-l2-supercat) that accepts a domain by itself when
    # its confidence reaches domain_first_stage_confidence; the rest goes to domain_model (unset: off)
    domain_first_stage: str | None = None
    domain_first_stage_confidence: float = Field(0.7, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=8, le=512)  # local: tokens read per text (default: the model's)
    cache_size: int = Field(4096, ge=0)
    threads: int | None = Field(None, ge=1, le=64)  # inference threads (default: one per core)
    base_url: str | None = None  # remote: e.g. http://embeddings:8000/v1
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _remote_needs_url(self) -> EmbeddingEngineConfig:
        if self.backend == "remote" and not self.base_url:
            raise ValueError("backend remote needs base_url")
        if self.backend == "local":
            from extproc.semantic.build import MODELS

            for key in ("model", "domain_model"):
                value = getattr(self, key)
                if value is not None and value not in MODELS:
                    raise ValueError(f"{key}: unknown local model {value!r} (supported: {', '.join(sorted(MODELS))})")
        if self.domain_first_stage is not None:
            from extproc.semantic.build import MODELS

            static = sorted(name for name, spec in MODELS.items() if spec.source == "static")
            if self.domain_first_stage not in static:
                raise ValueError(
                    f"domain_first_stage: {self.domain_first_stage!r} is not a static local model "
                    f"(supported: {', '.join(static)})"
                )
        return self

    @property
    def domain_engine_model(self) -> str:
        """The model domain signals run on (see `domain_model`)."""
        if self.domain_model:
            return self.domain_model
        from extproc.semantic.build import DEFAULT_MODEL

        return DEFAULT_MODEL if self.backend == "local" else self.model
