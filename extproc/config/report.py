"""Everything `quorum validate` finds in a document, errors and warnings, in one pass.

`validate_document` stops at the first stage that fails: cross references are only checked once the
structure is valid. An operator fixing a file wants every problem at once, so `check_document`
repairs what pydantic rejected (drops an unknown or ill-typed key so its default applies, or the
list item that cannot be valid) and checks the cross references of what is left. Paths in the
findings always point into the file as written, even after list items were dropped. A reference to
an item that was dropped for its own error is not reported twice as "unknown".
"""

from __future__ import annotations

import copy
import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from extproc.config.schema import Config
from extproc.config.validation import check_references, describe
from extproc.config.warnings import config_warnings

MAX_REPAIR_ROUNDS = 25

Loc = tuple[str | int, ...]


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: Config | None = None  # the valid configuration, when there are no errors


def missing_api_keys(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Models whose `api_key_env` variable is unset or empty: `serve` refuses to start on these."""
    return [
        f"providers.models[{i}].api_key_env: environment variable {m.api_key_env} is not set"
        for i, m in enumerate(config.providers.models)
        if m.api_key_env and not environ.get(m.api_key_env)
    ]


def check_document(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> Findings:
    env = os.environ if environ is None else environ
    doc = copy.deepcopy(raw)
    removed = _Removed(raw)
    errors: list[str] = []
    config: Config | None = None
    for _ in range(MAX_REPAIR_ROUNDS):
        try:
            config = Config.model_validate(doc)
            break
        except ValidationError as exc:
            found = exc.errors()
            errors += [
                _explain(e, removed.original(doc, tuple(e["loc"]))) for e in found if not removed.is_repair_echo(doc, e)
            ]
            if not removed.repair(doc, found):
                break
    if config is None:
        return Findings(errors=_unique(errors))
    later = check_references(config) + missing_api_keys(config, env)
    errors += [removed.remap(p) for p in later if not removed.hides(p)]
    warnings = config_warnings(config)
    if unset_key := _unset_embedding_key(config, env):
        if not errors and _engine_needed(config):
            errors.append(unset_key)  # `serve` cannot load the engine: it refuses to start
        else:
            warnings.append(f"{unset_key}; nothing uses the embedding engine now, the first semantic signal will")
    return Findings(errors=_unique(errors), warnings=warnings, config=None if errors else config)


def _unset_embedding_key(config: Config, environ: Mapping[str, str]) -> str | None:
    embedding = config.routing.embedding
    if embedding.backend != "remote" or not embedding.api_key_env or environ.get(embedding.api_key_env):
        return None
    return f"routing.embedding.api_key_env: environment variable {embedding.api_key_env} is not set"


def _engine_needed(config: Config) -> bool:
    """As `serve` decides: a used signal needs embeddings, or a decision's algorithm does."""
    from extproc.algorithms.compile import compile_algorithm
    from extproc.decisions import rule_signals
    from extproc.signals import needs_engine

    decisions = config.routing.decisions
    used = set().union(*(rule_signals(d.rules) for d in decisions)) if decisions else set()
    algorithms = [compile_algorithm(d, f"routing.decisions[{i}].algorithm") for i, d in enumerate(decisions)]
    return needs_engine(config.routing.signals, used) or any(getattr(a, "wants_embeddings", False) for a in algorithms)


def _explain(err: Any, loc: Loc) -> str:
    text = describe({**err, "loc": loc})
    if err["type"] == "extra_forbidden" and isinstance(loc[-1], str):
        close = difflib.get_close_matches(loc[-1], _keys_at(tuple(err["loc"][:-1])), n=1, cutoff=0.6)
        if close:
            text += f" (did you mean {close[0]!r}?)"
    return text


def _keys_at(loc: Loc) -> list[str]:
    """The keys the schema allows in the mapping at `loc` (names and aliases)."""
    candidates = _models_in(Config)
    for part in loc:
        if isinstance(part, int):
            continue
        fields = [(m, m.model_fields[n]) for m in candidates for n in _field_names(m, part)]
        if fields:
            candidates = [c for _, f in fields for c in _models_in(f.annotation)]
        # else a union tag or validator label pydantic put in the path: same candidates
    keys: list[str] = []
    for m in candidates:
        for name, f in m.model_fields.items():
            keys += [name] + ([f.alias] if f.alias else [])
    return keys


def _field_names(model: type[BaseModel], key: str) -> list[str]:
    return [n for n, f in model.model_fields.items() if key in (n, f.alias)]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _sort_key(loc: Loc) -> tuple[Any, ...]:
    # Drop deeper and later list items first, so an earlier drop does not move a later one.
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in loc)


