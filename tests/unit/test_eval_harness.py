"""`quorum eval` pieces: dataset validation, statistics, grader prompt/parse/score, cost and calls, the report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from extproc.config.providers import Pricing
from extproc.eval import grader, report
from extproc.eval.cost import Calls, answer_cost, call_cost, calls_from_trace
from extproc.eval.dataset import DatasetError, Item, load_dataset
from extproc.eval.runner import Result
from extproc.eval.stats import bootstrap_mean, paired_bootstrap, percentile


def write_lines(path: Path, *objects: object) -> Path:
    path.write_text("\n".join(json.dumps(o) for o in objects) + "\n", encoding="utf-8")
    return path


# -- dataset -------------------------------------------------------------------------------------------


def test_dataset_reads_prompts_messages_rubrics_and_params(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "d.jsonl",
        {"id": "a", "prompt": "Capital of France?", "reference": "Paris", "stop": ["\n"]},
        {"messages": [{"role": "user", "content": "2+2?"}], "rubric": {"positive": ["says 4"], "negative": ["5"]}},
    )
    first, second = load_dataset(path)
    assert first.messages == [{"role": "user", "content": "Capital of France?"}]
    assert first.params == {"stop": ["\n"]} and first.reference == "Paris"
    assert second.id == "2" and second.question == "2+2?"
    assert second.positive == ["says 4"] and second.negative == ["5"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": "x"}, "needs a 'reference' or a 'rubric'"),
        ({"prompt": "x", "messages": [], "reference": "r"}, "exactly one of"),
        ({"prompt": "x", "reference": "r", "temperature": 1}, "unknown keys"),
        ({"prompt": "x", "rubric": {"positive": [""]}}, "rubric.positive"),
        ({"prompt": "", "reference": "r"}, "non-empty string"),
    ],
)
def test_dataset_rejects_ungradeable_or_malformed_lines(tmp_path: Path, line: dict, message: str) -> None:
    path = write_lines(tmp_path / "d.jsonl", line)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(path)
    assert ":1:" in str(err.value)  # the line number is named


def test_dataset_rejects_bad_json_and_duplicate_ids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "reference": "r"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=":2: not JSON"):
        load_dataset(bad)
    dup = write_lines(
        tmp_path / "dup.jsonl", {"id": 1, "prompt": "x", "reference": "r"}, {"id": 1, "prompt": "y", "reference": "r"}
    )
    with pytest.raises(DatasetError, match="duplicate ids"):
        load_dataset(dup)


# -- statistics ----------------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == pytest.approx(48.0)
    assert percentile([7], 95) == 7


def test_paired_bootstrap_finds_a_known_difference_and_is_seeded() -> None:
    rng = random.Random(42)
    difficulty = [rng.random() for _ in range(200)]  # per-item noise far larger than the difference
    a = [d + 0.1 + rng.gauss(0, 0.05) for d in difficulty]
    b = [d + rng.gauss(0, 0.05) for d in difficulty]
    interval = paired_bootstrap(a, b, seed=7)
    assert interval.low < 0.1 < interval.high and interval.excludes_zero
    assert interval.high - interval.low < 0.05  # pairing cancels the item difficulty
    unpaired = bootstrap_mean(a, seed=7)
    assert unpaired.high - unpaired.low > 0.05  # without pairing, the difficulty spread dominates
    assert paired_bootstrap(a, b, seed=7) == interval  # deterministic for a seed


def test_paired_bootstrap_with_no_difference_straddles_zero() -> None:
    rng = random.Random(1)
    a = [rng.random() for _ in range(100)]
    b = [x + rng.gauss(0, 0.1) for x in a]
    assert not paired_bootstrap(a, b, seed=3).excludes_zero


def test_paired_bootstrap_needs_pairs() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


# -- grader --------------------------------------------------------------------------------------------


ITEM = Item("q", [{"role": "user", "content": "Capital of France?"}], "Paris", ["is one word"], ["names Lyon"])


def test_grader_prompt_numbers_every_criterion_in_the_user_message() -> None:
    text = grader.grader_prompt(ITEM, "Paris.")
    assert "Capital of France?" in text and "Paris." in text
    assert "1. is one word" in text
    assert "2. The answer agrees with the reference answer: Paris" in text
    assert "3. names Lyon" in text and "exactly 3 booleans" in text


@pytest.mark.parametrize(
    "reply",
    [
        '{"met": [true, false, false]}',
        'Sure!\n```json\n{"met": ["yes", "no", "no"]}\n```',
        "1. yes\n2. no\n3: no",
    ],
)
def test_parse_verdicts_accepts_json_fenced_and_numbered_lines(reply: str) -> None:
    assert grader.parse_verdicts(reply, 3) == [True, False, False]


@pytest.mark.parametrize("reply", ['{"met": [true]}', "I think it is fine.", '{"met": [true, "maybe", false]}'])
def test_parse_verdicts_rejects_wrong_counts_and_prose(reply: str) -> None:
    with pytest.raises(grader.GradeParseError):
        grader.parse_verdicts(reply, 3)


def test_score_subtracts_negatives_and_clips() -> None:
    criteria = grader.criteria_for(ITEM)  # positives: rubric + reference; negative: Lyon
    assert grader.score(criteria, [True, True, False]) == 1.0
    assert grader.score(criteria, [True, False, False]) == 0.5
    assert grader.score(criteria, [True, True, True]) == 0.5
    assert grader.score(criteria, [False, False, True]) == 0.0
    only_negative = grader.Criteria([], ["rude", "wrong"])
    assert grader.score(only_negative, [False, True]) == 0.5


def test_response_format_has_llama_cpp_fallback() -> None:
    assert grader.response_format("json_schema", 3)["type"] == "json_schema"
    llama = grader.response_format("json_object", 3)
    assert llama["type"] == "json_object" and llama["schema"]["required"] == ["met"]
    assert llama["schema"]["properties"]["met"]["minItems"] == llama["schema"]["properties"]["met"]["maxItems"] == 3
    assert grader.response_format("none", 3) is None


# -- cost and calls ------------------------------------------------------------------------------------

PRICES = {
    "small": Pricing(prompt_per_1m=1.0, completion_per_1m=2.0),
    "large": Pricing(prompt_per_1m=10.0, completion_per_1m=30.0),
}


def stage(name: str, model: str, prompt: int, completion: int, outcome: str = "ok") -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"stage": name, "model": model, "usage": usage, "outcome": outcome}


def test_solo_cost_uses_the_serving_models_price() -> None:
    body = {"usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}}
    cost, usage = answer_cost(body, "large", PRICES)
    assert cost == pytest.approx((1000 * 10 + 500 * 30) / 1e6)
    assert usage["total_tokens"] == 1500
    assert answer_cost(body, "unpriced", PRICES)[0] == 0.0
    assert call_cost(None, body["usage"]) == 0.0


def test_fusion_cost_prices_every_stage_at_its_own_model() -> None:
    trace = {
        "stages": [stage("panel", "small", 100, 50), stage("panel", "large", 100, 50), stage("judge", "large", 300, 40)]
    }
    cost, _ = answer_cost({"fusion": trace, "usage": {}}, "ignored", PRICES)
    assert cost == pytest.approx((100 * 1 + 50 * 2 + 100 * 10 + 50 * 30 + 300 * 10 + 40 * 30) / 1e6)


def test_calls_from_traces() -> None:
    assert calls_from_trace(None) == Calls(made=1)
    full = {
        "stages": [
            stage("panel", "a", 1, 1),
            stage("panel", "b", 1, 1),
            stage("judge", "c", 1, 1),
            stage("synthesis", "c", 1, 1),
        ]
    }
    assert calls_from_trace(full) == Calls(made=4, full=4)
    early = {"early_exit": "consensus", "stages": full["stages"][:2]}
    assert calls_from_trace(early) == Calls(made=2, early_exit=True, full=4)
    gated = {"gate": {"decision": "answered"}, "stages": [stage("gate", "a", 1, 1)]}
    assert calls_from_trace(gated) == Calls(made=1, gate_answered=True)
    cancelled = {"stages": [*full["stages"], stage("panel", "d", 0, 0, outcome="cancelled")]}
    assert calls_from_trace(cancelled).made == 4


# -- report --------------------------------------------------------------------------------------------


def results_fixture() -> list[Result]:
    out = []
    for i in range(10):
        item = str(i)
        out.append(
            Result("small", item, 0.1 + i / 100, score=0.0 if i % 2 else 0.5, cost=0.001, usage={"total_tokens": 10})
        )
        out.append(Result("large", item, 0.5, score=1.0 if i < 8 else 0.0, cost=0.01, usage={"total_tokens": 20}))
        calls = Calls(made=2, early_exit=True, full=4) if i < 5 else Calls(made=4, full=4)
        out.append(Result("quorum/fusion", item, 1.0, score=1.0, cost=0.02, calls=calls))
    out.append(Result("quorum/fusion", "10", 0.0, error="HTTP 502: boom", score=0.0))
    return out


def test_summary_baseline_is_the_best_solo_arm_and_deltas_are_paired() -> None:
    summaries, baseline = report.summarize(results_fixture(), seed=0)
    by_arm = {s.arm: s for s in summaries}
    assert baseline == "large"  # quorum/fusion scores higher but is not a solo arm
    assert by_arm["large"].delta is None
    fusion = by_arm["quorum/fusion"]
    assert fusion.delta.estimate == pytest.approx(0.2)  # paired over the 10 items both arms graded
    assert fusion.errors == 1 and fusion.early_exits == 5 and fusion.calls_saved == 10
    assert fusion.calls_per_request == 3.0 and not fusion.solo
    assert by_arm["small"].calls_saved is None and by_arm["small"].solo
    assert by_arm["small"].latency_p50_s == pytest.approx(0.145)
    assert report.summarize(results_fixture(), baseline="small")[1] == "small"


def test_report_renders_table_json_markdown_and_png(tmp_path: Path) -> None:
    results = results_fixture()
    summaries, baseline = report.summarize(results)
    text = report.table(summaries, baseline)
    assert "large (baseline)" in text and "quorum/fusion" in text and "score [95% CI]" in text
    doc = json.loads(report.to_json(summaries, baseline, results, {"dataset": "d.jsonl"}))
    assert doc["baseline"] == "large" and len(doc["results"]) == len(results)
    md = report.markdown(summaries, baseline, {"dataset": "d.jsonl", "items": 10}, "plot.png")
    assert md.count("\n| ") == 4 and "![score against cost per arm](plot.png)" in md
    report.plot_png(summaries, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_concurrent_grades_both_retry_in_llama_cpp_form_after_json_schema_fails() -> None:
    """Two grades in flight when the server rejects json_schema: both are retried as json_object
    (the second one's failure must not be taken as a failure of the json_object form)."""
    import asyncio

    import httpx

    from extproc.eval.dataset import Item
    from extproc.eval.runner import Evaluator, Result, Settings

    async def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        await asyncio.sleep(0.01)  # both first attempts are in flight together
        if body["response_format"]["type"] == "json_schema":
            return httpx.Response(500, json={"error": {"message": "Input should be 'text' or 'json_object'"}})
        content = json.dumps({"met": [True]})
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}], "usage": {}})

    settings = Settings(base_url="http://grader/v1", arms=["a"], grader_model="g", concurrency=4)
    async with httpx.AsyncClient(base_url=settings.base_url, transport=httpx.MockTransport(server)) as client:
        evaluator = Evaluator(settings, {}, client)
        item = Item("q", [{"role": "user", "content": "capital of France?"}], reference="Paris")
        results = [Result("a", "q", 0.1, answer="Paris"), Result("a", "q", 0.1, answer="Paris")]
        await asyncio.gather(*(evaluator.grade(item, r) for r in results))
    assert [(r.score, r.grade_error) for r in results] == [(1.0, None), (1.0, None)]
    assert evaluator.grader_format == "json_object"
