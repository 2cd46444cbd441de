"""The prompts of fusion-v1 and how panel answers are shown to the judge and the synthesiser.

Panel answers are shown under shuffled anonymous labels (Response A, B, ...) so neither the judge
nor the synthesiser can favour a model by name or by position; the trace maps labels back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from extproc.openai import message_text

ANALYSIS_KEYS = ("consensus", "contradictions", "partial_coverage", "unique_insights", "blind_spots")

JUDGE_SYSTEM = """You are FUSION-JUDGE ({version}). Several assistants answered the same request independently.
Their answers are labelled Response A, Response B, and so on. Compare them on substance, not on style or length,
and do not answer the request yourself. Return only one JSON object, no markdown and no code fences, with exactly
these keys, each an array of short strings:
- "consensus": points most responses agree on;
- "contradictions": points where responses disagree, naming the labels and what each claims;
- "partial_coverage": points only some responses address, naming which;
- "unique_insights": valuable points made by a single response, naming it;
- "blind_spots": aspects of the request that no response covers."""

DEFAULT_ANALYSIS_TEMPLATE = "The request:\n{{original}}\n\nThe responses:\n{{responses}}"

DEFAULT_SYNTHESIS_TEMPLATE = """Several independent assistants have already answered the conversation that follows.
Their answers:

{{responses}}

An analysis of where they agree and differ:
{{analysis}}

Write the single best final answer to the last user message: build on the consensus, resolve contradictions
explicitly with the best-supported position, keep valuable unique insights and cover blind spots where you can.
Answer the user directly and in the format they asked for. Do not mention the other assistants, the analysis or
the response labels."""

NO_ANALYSIS = "(No structured analysis is available; compare the answers yourself.)"

REASK = "Your previous reply was not a valid JSON object with the required keys. Reply again with only the JSON."

ANALYSIS_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "fusion_analysis",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {k: {"type": "array", "items": {"type": "string"}} for k in ANALYSIS_KEYS},
            "required": list(ANALYSIS_KEYS),
            "additionalProperties": False,
        },
    },
}


def label(index: int) -> str:
    """A, B, ..., Z, AA, AB, ..."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def render_conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(f"[{m.get('role')}]\n{message_text(m)}" for m in messages)


def render_responses(labelled: Sequence[tuple[str, str]]) -> str:
    return "\n\n".join(f"Response {name}:\n{content}" for name, content in labelled)


def render_analysis(analysis: Mapping[str, Any] | None) -> str:
    if not analysis or analysis.get("parse_failed"):
        return NO_ANALYSIS
    parts = []
    for key in ANALYSIS_KEYS:
        items = analysis.get(key) or []
        if items:
            parts.append(key.replace("_", " ").capitalize() + ":\n" + "\n".join(f"- {i}" for i in items))
    return "\n".join(parts) or "(The judge found nothing to note.)"


def fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template
