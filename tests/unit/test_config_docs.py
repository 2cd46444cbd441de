"""docs/configuration.md's key index lists every key of the schema, with the schema's default."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from extproc.config import Strict
from extproc.config.keys import schema_keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| (?P<default>[^|]+?) \| (?P<meaning>.+) \|$")


def documented() -> dict[str, tuple[str, str]]:
    """path -> (default, meaning) from the table under `## Every key`."""
    section = DOC.read_text(encoding="utf-8").split("\n## Every key\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        if m := ROW.match(line):
            assert m["path"] not in rows, f"{m['path']} is listed twice"
            rows[m["path"]] = (m["default"].strip("`"), m["meaning"].strip())
    return rows


def test_every_schema_key_is_documented_with_its_default() -> None:
    doc = documented()
    keys = {k.path: k.default for k in schema_keys()}
    assert sorted(set(keys) - set(doc)) == [], "keys missing from docs/configuration.md '## Every key'"
    assert sorted(set(doc) - set(keys)) == [], "documented keys the schema does not have"
    stale = {p: (doc[p][0], d) for p, d in keys.items() if doc[p][0] != d}
    assert stale == {}, "documented default != schema default"
    assert all(meaning and meaning != "TODO" for _, meaning in doc.values())


def test_the_keys_the_issue_named_are_there() -> None:
    doc = documented()
    for path in [
        "observability.tracing.exporter",
        "envoy.request_body_mode",
        "providers.models[].pricing.prompt_per_1m",
        "routing.decisions[].algorithm.fusion.heartbeat_interval",
        "routing.decisions[].description",
        "routing.embedding.backend",
        "routing.signals.domain[].margin",
    ]:
        assert path in doc
    assert "conversation_no_system" in doc["routing.signals.keyword[].scope"][1]


class Inner(Strict):
    wait: float = 2.5


class Outer(Strict):
    name: str
    items: list[Inner] = []
    by_name: dict[str, Inner] = {}
    again: Inner = Inner()
    flags: list[str] = Field(default_factory=lambda: ["a", "b"])


def test_schema_keys_walks_lists_mappings_and_repeated_models() -> None:
    keys = [(k.path, k.default, k.same_as) for k in schema_keys(Outer)]
    assert keys == [
        ("name", "required", None),
        ("items", "[]", None),
        ("items[].wait", "2.5", None),
        ("by_name", "{}", "items[]"),
        ("again", "{}", "items[]"),
        ("flags", "[a, b]", None),
    ]
