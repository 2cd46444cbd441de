"""`quorum eval` end to end: fake backends behind Envoy + Quorum, the grader scripted per answering model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import LARGE_KEY, write_config

from extproc.dev.stack import Stack

pytestmark = pytest.mark.integration

# The grader (demo-coder) passes answers from demo-large, fails demo-small's; fusion answers are synthesised
# by demo-large, so they pass too. First matching key wins.
GRADER_SCRIPT = {
    "Answer:\n[demo-large]": '{"met": [true]}',
    "Answer:\n[demo-small]": '{"met": [false]}',
    "You grade an answer": '{"met": [true]}',
}
PRICES = {"demo-small": (1.0, 2.0), "demo-coder": (0.5, 0.5), "demo-large": (10.0, 30.0)}


@pytest.fixture(scope="module")
def eval_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("eval")
    path, _ = write_config(workdir)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for model in raw["providers"]["models"]:
        prompt, completion = PRICES[model["name"]]
        model["pricing"] = {"prompt_per_1m": prompt, "completion_per_1m": completion}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    script = workdir / "script.json"
    script.write_text(json.dumps(GRADER_SCRIPT), encoding="utf-8")
    os.environ["QUORUM_TEST_LARGE_KEY"] = LARGE_KEY
    try:
        with Stack(path, workdir, fake_script=script) as running:
            yield running
    finally:
        os.environ.pop("QUORUM_TEST_LARGE_KEY", None)


def test_quorum_eval_through_envoy(eval_stack: Stack, tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    # "compare" matches the test config's fusion decision, which quorum/fusion needs.
    lines = [
        {"id": "1", "prompt": "compare: What is 2+2?", "reference": "4"},
        {"id": "2", "prompt": "compare: Name a primary colour.", "reference": "red"},
        # The panel echoes without a prefix: identical answers, so the fusion exits early (2 calls, not 4).
        {"id": "3", "prompt": "compare: Say hi. [[fake:plain]]", "reference": "hi"},
    ]
    dataset.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    out = tmp_path / "report"
    argv = [sys.executable, "-m", "extproc", "eval", str(dataset), "--base-url", f"{eval_stack.envoy_url}/v1"]
    argv += ["--arm", "demo-small", "--arm", "demo-large", "--arm", "quorum/fusion", "--grader", "demo-coder"]
    argv += ["--config", str(eval_stack.config_path), "--concurrency", "3", "--output-dir", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "demo-large (baseline)" in done.stdout and "3/18" not in done.stdout
    assert "18/18" in done.stderr  # the progress bar reached the end: 3 arms x 3 items x (answer + grade)

    doc = json.loads((out / "report.json").read_text())
    arms = {a["arm"]: a for a in doc["arms"]}
    assert doc["baseline"] == "demo-large"
    assert arms["demo-large"]["score"]["estimate"] == 1.0
    small = arms["demo-small"]
    assert small["score"]["estimate"] == pytest.approx(1 / 3)  # item 3's plain echo has no prefix: passes
    assert small["delta"]["estimate"] == pytest.approx(-2 / 3)
    assert small["cost_per_request"] < arms["demo-large"]["cost_per_request"]  # priced per model from the config
    fusion = arms["quorum/fusion"]
    assert not fusion["solo"] and fusion["errors"] == 0
    assert fusion["early_exits"] == 1 and fusion["calls_saved"] == 2
    assert fusion["calls_per_request"] == pytest.approx((4 + 4 + 2) / 3)
    assert fusion["cost_per_request"] > arms["demo-large"]["cost_per_request"]  # a panel plus judge and synthesis
    for result in doc["results"]:
        assert result["error"] is None and result["grade_error"] is None
    assert (out / "score_vs_cost.png").read_bytes()[:4] == b"\x89PNG"
    assert "| quorum/fusion |" in (out / "report.md").read_text()


def test_quorum_eval_rejects_a_bad_dataset(tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text('{"prompt": "no reference"}\n', encoding="utf-8")
    argv = [sys.executable, "-m", "extproc", "eval", str(dataset), "--arm", "x", "--grader", "y"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "needs a 'reference' or a 'rubric'" in done.stderr
