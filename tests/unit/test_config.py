"""The YAML configuration: the demo shape, value syntaxes, and every problem named by its dotted path."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.cli import main
from extproc.config import ConfigError, load_config, parse_config
from extproc.runtime import build_runtime

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo.yaml"
DEMO_MODELS = "configured: demo-small, demo-coder, demo-large"

Raw = dict[str, Any]


def demo_raw() -> Raw:
    return yaml.safe_load(DEMO.read_text(encoding="utf-8"))


def problems_of(raw: Raw | str) -> list[str]:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return info.value.problems


def assert_problem(problems: list[str], path: str, *fragments: str) -> None:
    """One problem is reported at exactly `path` and its message contains every fragment."""
    at_path = [p for p in problems if p.startswith(f"{path}: ")]
    assert at_path, f"no problem at {path!r} in {problems}"
    assert any(all(f in p for f in fragments) for p in at_path), f"{fragments} not in {at_path}"


def minimal(**routing: Any) -> Raw:
    raw: Raw = {"providers": {"models": [{"name": "m", "base_url": "http://127.0.0.1:9000/v1"}]}}
    if routing:
        raw["routing"] = routing
    return raw


# ---------------------------------------------------------------- the demo config and its shape


def test_demo_config_parses() -> None:
    config = load_config(DEMO)
    assert [m.name for m in config.providers.models] == ["demo-small", "demo-coder", "demo-large"]
    assert [m.cluster_name for m in config.providers.models] == ["demo_small", "demo_coder", "demo_large"]
    assert config.model("demo-coder").upstream_model == "coder-v1"
    assert config.providers.defaults.default_model == "demo-small"
    assert config.server.max_body_bytes == 8388608
    assert [d.name for d in config.routing.decisions] == [
        "coding",
        "premium",
        "deliberate",
        "legal-or-medical",
        "hard-reasoning",
    ]
    assert [s.name for s in config.routing.signals.domain] == ["law", "medicine", "finance"]
    assert [s.name for s in config.routing.signals.complexity] == ["hard"]
    assert [s.name for s in config.routing.signals.keyword] == ["code", "compare"]
    assert config.routing.signals.keyword[0].keywords == ["python", "stack trace"]
    assert config.routing.signals.context[0].min_tokens == 4000
    assert config.routing.signals.header[0].values == ["gold"]


# The decisions block of config/demo.yaml, verbatim: this exact shape must be accepted as is.
DEMO_DECISIONS_SHAPE = """
providers:
  models:
    - {name: demo-small, base_url: http://127.0.0.1:9001/v1}
    - {name: demo-coder, base_url: http://127.0.0.1:9002/v1}
    - {name: demo-large, base_url: http://127.0.0.1:9003/v1}
routing:
  signals:
    keyword:
      - {name: code, keywords: [python, "stack trace"], operator: any, case_sensitive: false}
      - {name: compare, keywords: [compare, "pros and cons"], operator: any}
    regex: [{name: ticket, patterns: ["[A-Z]+-[0-9]+"]}]
    context: [{name: long_prompt, min_tokens: 4000}]
    header: [{name: premium, header: x-user-tier, values: [gold]}]
    domain:
      - {name: law, examples: [a]}
      - {name: medicine, examples: [b]}
    complexity: [{name: hard, hard: [c], easy: [d]}]
  decisions:
    - name: coding
      priority: 100
      rules: {operator: AND, conditions: [{type: keyword, name: code}]}
      modelRefs: [{model: demo-coder}]
    - name: premium
      priority: 150
      rules: {operator: OR, conditions: [{type: header, name: premium}, {type: regex, name: ticket}]}
      modelRefs: [{model: demo-large}]
    - name: deliberate
      priority: 200
      rules: {operator: OR, conditions: [{type: keyword, name: compare}, {type: context, name: long_prompt}]}
      algorithm: {type: fusion, fusion: {model: demo-large, analysis_models: [demo-small, demo-coder]}}
    - name: legal-or-medical
      priority: 120
      rules: {operator: OR, conditions: [{type: domain, name: law}, {type: domain, name: medicine}]}
      modelRefs: [{model: demo-large}]
    - name: hard-reasoning
      priority: 90
      rules: {type: complexity, name: hard}
      modelRefs: [{model: demo-large}]
"""


def test_demo_decision_shape_is_accepted_as_is() -> None:
    config = parse_config(DEMO_DECISIONS_SHAPE)
    coding, premium, deliberate, _legal_or_medical, _hard_reasoning = config.routing.decisions

    assert (coding.priority, coding.algorithm.type) == (100, "static")
    assert [r.model for r in coding.model_refs] == ["demo-coder"]
    assert coding.rules is not None and coding.rules.operator == "AND"
    assert [(c.type, c.name) for c in coding.rules.conditions] == [("keyword", "code")]

    assert premium.rules is not None and premium.rules.operator == "OR"
    assert [(c.type, c.name) for c in premium.rules.conditions] == [("header", "premium"), ("regex", "ticket")]

    assert deliberate.algorithm.type == "fusion"
    fusion = deliberate.algorithm.fusion
    assert fusion is not None
    assert fusion.model == "demo-large"
    assert fusion.analysis_models == ["demo-small", "demo-coder"]
    assert deliberate.model_refs == []


def test_demo_file_decisions_match_the_canonical_shape() -> None:
    """config/demo.yaml keeps the canonical shape: parsed, its decisions equal the verbatim copy above."""
    assert load_config(DEMO).routing.decisions == parse_config(DEMO_DECISIONS_SHAPE).routing.decisions


@pytest.mark.parametrize(
    ("written", "normalized"),
    [("AND", "AND"), ("and", "AND"), ("Or", "OR"), ("not", "NOT")],
)
def test_rule_operators_are_case_insensitive(written: str, normalized: str) -> None:
    conditions = [{"type": "keyword", "name": "k"}]
    raw = minimal(
        signals={"keyword": [{"name": "k", "keywords": ["x"]}]},
        decisions=[
            {"name": "d", "rules": {"operator": written, "conditions": conditions}, "modelRefs": [{"model": "m"}]}
        ],
    )
    assert parse_config(json.dumps(raw)).routing.decisions[0].rules.operator == normalized


@pytest.mark.parametrize(
    ("written", "normalized"),
    [("any", "any"), ("OR", "any"), ("and", "all"), ("ALL", "all"), ("NOR", "none"), ("none", "none")],
)
def test_keyword_operator_spellings(written: str, normalized: str) -> None:
    raw = minimal(signals={"keyword": [{"name": "k", "keywords": ["x"], "operator": written}]})
    assert parse_config(json.dumps(raw)).routing.signals.keyword[0].operator == normalized


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(None, id="no-rules"),
        pytest.param({"operator": "AND", "conditions": []}, id="empty-and"),
        pytest.param({"type": "keyword", "name": "k"}, id="bare-leaf"),
        pytest.param(
            {
                "operator": "AND",
                "conditions": [
                    {"operator": "OR", "conditions": [{"type": "keyword", "name": "k"}]},
                    {"operator": "NOT", "conditions": [{"type": "keyword", "name": "k"}]},
                ],
            },
            id="nested",
        ),
    ],
)
def test_rule_tree_forms_are_accepted(rules: Raw | None) -> None:
    decision: Raw = {"name": "d", "modelRefs": [{"model": "m"}]}
    if rules is not None:
        decision["rules"] = rules
    raw = minimal(signals={"keyword": [{"name": "k", "keywords": ["x"]}]}, decisions=[decision])
    assert parse_config(json.dumps(raw)).routing.decisions[0].name == "d"


def test_fusion_panel_may_come_from_model_refs() -> None:
    raw = demo_raw()
    raw["routing"]["decisions"][2] = {
        "name": "deliberate",
        "modelRefs": [{"model": "demo-small"}, {"model": "demo-coder"}],
        "algorithm": {"type": "fusion", "fusion": {"min_successful_responses": 2}},
    }
    assert parse_config(json.dumps(raw)).routing.decisions[2].algorithm.fusion.min_successful_responses == 2


def test_models_may_share_a_cluster_on_the_same_origin() -> None:
    raw = demo_raw()
    raw["providers"]["models"][1].update(cluster="demo_small", base_url="http://127.0.0.1:9001/other/v1", fallbacks=[])
    config = parse_config(json.dumps(raw))
    assert config.model("demo-coder").cluster_name == "demo_small"


# ---------------------------------------------------------------- durations and token counts


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), (5, 5.0), (0.5, 0.5), ("1.5", 1.5), ("2m", 120.0), (" 30s ", 30.0)],
)
def test_durations(value: Any, seconds: float) -> None:
    raw = demo_raw()
    raw["server"]["grace_period"] = value
    raw["envoy"]["message_timeout"] = value
    raw["routing"]["decisions"][2]["algorithm"]["fusion"].update(round_timeout=value, timeouts={"panel": value})
    config = parse_config(json.dumps(raw))
    fusion = config.routing.decisions[2].algorithm.fusion
    assert config.server.grace_period == pytest.approx(seconds)
    assert config.envoy.message_timeout == pytest.approx(seconds)
    assert fusion.round_timeout == pytest.approx(seconds)
    assert fusion.timeouts.panel == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("5h", "a duration is"),
        ("fast", "a duration is"),
        ("-1s", "a duration is"),
        ("0s", "greater than 0"),
        (0, "greater than 0"),
    ],
)
def test_bad_durations_name_the_field(value: Any, fragment: str) -> None:
    raw = demo_raw()
    raw["server"]["grace_period"] = value
    raw["routing"]["decisions"][2]["algorithm"]["fusion"]["round_timeout"] = value
    problems = problems_of(raw)
    assert_problem(problems, "server.grace_period", fragment)
    assert_problem(problems, "routing.decisions[2].algorithm.fusion.round_timeout", fragment)
    assert len(problems) == 2, problems


@pytest.mark.parametrize(
    ("value", "tokens"),
    [("32K", 32_000), ("32k", 32_000), ("1M", 1_000_000), ("4000", 4000), (4000, 4000), (" 8K ", 8000)],
)
def test_token_counts(value: Any, tokens: int) -> None:
    raw = minimal(signals={"context": [{"name": "c", "min_tokens": value, "max_tokens": value}]})
    signal = parse_config(json.dumps(raw)).routing.signals.context[0]
    assert (signal.min_tokens, signal.max_tokens) == (tokens, tokens)


@pytest.mark.parametrize("value", ["32KB", "1.5K", "-5", "many", "K"])
def test_bad_token_counts(value: str) -> None:
    problems = problems_of(minimal(signals={"context": [{"name": "c", "min_tokens": value}]}))
    assert_problem(problems, "routing.signals.context[0].min_tokens", "a token count is an integer")
    assert len(problems) == 1, problems


# ---------------------------------------------------------------- one problem each, named by its path

Mutation = Callable[[Raw], Any]


def _decision(i: int) -> Callable[[Raw], Raw]:
    return lambda raw: raw["routing"]["decisions"][i]


def _fusion(raw: Raw) -> Raw:
    return raw["routing"]["decisions"][2]["algorithm"]["fusion"]


def _dup_model(raw: Raw) -> None:
    raw["providers"]["models"].append(copy.deepcopy(raw["providers"]["models"][0]))


def _dup_decision(raw: Raw) -> None:
    raw["routing"]["decisions"].append(copy.deepcopy(raw["routing"]["decisions"][0]))


PROBLEMS: list[Any] = [
    pytest.param(
        lambda r: _decision(0)(r).update(prioirty=100),
        "routing.decisions[0].prioirty",
        ["unknown key"],
        id="typo-prioirty",
    ),
    pytest.param(lambda r: r["server"].update(listn="x"), "server.listn", ["unknown key"], id="typo-in-server"),
    pytest.param(lambda r: r.pop("providers"), "providers", ["required key is missing"], id="missing-providers"),
    pytest.param(lambda r: r["providers"].update(models=[]), "providers.models", ["at least 1 item"], id="no-models"),
    pytest.param(
        lambda r: r["providers"]["models"][0].update(base_url="ftp://127.0.0.1/v1"),
        "providers.models[0].base_url",
        ["absolute http:// or https:// URL"],
        id="base-url-scheme",
    ),
    pytest.param(
        lambda r: r["providers"]["models"][1].update(base_url="127.0.0.1:9002"),
        "providers.models[1].base_url",
        ["absolute http:// or https:// URL"],
        id="base-url-no-scheme",
    ),
    pytest.param(
        lambda r: r["providers"]["models"][2].update(base_url="http://h/v1?key=1"),
        "providers.models[2].base_url",
        ["query or fragment"],
        id="base-url-query",
    ),
    pytest.param(
        lambda r: r["routing"]["signals"]["regex"][0].update(patterns=["ok", "[unclosed"]),
        "routing.signals.regex[0].patterns[1]",
        ["'[unclosed'", "not a valid regular expression"],
        id="invalid-regex",
    ),
    pytest.param(
        lambda r: _decision(0)(r).update(
            rules={"operator": "NOT", "conditions": [{"type": "keyword", "name": "code"}] * 2}
        ),
        "routing.decisions[0].rules",
        ["NOT takes exactly one condition"],
        id="not-with-two-conditions",
    ),
    pytest.param(
        lambda r: _decision(0)(r)["rules"]["conditions"][0].update(weight=2),
        "routing.decisions[0].rules.conditions[0].weight",
        ["unknown key"],
        id="rule-leaf-unknown-key",
    ),
    pytest.param(
        lambda r: _decision(0)(r)["rules"].update(operator="XOR"),
        "routing.decisions[0].rules.operator",
        ["'AND', 'OR' or 'NOT'"],
        id="rule-unknown-operator",
    ),
    pytest.param(
        lambda r: _decision(0)(r)["rules"]["conditions"][0].update(name="nope"),
        "routing.decisions[0].rules.conditions[0].name",
        ["undeclared keyword signal 'nope'", "(declared: code, compare)"],
        id="undeclared-signal",
    ),
    pytest.param(
        lambda r: _decision(1)(r).update(
            rules={
                "operator": "AND",
                "conditions": [
                    {
                        "operator": "OR",
                        "conditions": [{"type": "header", "name": "premium"}, {"type": "regex", "name": "x"}],
                    }
                ],
            }
        ),
        "routing.decisions[1].rules.conditions[0].conditions[1].name",
        ["undeclared regex signal 'x'", "(declared: ticket)"],
        id="undeclared-signal-nested",
    ),
    pytest.param(
        lambda r: _decision(0)(r)["rules"]["conditions"][0].update(type="sentiment"),
        "routing.decisions[0].rules.conditions[0].type",
        ["unknown signal type 'sentiment'", "keyword, regex, context, header, embedding, domain"],
        id="unknown-signal-type",
    ),
    pytest.param(
        lambda r: _decision(0)(r)["modelRefs"].append({"model": "ghost"}),
        "routing.decisions[0].modelRefs[1].model",
        ["unknown model 'ghost'", DEMO_MODELS],
        id="model-ref-unknown",
    ),
    pytest.param(
        lambda r: r["providers"]["defaults"].update(default_model="ghost"),
        "providers.defaults.default_model",
        ["unknown model 'ghost'", DEMO_MODELS],
        id="default-model-unknown",
    ),
    pytest.param(_dup_model, "providers.models[3].name", ["duplicate model name 'demo-small'"], id="duplicate-model"),
    pytest.param(
        _dup_decision, "routing.decisions[5].name", ["duplicate decision name 'coding'"], id="duplicate-decision"
    ),
    pytest.param(
        lambda r: r["routing"]["signals"]["keyword"].append({"name": "code", "keywords": ["x"]}),
        "routing.signals.keyword[2].name",
        ["duplicate keyword signal 'code'"],
        id="duplicate-signal",
    ),
    pytest.param(
        lambda r: r["routing"].update(auto_model_names=["quorum/auto", "demo-large"]),
        "routing.auto_model_names[1]",
        ["'demo-large' is also a configured model name"],
        id="auto-alias-is-a-model",
    ),
    pytest.param(
        lambda r: r["routing"].update(fusion_model_names=["demo-small"]),
        "routing.fusion_model_names[0]",
        ["'demo-small' is also a configured model name"],
        id="fusion-alias-is-a-model",
    ),
    pytest.param(
        lambda r: r["routing"].update(fusion_model_names=["auto"]),
        "routing.fusion_model_names[0]",
        ["'auto' is already listed in routing.auto_model_names"],
        id="alias-in-both-lists",
    ),
    pytest.param(
        lambda r: _fusion(r).update(analysis_models=["demo-small", "ghost"]),
        "routing.decisions[2].algorithm.fusion.analysis_models[1]",
        ["unknown model 'ghost'", DEMO_MODELS],
        id="fusion-unknown-analysis-model",
    ),
    pytest.param(
        lambda r: _fusion(r).update(model="ghost"),
        "routing.decisions[2].algorithm.fusion.model",
        ["unknown model 'ghost'", DEMO_MODELS],
        id="fusion-unknown-judge-model",
    ),
    pytest.param(
        lambda r: _fusion(r).update(min_successful_responses=3),
        "routing.decisions[2].algorithm.fusion.min_successful_responses",
        ["3 exceeds the panel size 2"],
        id="min-successful-above-panel",
    ),
    pytest.param(
        lambda r: _fusion(r).update(analysis_overrides={"demo-large": {"temperature": 0.1}}),
        "routing.decisions[2].algorithm.fusion.analysis_overrides.demo-large",
        ["not one of the panel models"],
        id="override-for-non-panel-model",
    ),
    pytest.param(
        lambda r: _decision(2)(r).update(algorithm={"type": "fusion"}),
        "routing.decisions[2].algorithm.fusion.analysis_models",
        ["needs panel models"],
        id="fusion-without-panel",
    ),
    pytest.param(
        lambda r: _decision(0)(r).pop("modelRefs"),
        "routing.decisions[0].modelRefs",
        ["a static decision needs at least one model"],
        id="static-without-model-refs",
    ),
    pytest.param(
        lambda r: _decision(0)(r).update(algorithm={"type": "static", "fusion": {"model": "demo-large"}}),
        "routing.decisions[0].algorithm.fusion",
        ["only allowed when algorithm.type is fusion"],
        id="fusion-block-on-static",
    ),
    pytest.param(
        lambda r: r["routing"]["signals"]["header"][0].update(header="X-Quorum-Tier"),
        "routing.signals.header[0].header",
        ["x-quorum-* headers", "cannot be signals"],
        id="header-signal-on-internal-header",
    ),
    pytest.param(
        lambda r: r["routing"]["signals"]["header"][0].update(header="x user tier"),
        "routing.signals.header[0].header",
        ["not a valid header name"],
        id="header-signal-bad-name",
    ),
    pytest.param(
        lambda r: r["providers"]["models"][1].update(cluster="demo_small"),
        "providers.models[1].cluster",
        ["cluster 'demo_small' already points at http://127.0.0.1:9001"],
        id="cluster-reused-for-other-origin",
    ),
    pytest.param(
        lambda r: r["routing"]["signals"]["context"][0].update(min_tokens=10, max_tokens=5),
        "routing.signals.context[0]",
        ["max_tokens must be >= min_tokens"],
        id="context-range-inverted",
    ),
    pytest.param(
        lambda r: r["routing"]["signals"]["context"][0].pop("min_tokens"),
        "routing.signals.context[0]",
        ["set min_tokens, max_tokens or both"],
        id="context-without-bounds",
    ),
    pytest.param(
        lambda r: r["envoy"].update(listen="localhost"),
        "envoy.listen",
        ["expected host:port"],
        id="listen-without-port",
    ),
    pytest.param(
        lambda r: r["server"].update(route_header="X-Model"),
        "server.route_header",
        ["lower-case letters, digits and dashes"],
        id="route-header-upper-case",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "fragments"), PROBLEMS)
def test_problem_is_named_by_its_dotted_path(mutate: Mutation, path: str, fragments: list[str]) -> None:
    raw = demo_raw()
    mutate(raw)
    problems = problems_of(raw)
    assert_problem(problems, path, *fragments)
    assert len(problems) == 1, f"one mistake must give one problem, got {problems}"


def test_all_structural_problems_are_reported_at_once() -> None:
    raw = demo_raw()
    raw["routing"]["decisions"][0]["prioirty"] = 1
    raw["providers"]["models"][0]["base_url"] = "nope"
    raw["routing"]["signals"]["regex"][0]["patterns"] = ["("]
    raw["routing"]["signals"]["header"][0]["header"] = "x-quorum-tier"
    raw["server"]["grace_period"] = "soon"
    problems = problems_of(raw)
    assert_problem(problems, "routing.decisions[0].prioirty", "unknown key")
    assert_problem(problems, "providers.models[0].base_url", "absolute")
    assert_problem(problems, "routing.signals.regex[0].patterns[0]", "RE2")
    assert_problem(problems, "routing.signals.header[0].header", "x-quorum-*")
    assert_problem(problems, "server.grace_period", "a duration is")
    assert len(problems) == 5, problems


def test_all_reference_problems_are_reported_at_once() -> None:
    raw = demo_raw()
    raw["providers"]["defaults"]["default_model"] = "ghost"
    raw["routing"]["decisions"][0]["modelRefs"] = [{"model": "ghost"}]
    raw["routing"]["decisions"][1]["rules"]["conditions"][1]["name"] = "nope"
    _fusion(raw)["model"] = "judge"
    raw["routing"]["auto_model_names"] = ["demo-small"]
    _dup_decision(raw)
    problems = problems_of(raw)
    assert_problem(problems, "providers.defaults.default_model", "'ghost'")
    assert_problem(problems, "routing.decisions[0].modelRefs[0].model", "'ghost'")
    assert_problem(problems, "routing.decisions[1].rules.conditions[1].name", "'nope'")
    assert_problem(problems, "routing.decisions[2].algorithm.fusion.model", "'judge'")
    assert_problem(problems, "routing.auto_model_names[0]", "'demo-small'")
    assert_problem(problems, "routing.decisions[5].name", "duplicate decision name 'coding'")
    # the duplicated decision repeats the unknown modelRef
    assert_problem(problems, "routing.decisions[5].modelRefs[0].model", "'ghost'")
    assert len(problems) == 7, problems


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("routing: [", "not valid YAML"), ("- a\n- b\n", "the top level must be a mapping"), ("", "mapping")],
)
def test_not_a_config_document(text: str, fragment: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_config_error_message_lists_the_problems_and_source(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    raw = demo_raw()
    raw["routing"]["decisions"][0]["prioirty"] = 1
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: 1 problem(s)")
    assert "routing.decisions[0].prioirty: unknown key" in str(info.value)


# ---------------------------------------------------------------- the CLI


def test_cli_validate_demo_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DEMO)]) == 0
    out, err = capsys.readouterr()
    assert "ok (3 models, 5 decisions)" in out
    assert err == ""


def test_cli_validate_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = demo_raw()
    raw["routing"]["decisions"][0]["rules"]["conditions"][0]["name"] = "nope"
    raw["routing"]["decisions"][1]["modelRefs"] = [{"model": "ghost"}]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")

    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert str(path) in err
    assert "routing.decisions[0].rules.conditions[0].name: undeclared keyword signal 'nope'" in err
    assert "routing.decisions[1].modelRefs[0].model: unknown model 'ghost'" in err


def test_cli_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


# ---------------------------------------------------------------- secrets from the environment

KEYED = """
providers:
  models:
    - {name: open, base_url: "http://127.0.0.1:9001/v1"}
    - {name: keyed, base_url: "https://api.example.com/v1", api_key_env: QUORUM_TEST_KEY}
"""

KEYED_TWICE = """
providers:
  models:
    - {name: first, base_url: "http://127.0.0.1:9001/v1", api_key_env: QUORUM_TEST_KEY_A}
    - {name: second, base_url: "http://127.0.0.1:9002/v1", api_key_env: QUORUM_TEST_KEY_B}
"""


@pytest.mark.parametrize("environ", [{}, {"QUORUM_TEST_KEY": ""}, {"OTHER": "sk-x"}])
def test_missing_api_key_env_is_a_config_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_runtime(parse_config(KEYED), environ=environ)
    assert len(info.value.problems) == 1
    assert "api_key_env" in info.value.problems[0]
    assert "QUORUM_TEST_KEY is not set" in info.value.problems[0]


def test_api_key_becomes_bearer_authorization_and_stays_out_of_repr() -> None:
    secret = "sk-test-Zq8rT1s3cr3t"
    runtime = build_runtime(parse_config(KEYED), environ={"QUORUM_TEST_KEY": secret})
    assert runtime.models["keyed"].authorization == f"Bearer {secret}"
    assert runtime.models["open"].authorization is None
    assert secret not in repr(runtime.models["keyed"])
    assert secret not in str(runtime.models["keyed"])
    assert secret not in repr(runtime)


def test_missing_api_key_env_uses_the_index_path() -> None:
    with pytest.raises(ConfigError) as info:
        build_runtime(parse_config(KEYED), environ={})
    assert info.value.problems[0].startswith("providers.models[1].api_key_env: ")


def test_every_missing_api_key_env_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        build_runtime(parse_config(KEYED_TWICE), environ={})
    text = "\n".join(info.value.problems)
    assert "QUORUM_TEST_KEY_A" in text
    assert "QUORUM_TEST_KEY_B" in text