def _holds(node: Any, part: str | int) -> bool:
    if isinstance(part, int):
        return isinstance(node, list) and part < len(node)
    return isinstance(node, dict) and part in node


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


class _Removed:
    """What the repair dropped from the working copy, by path in the original document."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw  # the document as written
        self.items: dict[Loc, list[int]] = {}  # list path -> original indices of dropped items
        self.keys: set[Loc] = set()  # keys deleted for an error: their later "missing" is not news
        self.names: set[str] = set()  # `name`s of dropped items

    def original(self, doc: Any, loc: Loc) -> Loc:
        """`loc` in the working copy (pydantic's labels dropped) as a path in the original file."""
        out: list[str | int] = []
        node = doc
        for part in loc:
            if isinstance(part, int) and isinstance(node, list):
                out.append(self._original_index(tuple(out), part))
                node = node[part] if part < len(node) else None
            elif isinstance(part, str) and isinstance(node, dict) and (part in node or part == loc[-1]):
                out.append(part)  # the last part may be an unknown or missing key
                node = node.get(part)
        return tuple(out)

    def _original_index(self, list_path: Loc, index: int) -> int:
        for gone in sorted(self.items.get(list_path, [])):
            if gone <= index:
                index += 1
        return index

    def is_repair_echo(self, doc: Any, err: Any) -> bool:
        return err["type"] == "missing" and self.original(doc, tuple(err["loc"])) in self.keys

    def repair(self, doc: Any, errors: list[Any]) -> bool:
        """Drop what each error points at (for a missing key: its list item); True if anything went."""
        targets = {t for err in errors if (t := self._target(doc, tuple(err["loc"]), err["type"] == "missing"))}
        outermost = [t for t in targets if not any(o != t and t[: len(o)] == o for o in targets)]
        for target in sorted(outermost, key=_sort_key, reverse=True):
            self._delete(doc, target)
        return bool(outermost)

    @staticmethod
    def _target(doc: Any, loc: Loc, missing: bool) -> Loc | None:
        path: list[str | int] = []
        node = doc
        for part in loc:
            if _holds(node, part):
                path.append(part)
                node = node[part]
        if missing:  # a required key cannot be defaulted: the list item holding it goes
            while path and not isinstance(path[-1], int):
                path.pop()
        return tuple(path) or None

    def _delete(self, doc: Any, target: Loc) -> None:
        parent = doc
        for part in target[:-1]:
            parent = parent[part]
        original = self.original(doc, target)
        if isinstance(target[-1], int):
            item = self._as_written(original)
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                self.names.add(item["name"])
            index = original[-1]
            assert isinstance(index, int)
            self.items.setdefault(original[:-1], []).append(index)
        else:
            self.keys.add(original)
        del parent[target[-1]]

    def _as_written(self, loc: Loc) -> Any:
        node: Any = self.raw
        for part in loc:
            node = node[part]
        return node

    def hides(self, problem: str) -> bool:
        """A reference to an item dropped for its own error: already reported."""
        return any(f"{n!r}" in problem for n in self.names) and ("unknown" in problem or "undeclared" in problem)

    def remap(self, problem: str) -> str:
        """A `path: message` line from the repaired config, with list indices of the original file."""
        path, sep, message = problem.partition(": ")
        if not sep or not self.items:
            return problem
        parts: list[str | int] = []
        for segment in path.replace("[", ".[").split("."):
            if segment.startswith("[") and segment.endswith("]") and segment[1:-1].isdigit():
                parts.append(self._original_index(tuple(parts), int(segment[1:-1])))
            elif segment:
                parts.append(segment)
        return describe({"loc": tuple(parts), "type": "", "msg": message})
