"""A real stack per test session: fake backends, `quorum serve` and Envoy with the rendered config."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from builders import PORT_KEYS, config_text, read_stream

from extproc.dev.stack import Stack, free_port

LARGE_KEY = "sk-quorum-test-large"
MAX_BODY = 256 * 1024


def write_config(
    directory: Path,
    body_mode: str = "full_duplex_streamed",
    tracing: str = "{exporter: none}",
    usage: str = "{enabled: false}",
    debug_headers: bool = False,
    **overrides: int,
) -> tuple[Path, dict[str, int]]:
    ports = {key: free_port() for key in PORT_KEYS}
    ports.update(overrides)
    path = directory / "quorum.yaml"
    text = config_text(
        max_body=MAX_BODY, body_mode=body_mode, tracing=tracing, usage=usage, debug_headers=debug_headers, **ports
    )
    path.write_text(text, encoding="utf-8")
    return path, ports


def running_stack(
    workdir: Path,
    body_mode: str,
    decisions: tuple[dict[str, Any], ...] = (),
    server: str = "",
    workers: int | None = None,
    edit: Callable[[str], str] | None = None,
    **settings: str,
) -> Iterator[Stack]:
    """`decisions`: added to the config's; `server`: extra `server:` keys in flow style
    (e.g. "admission: {max_in_flight: 1}"); `edit`: a change to the config's text, applied last."""
    path, _ = write_config(workdir, body_mode, **settings)
    if server or decisions:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw["server"].update(yaml.safe_load("{" + server + "}"))
        raw["routing"]["decisions"].extend(decisions)
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    if edit is not None:
        path.write_text(edit(path.read_text()))
    os.environ["QUORUM_TEST_LARGE_KEY"] = LARGE_KEY
    try:
        with Stack(path, workdir, workers=workers) as running:
            yield running
    finally:
        os.environ.pop("QUORUM_TEST_LARGE_KEY", None)


def module_stack(name: str, body_mode: str = "full_duplex_streamed", **settings: Any) -> Any:
    """A module-scoped stack fixture with its own settings (see `running_stack`)."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        yield from running_stack(tmp_path_factory.mktemp(name), body_mode, **settings)

    return fixture


BODY_MODES = {"duplex": "full_duplex_streamed", "buffered": "buffered"}


@pytest.fixture(scope="session", params=list(BODY_MODES))
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack, once per Envoy request body mode: every test that uses it runs in both."""
    yield from running_stack(tmp_path_factory.mktemp(request.param), BODY_MODES[request.param])


@pytest.fixture(scope="session")
def buffered_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Envoy with request_body_mode BUFFERED: fusion answers arrive in one ImmediateResponse."""
    yield from running_stack(tmp_path_factory.mktemp("buffered"), "buffered")


@pytest.fixture(scope="session")
def duplex_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Envoy with request_body_mode FULL_DUPLEX_STREAMED: true streaming of fusion answers."""
    yield from running_stack(tmp_path_factory.mktemp("duplex"), "full_duplex_streamed")


@pytest.fixture
def duplex_client(duplex_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{duplex_stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)


@pytest.fixture
def buffered_client(buffered_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{buffered_stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.envoy_url}/v1", api_key="client-key", max_retries=0, timeout=20)


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.envoy_url, timeout=20) as c:
        yield c


def backend_url(stack: Stack, model: str) -> str:
    return stack.config.model(model).base_url.removesuffix("/v1")


def backend_requests(stack: Stack, model: str) -> list[dict]:
    return httpx.get(f"{backend_url(stack, model)}/_fake/requests").json()["requests"]


def assert_not_json_reaches_no_model(stack: Stack, url: str) -> None:
    """A forged routing header with a body that is not JSON: Quorum answers 400, no backend sees it."""
    httpx.delete(f"{backend_url(stack, 'demo-small')}/_fake/requests")
    response = httpx.post(
        f"{url}/v1/chat/completions",
        content=b'model: "demo-small"',
        headers={"content-type": "application/json", "x-quorum-model": "demo-small"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert backend_requests(stack, "demo-small") == []


def metric_samples(stack: Stack, worker: int = 0) -> dict[str, float]:
    """Every sample on Quorum's /metrics (of worker `worker`), as exposed: `name{labels}` -> value."""
    host, port = stack.config.observability.metrics.listen.rsplit(":", 1)
    text = httpx.get(f"http://{host}:{int(port) + worker}/metrics", timeout=5).text
    return {key: float(value) for key, value in re.findall(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE)}


def clear_backends(stack: Stack) -> None:
    for model in ("demo-small", "demo-coder", "demo-large"):
        httpx.delete(f"{backend_url(stack, model)}/_fake/requests")


def running_stack_with(workdir: Path, body_mode: str, *decisions: dict[str, Any]) -> Iterator[Stack]:
    """A stack whose config is the test config plus `decisions`."""
    yield from running_stack(workdir, body_mode, decisions)


def stream_chat(client: openai.OpenAI, text: str, trace_key: str, model: str = "quorum/auto") -> tuple[str, Any, Any]:
    """A streamed chat through the SDK: the text, the trace found under `trace_key`, the usage chunk."""
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return read_stream(stream, trace_key)
