"""`quorum validate`: every problem of a file at once, as `path: problem`, warnings apart, exit 2 on errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from extproc.cli import main
from extproc.config import ConfigError, validate_document
from extproc.config.report import check_document
from extproc.runtime import build_runtime


def model(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "base_url": f"http://127.0.0.1:{port}/v1", **extra}


def document(**routing: Any) -> dict[str, Any]:
    """Two models, a keyword signal and a decision using them: valid as it stands."""
    base = {
        "signals": {"keyword": [{"name": "code", "keywords": ["python"]}]},
        "decisions": [
            {"name": "coding", "rules": {"type": "keyword", "name": "code"}, "modelRefs": [{"model": "big"}]}
        ],
    }
    return {"providers": {"models": [model("small", 9001), model("big", 9002)]}, "routing": {**base, **routing}}


def errors_of(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    return check_document(raw, environ={} if environ is None else environ).errors


def test_a_valid_document_has_no_findings_and_keeps_its_config() -> None:
    findings = check_document(document(), environ={})
    assert findings.errors == [] and findings.warnings == []
    assert findings.config is not None and [m.name for m in findings.config.providers.models] == ["small", "big"]


@pytest.mark.parametrize(
    ("where", "typo", "expected"),
    [
        ((), "routin", "routin: unknown key (did you mean 'routing'?)"),
        (("server",), "wrokers", "server.wrokers: unknown key (did you mean 'workers'?)"),
        (("providers", "models", 1), "base_ur", "providers.models[1].base_ur: unknown key (did you mean 'base_url'?)"),
        (
            ("routing", "decisions", 0),
            "modelRef",
            "routing.decisions[0].modelRef: unknown key (did you mean 'modelRefs'?)",
        ),
        (
            ("routing", "decisions", 0, "rules"),
            "nmae",
            "routing.decisions[0].rules.nmae: unknown key (did you mean 'name'?)",
        ),
    ],
)
def test_an_unknown_key_suggests_the_closest_known_one(where: tuple[Any, ...], typo: str, expected: str) -> None:
    raw = document()
    node: Any = raw
    for part in where:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[typo] = 1
    assert expected in errors_of(raw)


def test_an_unknown_key_far_from_every_known_one_gets_no_suggestion() -> None:
    raw = document()
    raw["server"] = {"zzzzzz": 1}
    assert "server.zzzzzz: unknown key" in errors_of(raw)


def test_type_errors_and_re2_errors_name_their_path() -> None:
    raw = document()
    raw["server"] = {"workers": "many"}
    raw["routing"]["signals"]["regex"] = [{"name": "rx", "patterns": ["ok", "(unclosed"]}]
    errors = errors_of(raw)
    assert any(e.startswith("server.workers: Input should be a valid integer") for e in errors), errors
    assert "routing.signals.regex[0].patterns[1]: '(unclosed' is not a valid regular expression (RE2 syntax)" in [
        e.split(": missing")[0] for e in errors
    ], errors


def test_cross_references_are_reported_alongside_structural_errors() -> None:
    """Before: a typo'd key hid every cross-reference problem until it was fixed."""
    raw = document()
    raw["server"] = {"wrokers": 2, "workers": "x"}
    raw["routing"]["decisions"][0]["rules"]["name"] = "nope"
    raw["routing"]["decisions"][0]["modelRefs"].append({"model": "ghost"})
    errors = errors_of(raw)
    assert errors[:2] == [
        "server.workers: Input should be a valid integer, unable to parse string as an integer",
        "server.wrokers: unknown key (did you mean 'workers'?)",
    ]
    assert "routing.decisions[0].rules.name: undeclared keyword signal 'code'" not in errors
    assert "routing.decisions[0].rules.name: undeclared keyword signal 'nope' (declared: code)" in errors
    assert "routing.decisions[0].modelRefs[1].model: unknown model 'ghost' (configured: small, big)" in errors
    with pytest.raises(ConfigError) as info:  # the loader still stops at the structure
        validate_document(raw)
    assert not any("ghost" in p for p in info.value.problems)


def test_paths_after_a_dropped_list_item_point_into_the_file_as_written() -> None:
    """models[0] is invalid and left out of the cross-reference pass; models[2] must still be called [2]."""
    raw = document()
    raw["providers"]["models"] = [model("bad name!", 9000), model("small", 9001), model("small", 9002)]
    raw["routing"]["decisions"][0]["modelRefs"] = [{"model": "small"}, {"model": "absent"}]
    errors = errors_of(raw)
    assert errors[0].startswith("providers.models[0].name: String should match pattern")
    assert "providers.models[2].name: duplicate model name 'small'" in errors
    assert "providers.models[2].cluster: cluster 'small' already points at http://127.0.0.1:9001" in errors
    assert not any(e.startswith("providers.models[1]") for e in errors), errors
    assert "routing.decisions[0].modelRefs[1].model: unknown model 'absent' (configured: small, small)" in errors


