"""Checks that need the whole configuration (cross references), and readable pydantic errors."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from extproc.config.base import EXTPROC_CLUSTER
from extproc.config.fallbacks import check_chains
from extproc.config.routing import (
    RuleLeaf,
    RuleNode,
)
from extproc.config.schema import Config
from extproc.config.signals import SignalsConfig


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("leaf", "node") or "[" in part or "(" in part:
            continue  # union tags and validator labels pydantic inserts; not part of the user's path
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(err: Any) -> str:
    path = _dotted(tuple(err["loc"]))
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
        # A list validator names the item ("patterns[2]: ..."): make it part of the path.
        item = re.match(r"(\w+)(\[\d+\]): ", msg)
        if item and path.endswith(f".{item[1]}"):
            path, msg = path + item[2], msg[item.end() :]
    return f"{path}: {msg}" if path else msg


def check_references(cfg: Config) -> list[str]:
    problems: list[str] = []
    models = [m.name for m in cfg.providers.models]
    model_set = set(models)
    routing = cfg.routing

    for i, name in enumerate(models):
        if models.index(name) != i:
            problems.append(f"providers.models[{i}].name: duplicate model name {name!r}")
    clusters: dict[str, str] = {}
    for i, m in enumerate(cfg.providers.models):
        origin = _origin(m.base_url)
        if m.cluster_name == EXTPROC_CLUSTER:
            problems.append(f"providers.models[{i}].cluster: {EXTPROC_CLUSTER!r} is reserved for Quorum itself")
        known = clusters.setdefault(m.cluster_name, origin)
        if known != origin:
            problems.append(f"providers.models[{i}].cluster: cluster {m.cluster_name!r} already points at {known}")
    if (m_default := cfg.providers.defaults.default_model) and m_default not in model_set:
        problems.append(f"providers.defaults.default_model: unknown model {m_default!r} ({_known(models)})")

    aliases = {
        "routing.auto_model_names": routing.auto_model_names,
        "routing.fusion_model_names": routing.fusion_model_names,
    }
    seen_alias: dict[str, str] = {}
    for path, names in aliases.items():
        for j, alias in enumerate(names):
            if alias in model_set:
                problems.append(f"{path}[{j}]: {alias!r} is also a configured model name")
            if alias in seen_alias:
                problems.append(f"{path}[{j}]: {alias!r} is already listed in {seen_alias[alias]}")
            seen_alias[alias] = path

    declared: dict[str, list[str]] = {}
    for kind in SignalsConfig.model_fields:
        names = [s.name for s in getattr(routing.signals, kind)]
        declared[kind] = names
        for j, n in enumerate(names):
            if names.index(n) != j:
                problems.append(f"routing.signals.{kind}[{j}].name: duplicate {kind} signal {n!r}")

    decision_names: set[str] = set()
    for i, d in enumerate(routing.decisions):
        base = f"routing.decisions[{i}]"
        if d.name in decision_names:
            problems.append(f"{base}.name: duplicate decision name {d.name!r}")
        decision_names.add(d.name)
        if d.rules is not None:
            problems.extend(_check_rule(d.rules, f"{base}.rules", declared))
        for j, ref in enumerate(d.model_refs):
            if ref.model not in model_set:
                problems.append(f"{base}.modelRefs[{j}].model: unknown model {ref.model!r} ({_known(models)})")
        from extproc.algorithms.compile import check_algorithm  # imports the algorithms, which import config

        problems.extend(check_algorithm(d, base, models))
    problems.extend(check_chains(cfg))
    return problems


def _check_rule(node: RuleNode | RuleLeaf, path: str, declared: dict[str, list[str]]) -> list[str]:
    if isinstance(node, RuleLeaf):
        if node.type not in declared:
            return [f"{path}.type: unknown signal type {node.type!r} (supported: {', '.join(declared)})"]
        if node.name not in declared[node.type]:
            names = ", ".join(declared[node.type]) or "none"
            return [f"{path}.name: undeclared {node.type} signal {node.name!r} (declared: {names})"]
        return []
    problems: list[str] = []
    for k, child in enumerate(node.conditions):
        problems.extend(_check_rule(child, f"{path}.conditions[{k}]", declared))
    return problems


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def _known(names: list[str]) -> str:
    return "configured: " + ", ".join(names)
