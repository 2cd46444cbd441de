"""A stack of Envoy + Quorum + two llama.cpp servers (config/real.yaml on free ports), once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from extproc.dev.real_servers import unavailable_reason
from extproc.dev.stack import Stack, free_port

REPO = Path(__file__).resolve().parents[2]


def real_config(directory: Path) -> Path:
    raw = yaml.safe_load((REPO / "config/real.yaml").read_text(encoding="utf-8"))
    raw["server"]["listen"] = f"127.0.0.1:{free_port()}"
    raw["envoy"] = {"listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"}
    for model in raw["providers"]["models"]:
        model["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    path = directory / "real.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("QUORUM_REAL_REQUIRED"):  # make test-real / CI: a missing build is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("real")
    stack = Stack(real_config(workdir), workdir, real_models=True)
    stack.start(timeout=300)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def real_client(real_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{real_stack.envoy_url}/v1", api_key="unused", max_retries=0, timeout=300)
