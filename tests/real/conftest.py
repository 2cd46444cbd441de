"""A stack of Envoy + Quorum + two llama.cpp servers (config/real.yaml on free ports), once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import openai
import pytest

from extproc.dev.real_servers import config_on_free_ports, unavailable_reason
from extproc.dev.stack import Stack


@pytest.fixture(scope="session")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("QUORUM_REAL_REQUIRED"):  # make test-real / CI: a missing build is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("real")
    stack = Stack(config_on_free_ports(workdir), workdir, real_models=True)
    stack.start(timeout=300)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def real_client(real_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{real_stack.envoy_url}/v1", api_key="unused", max_retries=0, timeout=300)
