"""Keyword and regex signals over the request text; patterns are compiled once at start."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from extproc.openai import ChatRequest


def _keyword_pattern(keyword: str) -> str:
    """Whole-word match: `python` does not match inside `pythonic`, `stack trace` matches the phrase."""
    escaped = re.escape(keyword)
    start = r"\b" if re.match(r"\w", keyword) else ""
    end = r"\b" if re.search(r"\w$", keyword) else ""
    return start + escaped + end


class _PatternSignal:
    """Shared logic: `any` = one pattern found, `all` = every pattern found, `none` = no pattern found."""

    __slots__ = ("_any", "_each", "name", "operator", "scope")

    def __init__(self, name: str, patterns: list[str], operator: str, flags: int, scope: str, joinable: bool) -> None:
        self.name = name
        self.operator = operator
        self.scope = scope
        self._each = tuple(re.compile(p, flags) for p in patterns)
        # Keywords are escaped by us, so one alternation is safe and faster. User regexes are not
        # joined: inline flags, named groups and backreferences only mean what they say alone.
        self._any = re.compile("|".join(f"(?:{p})" for p in patterns), flags) if joinable else None

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str]) -> float | None:
        text = chat.text(self.scope)
        if self.operator == "all":
            return 1.0 if all(p.search(text) for p in self._each) else None
        found = self._any.search(text) is not None if self._any else any(p.search(text) for p in self._each)
        return 1.0 if found == (self.operator == "any") else None


class KeywordMatcher(_PatternSignal):
    __slots__ = ()

    def __init__(self, cfg: Any) -> None:
        flags = 0 if cfg.case_sensitive else re.IGNORECASE
        patterns = [_keyword_pattern(k) for k in cfg.keywords]
        super().__init__(cfg.name, patterns, cfg.operator, flags, cfg.scope, joinable=True)


class RegexMatcher(_PatternSignal):
    __slots__ = ()

    def __init__(self, cfg: Any) -> None:
        flags = 0 if cfg.case_sensitive else re.IGNORECASE
        super().__init__(cfg.name, list(cfg.patterns), cfg.operator, flags, cfg.scope, joinable=False)