def test_a_reference_to_an_item_dropped_for_its_own_error_is_not_reported_again() -> None:
    raw = document()
    raw["routing"]["signals"]["keyword"][0]["keywords"] = []  # invalid: the signal is dropped
    raw["providers"]["models"][1]["base_url"] = "not a url"  # invalid: the model `big` is dropped
    errors = errors_of(raw)
    assert any(e.startswith("routing.signals.keyword[0].keywords:") for e in errors), errors
    assert any(e.startswith("providers.models[1].base_url:") for e in errors), errors
    assert not any("undeclared keyword signal 'code'" in e or "unknown model 'big'" in e for e in errors), errors
    assert not any("required key is missing" in e for e in errors), errors


def test_a_missing_required_key_is_reported_once() -> None:
    raw = document()
    del raw["providers"]["models"][0]["base_url"]
    assert errors_of(raw) == ["providers.models[0].base_url: required key is missing"]


def test_an_unset_api_key_variable_is_an_error_as_in_serve() -> None:
    raw = document()
    raw["providers"]["models"][1]["api_key_env"] = "QUORUM_APIX_TEST_KEY"
    config = validate_document(raw)  # the schema is happy...
    with pytest.raises(ConfigError) as info:  # ...but serve refuses to start
        build_runtime(config, environ={})
    expected = "providers.models[1].api_key_env: environment variable QUORUM_APIX_TEST_KEY is not set"
    assert info.value.problems == [expected]
    assert errors_of(raw) == [expected]
    assert errors_of(raw, {"QUORUM_APIX_TEST_KEY": ""}) == [expected]
    assert errors_of(raw, {"QUORUM_APIX_TEST_KEY": "sk-x"}) == []


REMOTE_EMBEDDING = {"backend": "remote", "base_url": "http://127.0.0.1:9009/v1", "api_key_env": "QUORUM_APIX_EMB"}
UNSET_EMBEDDING_KEY = "routing.embedding.api_key_env: environment variable QUORUM_APIX_EMB is not set"


def test_an_unset_embedding_key_is_an_error_when_serve_would_load_the_engine() -> None:
    raw = document(embedding=REMOTE_EMBEDDING)
    raw["routing"]["signals"]["embedding"] = [{"name": "refund", "candidates": ["I want my money back"]}]
    raw["routing"]["decisions"][0]["rules"] = {"type": "embedding", "name": "refund"}
    assert errors_of(raw) == [UNSET_EMBEDDING_KEY]
    with pytest.raises(ConfigError) as info:  # what serve does with it
        build_runtime(validate_document(raw), environ={})
    assert "QUORUM_APIX_EMB" in info.value.problems[0]


def test_an_unset_embedding_key_nothing_uses_is_a_warning() -> None:
    raw = document(embedding=REMOTE_EMBEDDING)
    findings = check_document(raw, environ={})
    assert findings.errors == []
    assert findings.warnings == [
        f"{UNSET_EMBEDDING_KEY}; nothing uses the embedding engine now, the first semantic signal will"
    ]
    build_runtime(validate_document(raw), environ={})  # serve starts


# ---------------------------------------------------------------- the CLI


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "quorum.yaml"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def test_cli_lists_every_error_then_the_warnings_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUORUM_APIX_TEST_KEY", raising=False)
    raw = document()
    raw["providers"]["models"][0].update(forward_client_auth=True, api_key_env="QUORUM_APIX_TEST_KEY")
    raw["routing"]["decisions"][0]["priorty"] = 2
    raw["routing"]["decisions"][0]["modelRefs"] = [{"model": "ghost"}]
    path = write(tmp_path, raw)

    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: 3 error(s)",
        "  routing.decisions[0].priorty: unknown key (did you mean 'priority'?)",
        "  routing.decisions[0].modelRefs[0].model: unknown model 'ghost' (configured: small, big)",
        "  providers.models[0].api_key_env: environment variable QUORUM_APIX_TEST_KEY is not set",
        f"{path}: warning: forward_client_auth: the client's credential headers reach small",
    ]


def test_cli_says_ok_when_the_key_variable_is_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_APIX_TEST_KEY", "sk-test")
    raw = document()
    raw["providers"]["models"][0]["api_key_env"] = "QUORUM_APIX_TEST_KEY"
    assert main(["validate", str(write(tmp_path, raw))]) == 0
    out, err = capsys.readouterr()
    assert out.endswith("ok (2 models, 1 decisions)\n") and err == ""
