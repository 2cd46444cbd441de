"""Which models Envoy may route on its own (the fast path), decided from the configuration alone.

A request that names a fast-path model never reaches Quorum, so a model qualifies only when nothing
Quorum does in Python applies to requests naming it: no guard, no access rule, no usage
accounting, no API key to inject. Everything else (aliases, unknown names, invalid JSON, bodies
over the limit, models with policy) still goes through Quorum.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from extproc.config import Config, ModelConfig

# What a request loses on the fast path; `quorum validate` prints it.
SKIPPED = (
    "body validation and OpenAI-shaped errors (the provider's own errors come back)",
    "Quorum spans, metrics and access-log line (Envoy's own stats, access log and tracing remain)",
    "x-quorum-signals / x-quorum-confidence debug headers",
    "the stream_options.include_usage rewrite",
)


# Each fast-path route matches only while this Envoy runtime key (per model) is at its default 100 %:
# a Quorum reload sets it to 0 for a model that now needs Quorum (extproc/envoy_runtime.py).
RUNTIME_PREFIX = "quorum.fast_path."


def runtime_key(model: str) -> str:
    return f"{RUNTIME_PREFIX}{model}"


@dataclass(frozen=True, slots=True)
class FastPathPlan:
    models: tuple[str, ...]  # routed by Envoy alone
    excluded: dict[str, tuple[str, ...]]  # opted-in models kept on Quorum, with the reasons


def blockers(config: Config, model: ModelConfig) -> tuple[str, ...]:
    """Why requests naming `model` need Quorum; empty when Envoy can route them alone."""
    reasons = [f"guard {g.name}" for g in config.guards if not g.applies_to or model.name in g.applies_to]
    reasons += [f"access rule {r.name}" for r in config.access.rules if model.name in r.models]
    if config.observability.usage.enabled:
        reasons.append("usage accounting (observability.usage)")
    if model.api_key_env:
        reasons.append("API key injection (api_key_env)")
    if model.fallbacks:
        reasons.append("its fallbacks (a fallback chain is Quorum's route)")
    if "chat" not in model.endpoints:
        reasons.append("it does not serve chat completions (endpoints), which Quorum answers with a 404")
    return tuple(reasons)


def plan(config: Config) -> FastPathPlan:
    chosen: list[str] = []
    excluded: dict[str, tuple[str, ...]] = {}
    for model in config.providers.models:
        opted_in = config.envoy.fast_path if model.fast_path is None else model.fast_path
        if not opted_in:
            continue
        reasons = blockers(config, model)
        if reasons:
            excluded[model.name] = reasons
        else:
            chosen.append(model.name)
    return FastPathPlan(tuple(chosen), excluded)


def describe(config: Config) -> list[str]:
    """Lines for `quorum validate`."""
    p = plan(config)
    if not p.models and not p.excluded:
        return []  # off: nothing opted in
    lines = [f"fast path (Envoy routes these by name, no Quorum): {', '.join(p.models) or 'none'}"]
    if p.models:
        lines += ["  such requests skip:"] + [f"    - {item}" for item in SKIPPED]
    for name, reasons in p.excluded.items():
        lines.append(f"  {name}: kept on Quorum because of {'; '.join(reasons)}")
    return lines


def kept_on_quorum(config: Config) -> tuple[str, ...]:
    """Every configured model `config` does not fast-path (policy, opted out, or never opted in)."""
    fast = plan(config).models
    return tuple(m.name for m in config.providers.models if m.name not in fast)


def in_use(config: Config) -> bool:
    """Whether `config` opts any model into the fast path (taken or kept off by policy)."""
    chosen = plan(config)
    return bool(chosen.models or chosen.excluded)


def leaving(running: Config, candidate: Config) -> tuple[str, ...]:
    """Fast-path models of `running` that `candidate` keeps on Quorum (policy added, opted out, removed)."""
    after = plan(candidate).models
    return tuple(name for name in plan(running).models if name not in after)


def reload_warnings(running: Config, candidate: Config, taken_off: Collection[str] = ()) -> list[str]:
    """What a Quorum reload did not change on its own. A model that gained policy keeps its fast-path
    route in an Envoy rendered from the previous config; `taken_off` are the ones that running Envoy
    was told to stop routing (extproc/envoy_runtime.py), the others stay uncovered until Envoy's config
    is rendered again. A model that may newly take the fast path needs that re-render too."""
    after = plan(candidate)
    warnings = [
        f"{name}: now needs Quorum ({'; '.join(after.excluded.get(name, ('it left the fast path',)))}), but an Envoy "
        "rendered from the previous config still routes it without Quorum: run `quorum envoy-config` (or "
        "`quorum deploy-manifests`) and reload Envoy"
        for name in leaving(running, candidate)
        if name not in taken_off
    ]
    gained = [name for name in after.models if name not in plan(running).models]
    if gained:
        warnings.append(f"{', '.join(gained)}: may take the fast path once the Envoy config is rendered again")
    return warnings
