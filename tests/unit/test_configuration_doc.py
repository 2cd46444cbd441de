"""docs/configuration.md names every key of the configuration schema: a new key without a line in the
doc fails here."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from extproc.config import Config
from extproc.config.validation import field_models

DOC = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")


def schema_keys(model: type[BaseModel] = Config, prefix: str = "", seen: frozenset = frozenset()) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}.{key}" if prefix else key
        keys.append(path)
        for inner in field_models(field.annotation):
            if inner not in seen:
                keys += schema_keys(inner, path, seen | {model})
    return keys


def documented(path: str) -> bool:
    """The key appears in the doc as a YAML key (`key:`), in backticks, or inside a dotted path."""
    key = re.escape(path.rsplit(".", 1)[-1])
    return re.search(rf"(^|[\s{{,.`\[(]){key}(:|`|\.\w)", DOC, re.MULTILINE) is not None


def test_the_walk_finds_nested_keys():
    keys = schema_keys()
    assert "envoy.limits.max_heap_bytes" in keys and "providers.models.pricing.prompt_per_1m" in keys
    assert len(keys) > 100


def test_every_schema_key_is_in_the_doc():
    missing = [path for path in schema_keys() if not documented(path)]
    assert missing == [], f"keys missing from docs/configuration.md: {missing}"
