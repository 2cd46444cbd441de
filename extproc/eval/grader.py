"""The grader: one prompt per (item, answer) listing every criterion, and a tolerant parser of its verdicts.

Criteria are the rubric's positive ones, the reference (as "agrees with the reference answer"), then the
negative ones. score = (positives met - negatives met) / positives, clipped to [0, 1]: DRACO-style, a
negative criterion costs as much as a positive one earns. The whole briefing is in the user message,
because some servers drop system messages (llama.cpp's gemma chat format does).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from extproc.eval.dataset import Item

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"met": {"type": "array", "items": {"type": "boolean"}}},
    "required": ["met"],
}


@dataclass(frozen=True)
class Criteria:
    positive: list[str]
    negative: list[str]

    @property
    def all(self) -> list[str]:
        return self.positive + self.negative


def criteria_for(item: Item) -> Criteria:
    positive = list(item.positive)
    if item.reference:
        positive.append(f"The answer agrees with the reference answer: {item.reference}")
    return Criteria(positive, list(item.negative))


def grader_prompt(item: Item, answer: str) -> str:
    criteria = criteria_for(item)
    lines = [f"{i}. {text}" for i, text in enumerate(criteria.all, start=1)]
    return (
        "You grade an answer against numbered criteria. For each criterion say whether the answer meets it.\n"
        f"Question:\n{item.question}\n\nAnswer:\n{answer}\n\nCriteria:\n" + "\n".join(lines) + "\n\n"
        f'Reply with JSON only: {{"met": [...]}} with exactly {len(lines)} booleans, in criterion order.'
    )


class GradeParseError(ValueError):
    pass


_YES = {"true", "yes", "met", "1", "y", "pass"}
_NO = {"false", "no", "not met", "unmet", "0", "n", "fail"}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise GradeParseError(f"not a verdict: {value!r}")


def parse_verdicts(text: str, count: int) -> list[bool]:
    """The grader's verdicts: JSON `{"met": [...]}` (also inside a ``` fence or prose), or "1. yes" lines."""
    for candidate in re.findall(r"\{.*\}", text, flags=re.DOTALL):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("met"), list):
            verdicts = [_as_bool(v) for v in data["met"]]
            if len(verdicts) != count:
                raise GradeParseError(f"expected {count} verdicts, got {len(verdicts)}")
            return verdicts
    lines = re.findall(r"^\s*(\d+)[.):]\s*(yes|no|true|false|met|not met)\b", text, flags=re.IGNORECASE | re.M)
    by_number = {int(n): _as_bool(v) for n, v in lines}
    if sorted(by_number) == list(range(1, count + 1)):
        return [by_number[i] for i in range(1, count + 1)]
    raise GradeParseError("no verdicts found in the grader's reply")


def score(criteria: Criteria, verdicts: list[bool]) -> float:
    positive = sum(verdicts[: len(criteria.positive)])
    negative = sum(verdicts[len(criteria.positive) :])
    if not criteria.positive:  # only negatives: start from full marks
        return max(0.0, 1.0 - negative / len(criteria.negative))
    return min(1.0, max(0.0, (positive - negative) / len(criteria.positive)))


def response_format(mode: str, count: int) -> dict[str, Any] | None:
    """`json_schema` (OpenAI), `json_object` (+ the schema: llama.cpp's form, which 500s on json_schema), `none`.

    llama.cpp turns the schema into a grammar, so there the array length is pinned too."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "verdicts", "schema": VERDICT_SCHEMA, "strict": True}}
    if mode == "json_object":
        items = {**VERDICT_SCHEMA["properties"]["met"], "minItems": count, "maxItems": count}
        return {"type": "json_object", "schema": {**VERDICT_SCHEMA, "properties": {"met": items}}}
    return None
