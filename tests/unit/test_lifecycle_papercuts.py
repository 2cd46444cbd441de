"""Papercuts an operator trips over: the access log's shape, status labels of requests Envoy closes
late, what the metrics port answers, and `quorum --version`."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import orjson
import pytest
from builders import body_msg, chat, chat_headers, config_text

from extproc.config import ObservabilityConfig, parse_config
from extproc.runtime import build_runtime
from extproc.server import ExternalProcessor
from extproc.telemetry import build_telemetry
from extproc.telemetry.metrics import Metrics
from extproc.telemetry.recorder import RequestRecorder
from extproc.telemetry.setup import ACCESS_LOG, configure_logging

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def access_stream():
    stream = io.StringIO()
    saved = (list(ACCESS_LOG.handlers), ACCESS_LOG.propagate, ACCESS_LOG.level)
    configure_logging("info", access_stream=stream)
    yield stream
    ACCESS_LOG.handlers[:] = saved[0]
    ACCESS_LOG.propagate = saved[1]
    ACCESS_LOG.setLevel(saved[2])


def test_the_access_log_is_one_bare_json_object_per_line(access_stream):
    telemetry = build_telemetry(ObservabilityConfig(), environ={})
    for rid in ("a", "b"):
        recorder = RequestRecorder(telemetry)
        recorder.start({":method": "POST", ":path": "/v1/chat/completions", "x-request-id": rid})
        recorder.decided("coding", 100, 1.0, "demo-coder", "route")
        recorder.finish()
    lines = access_stream.getvalue().splitlines()
    assert len(lines) == 2
    records = [orjson.loads(line) for line in lines]  # nothing before or after the object
    assert [r["request_id"] for r in records] == ["a", "b"]
    assert set(records[0]) == {
        "time", "request_id", "trace_id", "method", "path", "kind", "decision", "guards", "model", "status",
        "latency_ms", "quorum_ms", "tokens_in", "tokens_out",
    }  # fmt: skip
    assert records[0]["time"].endswith("+00:00")


async def _aiter(*items, then: BaseException | None = None):
    for item in items:
        yield item
    if then is not None:
        raise then


def _status_counts(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["status"]: s.value
        for m in metrics.registry.collect()
        if m.name == "quorum_requests"
        for s in m.samples
        if s.name == "quorum_requests_total"
    }


async def test_a_routed_request_that_envoy_closes_late_is_not_counted_cancelled():
    runtime = build_runtime(parse_config(config_text()), environ={"QUORUM_TEST_LARGE_KEY": "k"})
    telemetry = build_telemetry(ObservabilityConfig(access_log=False), environ={})
    processor = ExternalProcessor(runtime, telemetry=telemetry)
    # routed, then the stream is cancelled (the client closed its connection after reading)
    late = _aiter(chat_headers(), body_msg(chat("python")), then=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        [r async for r in processor.Process(late, None)]
    # cancelled before Quorum answered: that one is a cancellation
    early = _aiter(chat_headers(), then=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        [r async for r in processor.Process(early, None)]
    assert _status_counts(telemetry.metrics) == {"forwarded": 1, "cancelled": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_metrics_port_answers_only_metrics_healthz_and_readyz():
    metrics = Metrics()
    ready = [False]
    port = _free_port()
    server = metrics.serve("127.0.0.1", port, ready=lambda: ready[0])
    try:
        base = f"http://127.0.0.1:{port}"
        scrape = httpx.get(f"{base}/metrics", timeout=5)
        assert scrape.status_code == 200 and "quorum_config_reloads_total" in scrape.text
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503  # not serving yet
        ready[0] = True
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        for path in ("/", "/metricsx", "/debug", "/metrics/../etc"):
            assert httpx.get(f"{base}{path}", timeout=5).status_code == 404, path
    finally:
        server.shutdown()
        server.server_close()


def test_version_matches_the_package_metadata():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "extproc", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.strip() == f"quorum {version}"
