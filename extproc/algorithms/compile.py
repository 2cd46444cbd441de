"""Turn a decision's `algorithm` section into its algorithm object, or into `path: message` problems.

Importing this module registers the built-in algorithms. An algorithm defined elsewhere (a plugin,
a test) registers itself with `extproc.algorithms.register` and is compiled the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

import extproc.algorithms.confidence
import extproc.algorithms.static
import extproc.fusion.algorithm  # noqa: F401  (registers "fusion")
from extproc.algorithms import ALGORITHMS, Algorithm, AlgorithmKind
from extproc.config import ConfigError, DecisionConfig

__all__ = ["check_algorithm", "compile_algorithm"]


def _kind(d: DecisionConfig, path: str) -> AlgorithmKind:
    kind = ALGORITHMS.get(d.algorithm.type)
    if kind is None:
        valid = ", ".join(sorted(ALGORITHMS))
        raise ConfigError([f"{path}.type: unknown algorithm {d.algorithm.type!r} (registered: {valid})"])
    return kind


def _settings(kind: AlgorithmKind, d: DecisionConfig, path: str) -> Any:
    cfg = d.algorithm
    sections = {**{k: getattr(cfg, k) for k in type(cfg).model_fields if k != "type"}, **(cfg.model_extra or {})}
    stray = [k for k, v in sections.items() if v is not None and k != cfg.type]
    if stray:
        raise ConfigError([f"{path}.{k}: only allowed when algorithm.type is {k}" for k in stray])
    section = sections.get(cfg.type)
    if kind.settings is None or section is None or isinstance(section, kind.settings):
        return section
    try:
        return kind.settings.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(
            [f"{path}.{cfg.type}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        ) from None


def compile_algorithm(d: DecisionConfig, path: str) -> Algorithm:
    kind = _kind(d, path)
    return kind.build(_settings(kind, d, path), d)


def check_algorithm(d: DecisionConfig, base: str, models: list[str]) -> list[str]:
    """Every problem of one decision's algorithm (`base` is `routing.decisions[i]`)."""
    try:
        kind = _kind(d, f"{base}.algorithm")
        settings = _settings(kind, d, f"{base}.algorithm")
    except ConfigError as err:
        return err.problems
    if kind.check is None:
        return []
    return [f"{base}.{p}" for p in kind.check(settings, d, models)]
