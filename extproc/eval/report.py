"""Per-arm summaries (score with intervals, cost, latency, calls) and their renderings: table, JSON, markdown, PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from extproc.eval.runner import Result
from extproc.eval.stats import Interval, bootstrap_mean, mean, paired_bootstrap, percentile


@dataclass
class ArmSummary:
    arm: str
    items: int
    graded: int
    errors: int
    score: Interval
    delta: Interval | None  # mean(score - baseline score) over items both graded, 95% paired bootstrap
    cost_total: float
    cost_per_request: float
    tokens_per_request: float
    latency_p50_s: float
    latency_p95_s: float
    calls_per_request: float
    solo: bool
    early_exits: int
    gate_answered: int
    calls_saved: int | None  # against a full deliberation of every request; None when no request showed its size


def summarize(results: Sequence[Result], baseline: str | None = None, seed: int = 0) -> tuple[list[ArmSummary], str]:
    """Summaries in arm order and the baseline arm: the given one, else the best-scoring solo arm."""
    arms = list(dict.fromkeys(r.arm for r in results))
    by_arm = {arm: {r.item: r for r in results if r.arm == arm} for arm in arms}
    solo = {arm: all(r.calls.full is None and not r.calls.gate_answered for r in by_arm[arm].values()) for arm in arms}
    scores = {arm: [r.score for r in by_arm[arm].values() if r.score is not None] for arm in arms}
    if baseline is None:
        candidates = [arm for arm in arms if solo[arm]] or arms
        baseline = max(candidates, key=lambda arm: mean(scores[arm]) if scores[arm] else -1.0)
    summaries = []
    for arm in arms:
        rows = list(by_arm[arm].values())
        ok = [r for r in rows if r.error is None]
        paired = [
            (r.score, by_arm[baseline][r.item].score)
            for r in rows
            if r.score is not None and r.item in by_arm[baseline] and by_arm[baseline][r.item].score is not None
        ]
        delta = None
        if arm != baseline and paired:
            delta = paired_bootstrap([a for a, _ in paired], [b for _, b in paired], seed=seed)
        full = max((r.calls.full for r in rows if r.calls.full is not None), default=None)
        saved = None if full is None else sum(max(0, full - r.calls.made) for r in ok)
        latencies = [r.latency_s for r in ok]
        summaries.append(
            ArmSummary(
                arm=arm,
                items=len(rows),
                graded=len(scores[arm]),
                errors=len(rows) - len(ok),
                score=bootstrap_mean(scores[arm], seed=seed),
                delta=delta,
                cost_total=sum(r.cost for r in rows),
                cost_per_request=mean([r.cost for r in ok]) if ok else 0.0,
                tokens_per_request=mean([r.usage.get("total_tokens", 0) for r in ok]) if ok else 0.0,
                latency_p50_s=percentile(latencies, 50),
                latency_p95_s=percentile(latencies, 95),
                calls_per_request=mean([r.calls.made for r in ok]) if ok else 0.0,
                solo=solo[arm],
                early_exits=sum(r.calls.early_exit for r in ok),
                gate_answered=sum(r.calls.gate_answered for r in ok),
                calls_saved=saved,
            )
        )
    return summaries, baseline


def _interval(iv: Interval | None, signed: bool = False) -> str:
    if iv is None:
        return "-"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"{fmt.format(iv.estimate)} [{fmt.format(iv.low)}, {fmt.format(iv.high)}]"


HEADERS = ["arm", "score [95% CI]", "vs baseline [95% CI]", "cost/req", "tokens/req", "p50 s", "p95 s",
           "calls/req", "early exit", "gated", "calls saved", "errors", "ungraded"]  # fmt: skip


def rows(summaries: Sequence[ArmSummary], baseline: str) -> list[list[str]]:
    out = []
    for s in summaries:
        out.append(
            [
                s.arm + (" (baseline)" if s.arm == baseline else ""),
                _interval(s.score),
                _interval(s.delta, signed=True),
                f"{s.cost_per_request:.6f}",
                f"{s.tokens_per_request:.0f}",
                f"{s.latency_p50_s:.2f}",
                f"{s.latency_p95_s:.2f}",
                f"{s.calls_per_request:.2f}",
                str(s.early_exits),
                str(s.gate_answered),
                "-" if s.calls_saved is None else str(s.calls_saved),
                str(s.errors),
                str(s.items - s.graded),
            ]
        )
    return out


def table(summaries: Sequence[ArmSummary], baseline: str) -> str:
    body = rows(summaries, baseline)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def to_json(summaries: Sequence[ArmSummary], baseline: str, results: Sequence[Result], meta: dict[str, Any]) -> str:
    doc = {
        **meta,
        "baseline": baseline,
        "arms": [asdict(s) for s in summaries],
        "results": [{**asdict(r), "calls": asdict(r.calls)} for r in results],
    }
    return json.dumps(doc, indent=2, default=str)


def markdown(summaries: Sequence[ArmSummary], baseline: str, meta: dict[str, Any], plot: str | None) -> str:
    body = rows(summaries, baseline)
    lines = [
        f"Dataset `{meta.get('dataset')}` ({meta.get('items')} items), grader `{meta.get('grader')}`, "
        f"baseline `{baseline}` (the best solo arm unless chosen). Scores are in [0, 1]; intervals are 95% "
        f"bootstrap ({meta.get('resamples', 2000)} resamples, seed {meta.get('seed', 0)}), paired per item against "
        "the baseline. Cost is tokens x the pricing in the Quorum config, summed per model call for Quorum arms.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
        *("| " + " | ".join(r) + " |" for r in body),
    ]
    if plot:
        lines += ["", f"![score against cost per arm]({plot})"]
    return "\n".join(lines) + "\n"


def plot_png(summaries: Sequence[ArmSummary], path: Path) -> None:
    """Score (with its interval) against cost per request, one labelled point per arm."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for s in summaries:
        err = [[max(0.0, s.score.estimate - s.score.low)], [max(0.0, s.score.high - s.score.estimate)]]
        ax.errorbar([s.cost_per_request], [s.score.estimate], yerr=err, fmt="o", capsize=4)
        ax.annotate(s.arm, (s.cost_per_request, s.score.estimate), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("cost per request")
    ax.set_ylabel("score (95% CI)")
    ax.set_title("quorum eval: score against cost")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
