"""`quorum eval`: the command line around the runner and the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from extproc.config.providers import Pricing
from extproc.eval import report
from extproc.eval.dataset import DatasetError, load_dataset
from extproc.eval.runner import Progress, Settings, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="JSONL: prompt|messages, reference and/or rubric per line")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1", help="the gateway's OpenAI base URL")
    parser.add_argument("--arm", action="append", required=True, dest="arms", help="a model or alias (repeat)")
    parser.add_argument("--grader", required=True, help="the grading model, also called through the gateway")
    parser.add_argument("--config", "-c", type=Path, help="the Quorum config whose model pricing gives the cost")
    parser.add_argument("--api-key-env", help="environment variable holding the gateway's API key")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256, help="answer cap per request (items may override)")
    parser.add_argument("--limit", type=int, help="only the first N items")
    parser.add_argument("--baseline", help="the arm deltas are measured against (default: the best solo arm)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--grader-format", choices=["auto", "json_schema", "json_object", "none"], default="auto")
    parser.add_argument("--output-dir", "-o", type=Path, help="write report.json, report.md and score_vs_cost.png")
    parser.add_argument("--no-progress", action="store_true")


def prices_from(config_path: Path | None) -> dict[str, Pricing | None]:
    if config_path is None:
        return {}
    from extproc.config import load_config

    models = load_config(config_path).providers.models
    return {m.name: m.pricing for m in models} | {m.upstream_model: m.pricing for m in models}


def main(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        items = load_dataset(args.dataset, args.limit)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.baseline and args.baseline not in args.arms:
        print(f"error: --baseline {args.baseline} is not one of the arms", file=sys.stderr)
        return 2
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        print(f"error: environment variable {args.api_key_env} is not set", file=sys.stderr)
        return 2
    settings = Settings(
        base_url=args.base_url,
        arms=list(dict.fromkeys(args.arms)),
        grader_model=args.grader,
        api_key=api_key,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        timeout=args.timeout,
        grader_format=args.grader_format,
    )
    prices = prices_from(args.config)
    progress = None if args.no_progress else Progress(2 * len(items) * len(settings.arms))
    results = asyncio.run(run(settings, items, prices, progress))
    summaries, baseline = report.summarize(results, args.baseline, seed=args.seed)
    print(report.table(summaries, baseline))
    meta = {"dataset": str(args.dataset), "items": len(items), "grader": args.grader, "seed": args.seed}
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        report.plot_png(summaries, args.output_dir / "score_vs_cost.png")
        (args.output_dir / "report.json").write_text(report.to_json(summaries, baseline, results, meta))
        (args.output_dir / "report.md").write_text(report.markdown(summaries, baseline, meta, "score_vs_cost.png"))
        print(f"wrote {args.output_dir}/report.json, report.md, score_vs_cost.png")
    failed = sum(s.errors for s in summaries)
    if failed:
        print(f"warning: {failed} requests failed (scored 0); see report.json for the errors", file=sys.stderr)
    return 0
