"""Keyword and regex signals over the request text, compiled once at start.

Prompts can be megabytes long, so both avoid backtracking scans of the whole text:
- keywords are found with `str.find` (case-folded text and keywords unless `case_sensitive`) and
  accepted only as whole words or phrases, with Unicode word boundaries;
- regexes run on RE2 (google-re2): linear time whatever the pattern, and the same syntax as vLLM
  Semantic Router's Go regexps and Envoy's matchers (no backreferences or lookaround).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import re2

from extproc.openai import ChatRequest


def re2_options(case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is reported as a config error, not on stderr
    options.case_sensitive = case_sensitive
    return options


def compile_regex(pattern: str, case_sensitive: bool = True) -> re2._Regexp:
    """Compile with RE2; raises ValueError with RE2's reason for patterns it does not support."""
    try:
        return re2.compile(pattern, options=re2_options(case_sensitive))
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"{pattern!r} is not a valid regular expression (RE2 syntax): {reason}") from None


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _contains_word(text: str, keyword: str) -> bool:
    """`keyword` occurs in `text` with no word character glued to either end of it."""
    check_start, check_end = _is_word(keyword[0]), _is_word(keyword[-1])
    start = text.find(keyword)
    while start != -1:
        end = start + len(keyword)
        if (not check_start or start == 0 or not _is_word(text[start - 1])) and (
            not check_end or end == len(text) or not _is_word(text[end])
        ):
            return True
        start = text.find(keyword, start + 1)
    return False


def _verdict(operator: str, found: Any) -> float | None:
    """`any`: one found, `all`: every one found, `none`: nothing found."""
    if operator == "all":
        return 1.0 if all(found) else None
    hit = any(found)
    return 1.0 if hit == (operator == "any") else None


class KeywordMatcher:
    __slots__ = ("case_sensitive", "keywords", "name", "operator", "scope")

    def __init__(self, cfg: Any) -> None:
        self.name: str = cfg.name
        self.operator: str = cfg.operator
        self.scope: str = cfg.scope
        self.case_sensitive: bool = cfg.case_sensitive
        self.keywords = tuple(k if cfg.case_sensitive else k.casefold() for k in cfg.keywords)

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Any = None) -> float | None:
        text = chat.text(self.scope) if self.case_sensitive else chat.folded_text(self.scope)
        return _verdict(self.operator, (_contains_word(text, k) for k in self.keywords))


class RegexMatcher:
    __slots__ = ("name", "operator", "patterns", "scope")

    def __init__(self, cfg: Any) -> None:
        self.name: str = cfg.name
        self.operator: str = cfg.operator
        self.scope: str = cfg.scope
        self.patterns = tuple(compile_regex(p, cfg.case_sensitive) for p in cfg.patterns)

    def evaluate(self, chat: ChatRequest, headers: Mapping[str, str], features: Any = None) -> float | None:
        text = chat.text(self.scope)
        return _verdict(self.operator, (p.search(text) is not None for p in self.patterns))
