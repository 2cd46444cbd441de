"""Fallback chains: the order in which Envoy tries models for one routed request.

A decision with several `modelRefs` tries them in order; a single model (a one-model decision, the
default model, or a model named by the client) tries its own `fallbacks:` after itself. Envoy does
the failing over (see extproc.bootstrap.fallbacks); Quorum only names the chain in the route header.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from extproc.config.providers import ModelConfig
from extproc.config.schema import Config

CHAIN_SEPARATOR = ">"


def chain_of(models: dict[str, ModelConfig], names: Sequence[str]) -> tuple[str, ...]:
    if len(names) > 1:
        return tuple(dict.fromkeys(names))
    first = names[0]
    model = models.get(first)
    return tuple(dict.fromkeys((first, *model.fallbacks))) if model is not None else (first,)


def chain_key(chain: Sequence[str]) -> str:
    """The route header value that selects a chain (a lone model's is its name)."""
    return CHAIN_SEPARATOR.join(chain)


def routed_chains(cfg: Config) -> dict[str, tuple[tuple[str, ...], str]]:
    """Every chain of two or more models a routed request can take: key -> (chain, where it is configured)."""
    models = {m.name: m for m in cfg.providers.models}
    found: dict[str, tuple[tuple[str, ...], str]] = {}
    for i, m in enumerate(cfg.providers.models):
        if m.fallbacks:
            chain = chain_of(models, [m.name])
            found.setdefault(chain_key(chain), (chain, f"providers.models[{i}].fallbacks"))
    for i, d in enumerate(cfg.routing.decisions):
        if d.algorithm.type == "static" and d.model_refs:
            chain = chain_of(models, [r.model for r in d.model_refs])
            if len(chain) > 1:
                found.setdefault(chain_key(chain), (chain, f"routing.decisions[{i}].modelRefs"))
    return found


def check_chains(cfg: Config) -> list[str]:
    """Models in one chain share an Envoy cluster's transport, path prefix and credentials."""
    models = {m.name: m for m in cfg.providers.models}
    problems: list[str] = []
    for i, m in enumerate(cfg.providers.models):
        for j, name in enumerate(m.fallbacks):
            if name not in models:
                problems.append(f"providers.models[{i}].fallbacks[{j}]: unknown model {name!r}")
            elif name == m.name:
                problems.append(f"providers.models[{i}].fallbacks[{j}]: a model cannot fall back to itself")
    for chain, where in routed_chains(cfg).values():
        members = [models[n] for n in chain if n in models]
        for what, value in (("scheme", _scheme), ("base_url path", _path), ("api_key_env", _key)):
            if len({value(m) for m in members}) > 1:
                problems.append(
                    f"{where}: models {', '.join(chain)} differ in {what}; models one request may fall back "
                    "between must share it (Envoy fails over inside one cluster)"
                )
    return problems


def _scheme(m: ModelConfig) -> str:
    return urlsplit(m.base_url).scheme


def _path(m: ModelConfig) -> str:
    return urlsplit(m.base_url).path.rstrip("/")


def _key(m: ModelConfig) -> str:
    return m.api_key_env or ""
