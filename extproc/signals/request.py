"""Signals read from the request's shape rather than its words: context length and headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.openai import ChatRequest


class ContextLength:
    """Matches when the estimated prompt size is within [min_tokens, max_tokens]."""

    __slots__ = ("max_tokens", "min_tokens", "name")

    def __init__(self, cfg: Any) -> None:
        self.name = cfg.name
        self.min_tokens: int = cfg.min_tokens
        self.max_tokens: int | None = cfg.max_tokens

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Any = None) -> float | None:
        tokens = chat.token_estimate
        if tokens < self.min_tokens or (self.max_tokens is not None and tokens > self.max_tokens):
            return None
        return 1.0


class HeaderMatch:
    """Matches when a request header is present (no `values`) or equals one of `values`.

    A comma-separated header value matches if any of its items does.
    """

    __slots__ = ("case_sensitive", "header", "name", "values")

    def __init__(self, cfg: Any) -> None:
        self.name = cfg.name
        self.header: str = cfg.header
        self.case_sensitive: bool = cfg.case_sensitive
        values = cfg.values
        self.values = None if values is None else frozenset(v if cfg.case_sensitive else v.lower() for v in values)

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Any = None) -> float | None:
        value = headers.get(self.header)
        if value is None:
            return None
        if self.values is None:
            return 1.0
        if not self.case_sensitive:
            value = value.lower()
        return 1.0 if any(item.strip() in self.values for item in value.split(",")) else None
