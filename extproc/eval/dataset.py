"""The eval dataset: one JSON object per line.

    {"id": "q1", "prompt": "...", "reference": "...",
     "rubric": {"positive": ["names Paris"], "negative": ["mentions Lyon as the capital"]}}

`messages` (an OpenAI message list) may replace `prompt`; `stop` and `max_tokens` are passed to the arm.
Every item needs a reference answer or at least one rubric criterion: without one it cannot be graded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Item:
    id: str
    messages: list[dict[str, Any]]
    reference: str | None = None
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The last user message's text: what the grader is told was asked."""
        for message in reversed(self.messages):
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                return message["content"]
        return ""


_KEYS = {"id", "prompt", "messages", "reference", "rubric", "stop", "max_tokens"}


def parse_item(raw: Any, where: str, index: int) -> Item:
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    unknown = set(raw) - _KEYS
    if unknown:
        raise DatasetError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    if ("prompt" in raw) == ("messages" in raw):
        raise DatasetError(f"{where}: give exactly one of 'prompt' or 'messages'")
    if "prompt" in raw:
        if not isinstance(raw["prompt"], str) or not raw["prompt"].strip():
            raise DatasetError(f"{where}: 'prompt' must be a non-empty string")
        messages = [{"role": "user", "content": raw["prompt"]}]
    else:
        messages = raw["messages"]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise DatasetError(f"{where}: 'messages' must be a non-empty list of objects")
    reference = raw.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise DatasetError(f"{where}: 'reference' must be a string")
    rubric = raw.get("rubric") or {}
    if not isinstance(rubric, dict) or set(rubric) - {"positive", "negative"}:
        raise DatasetError(f"{where}: 'rubric' must be an object with 'positive' and/or 'negative' lists")
    positive, negative = rubric.get("positive", []), rubric.get("negative", [])
    for name, criteria in (("positive", positive), ("negative", negative)):
        if not isinstance(criteria, list) or not all(isinstance(c, str) and c.strip() for c in criteria):
            raise DatasetError(f"{where}: 'rubric.{name}' must be a list of non-empty strings")
    if not reference and not positive and not negative:
        raise DatasetError(f"{where}: needs a 'reference' or a 'rubric' to be graded")
    params = {key: raw[key] for key in ("stop", "max_tokens") if key in raw}
    return Item(str(raw.get("id", index + 1)), messages, reference or None, list(positive), list(negative), params)


def load_dataset(path: Path, limit: int | None = None) -> list[Item]:
    items: list[Item] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{where}: not JSON ({err.msg})") from None
            items.append(parse_item(raw, where, len(items)))
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise DatasetError(f"{path}: no items")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: duplicate ids")
    return items
