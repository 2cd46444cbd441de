"""`quorum signals explain CONFIG`: what the domain classifier calibrated from a config's examples.

Per scope, per domain: the leave-one-out scores of its examples (each against the domain without
it), how many background phrases were dropped because they are about this domain, and the examples
that would not come back to their own domain if they were requests: taken by another domain
(reword or add examples, or merge the two domains) or by the background (add examples closer to
what users ask). Loads the domain model, as `quorum serve` does; needs no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from extproc.config import Config
from extproc.semantic.domains import (
    BACKGROUND_K,
    BACKGROUND_MARGIN,
    DROP_QUANTILE,
    TEMPERATURE,
    DomainModel,
    DomainReport,
)

__all__ = ["explain_domains", "format_reports", "run"]


async def explain_domains(config: Config, env: Mapping[str, str]) -> dict[str, tuple[DomainModel, list[DomainReport]]]:
    """{scope: (the calibrated model, its per-domain reports)} for every declared domain signal."""
    from extproc.runtime import make_engine
    from extproc.signals.semantic import SemanticContext, build_domain_model

    domains = config.routing.signals.domain
    if not domains:
        return {}
    cfg = config.routing.embedding
    engine = make_engine(cfg.model_copy(update={"model": cfg.domain_engine_model}), env)
    ctx = SemanticContext(engine)
    out = {}
    try:
        for scope in dict.fromkeys(d.scope for d in domains):
            model = await build_domain_model([d for d in domains if d.scope == scope], ctx)
            out[scope] = (model, model.explain())
    finally:
        close = getattr(engine, "aclose", None)
        if close is not None:
            await close()
    return out


def format_reports(config: Config, explained: Mapping[str, tuple[DomainModel, list[DomainReport]]]) -> str:
    if not explained:
        return "no domain signals declared"
    cfg = config.routing.embedding
    lines = [
        f"domain model: {cfg.domain_engine_model} ({cfg.backend}); background: mean of the {BACKGROUND_K} nearest "
        f"phrases {BACKGROUND_MARGIN:+.2f}; confidence: softmax at temperature {TEMPERATURE}",
    ]
    if cfg.domain_first_stage:
        lines.append(
            f"cascade: {cfg.domain_first_stage} classifies first (same method, its own calibration) and answers "
            f"alone when it accepts a domain with confidence >= {cfg.domain_first_stage_confidence:g}; "
            f"the calibration below is {cfg.domain_engine_model}'s, which decides everything else"
        )
    for scope, (model, reports) in explained.items():
        lines.append(
            f"\nscope {scope}: {len(model.names)} domains, {len(model.background)} background phrases kept "
            f"(dropped those scoring >= {model.drop_cutoff:.3f} for a domain: the {DROP_QUANTILE:.0%} quantile "
            "of the examples' leave-one-out scores)"
        )
        for r in reports:
            accept = "score >= background level"
            if r.threshold is not None:
                accept = f"score >= threshold {r.threshold:g}"
            if r.margin is not None:
                accept += f", lead over the runner-up >= margin {r.margin:g}"
            loo = ", ".join(f"{s:.2f}" for s in r.leave_one_out)
            lines.append(f"  {r.name}: {r.examples} examples; accepts when {accept}")
            lines.append(f"    leave-one-out scores: {loo}; background phrases dropped for it: {r.background_dropped}")
            for text, other, own, theirs in r.confused:
                lines.append(f"    confused: {text!r} is nearer {other} ({theirs:.2f}) than {r.name} ({own:.2f})")
            for text, own, level in r.as_background:
                lines.append(f"    background: {text!r} scores {own:.2f}, under the background level {level:.2f}")
            if not r.confused and not r.as_background:
                lines.append("    every example comes back to this domain")
    return "\n".join(lines)


def run(config: Config, env: Mapping[str, str]) -> str:
    return format_reports(config, asyncio.run(explain_domains(config, env)))
