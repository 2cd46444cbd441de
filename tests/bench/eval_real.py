"""`quorum eval` on the real-model profile: two llama.cpp servers (Gemma 3 270M, CPU) behind Envoy + Quorum.

Starts the stack of `make run-real` on free ports, runs `quorum eval` on tests/data/real_eval.jsonl with the
solo models and `quorum/fusion` as arms, and writes the report as the `eval-real` section of
docs/benchmarks.md (the plot goes to docs/images/). Needs `make real-install`; without it, it says so and
writes nothing. The 270M base model answers poorly: the section shows the harness, the statistics and the
cost columns on real servers, not a quality claim.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from reportlib import environment_lines, write_section

from extproc.dev.real_servers import config_on_free_ports, unavailable_reason
from extproc.dev.stack import Stack, find_envoy
from extproc.eval.command import add_arguments
from extproc.eval.command import main as run_eval

REPO = Path(__file__).resolve().parents[2]
DATASET = REPO / "tests" / "data" / "real_eval.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/benchmarks.md")
    parser.add_argument("--limit", type=int, help="only the first N prompts (a quick run)")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"eval_real: skipped, real models are not installed: {reason}", file=sys.stderr)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="quorum-eval-real-"))
    stack = Stack(config_on_free_ports(workdir), workdir, real_models=True)
    report_dir = workdir / "report"
    argv = [str(DATASET), "--base-url", f"{stack.envoy_url}/v1", "--arm", "gemma-a", "--arm", "gemma-b"]
    argv += ["--arm", "quorum/fusion", "--grader", "gemma-b", "--config", str(stack.config_path)]
    argv += ["--concurrency", str(args.concurrency), "-o", str(report_dir)]
    if args.limit:
        argv += ["--limit", str(args.limit)]
    eval_args = argparse.ArgumentParser()
    add_arguments(eval_args)
    stack.start(timeout=300)
    try:
        started = time.monotonic()
        code = run_eval(eval_args.parse_args(argv))
        wall = time.monotonic() - started
    finally:
        stack.stop()
    if code != 0:
        return code
    images = Path(args.output).parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    shutil.copy(report_dir / "score_vs_cost.png", images / "eval-real.png")
    report = (
        (report_dir / "report.md").read_text(encoding="utf-8").replace("(score_vs_cost.png)", "(images/eval-real.png)")
    )
    report = report.replace(str(DATASET), DATASET.relative_to(REPO).as_posix())
    body = "\n".join(
        [
            "## `quorum eval` on real models (Gemma 3 270M via llama.cpp, CPU)",
            "",
            environment_lines(find_envoy(), {"llama-cpp-python": "`.venv/real` (make real-install)"}),
            "",
            f"`quorum eval` through Envoy + Quorum (`config/real.yaml`, `make run-real`): arms `gemma-a`, `gemma-b` "
            f"(the same model on two servers, priced differently in the config) and `quorum/fusion` (the default "
            f"decision: confidence gate on gemma-a at mean logprob -0.8, escalating to a fusion with consensus early "
            f"exit), graded by `gemma-b`. Wall time {wall:.0f} s. **The machine was shared with other jobs**, so "
            "latencies are inflated and noisy; the 270M *base* model answers and grades poorly, so the scores say "
            "nothing about fusion's value: what is real here is the harness, the paired statistics, the per-call "
            "costs and the calls saved by the gate and early exit.",
            "",
            report,
        ]
    )
    write_section(args.output, "eval-real", body)
    print(f"eval_real: wrote the eval-real section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
