"""Quorum's own model calls (fusion, gates) follow a model's `fallbacks`, against real fake backends."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from builders import config_text

from extproc.algorithms.trace import RunTrace
from extproc.config import FusionConfig, parse_config
from extproc.dev.fake_backend import BACKEND, build_app, start_app
from extproc.fusion.looper import Deliberation, synthesize, synthesize_stream
from extproc.fusion.plan import FusionPlan
from extproc.models import ModelClient
from extproc.modeltypes import ModelCallError, RetryPolicy
from extproc.runtime import Model, build_runtime

ONCE = RetryPolicy(attempts=1)
HEADERS = {"x-request-id": "rid-fb"}
PRIMARY_503 = {**HEADERS, "x-fake-status": "503", "x-fake-only": "primary"}


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, tuple[str, web.Application]]]:
    """Two fake backends, `primary` and `backup`, each answering as its own model."""
    runners, started = [], {}
    for name in ("primary", "backup"):
        app = build_app(name)
        runner, port = await start_app(app, "127.0.0.1", 0)
        runners.append(runner)
        started[name] = (f"http://127.0.0.1:{port}/v1", app)
    yield started
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[ModelClient]:
    client = ModelClient()
    yield client
    await client.aclose()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there: connection refused


def models(backends: dict, primary_url: str | None = None, *, with_fallback: bool = True) -> Model:
    backup = Model("backup", "backup-up", backends["backup"][0], authorization="Bearer backup-key")
    primary = Model("primary", "primary-up", primary_url or backends["primary"][0], authorization="Bearer primary-key")
    return replace(primary, fallbacks=("backup",), fallback_models=(backup,)) if with_fallback else primary


def body(directive: str = "[[fake:status=503 only=primary]]") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"Tea or coffee? {directive}"}]}


def records(backends: dict, name: str) -> list[dict[str, Any]]:
    return list(backends[name][1][BACKEND].records)


def test_runtime_resolves_each_models_fallbacks() -> None:
    text = config_text().replace("cluster: demo_small\n", "cluster: demo_small\n      fallbacks: [demo-coder]\n")
    runtime = build_runtime(parse_config(text), environ={"QUORUM_TEST_LARGE_KEY": "k"})
    assert runtime.models["demo-small"].fallback_models == (runtime.models["demo-coder"],)
    assert runtime.models["demo-coder"].fallback_models == ()


async def test_503_fails_over_to_the_fallback_with_its_own_url_model_and_key(backends, client) -> None:
    reply = await client.complete(models(backends), body(), time_limit=5, retry=ONCE, headers=HEADERS)
    assert reply.model == "backup" and reply.content.startswith("[backup]")
    assert [r["status"] for r in records(backends, "primary")] == [503]
    sent = records(backends, "backup")[0]
    assert sent["body"]["model"] == "backup-up"
    assert sent["headers"]["authorization"] == "Bearer backup-key"
    assert sent["headers"]["x-request-id"] == "rid-fb"
    trace = RunTrace("fusion", "d")
    trace.completed("synthesis", reply)
    assert [c["model"] for c in trace.calls] == ["backup"]  # the trace names the model that answered
    assert trace.usage.total_tokens == reply.usage.total_tokens > 0


async def test_the_primary_keeps_its_own_retries_before_failing_over(backends, client) -> None:
    twice = RetryPolicy(attempts=2, backoff=0.001)
    reply = await client.complete(models(backends), body(), time_limit=5, retry=twice)
    assert reply.model == "backup"
    assert len(records(backends, "primary")) == 2 and len(records(backends, "backup")) == 1


async def test_connection_refused_fails_over(backends, client) -> None:
    model = models(backends, closed_port_url())
    reply = await client.complete(model, body(""), time_limit=5, retry=ONCE)
    assert reply.model == "backup" and len(records(backends, "backup")) == 1


async def test_timeout_before_any_byte_fails_over(backends, client) -> None:
    reply = await client.complete(
        models(backends), body("[[fake:delay_ms=2000 only=primary]]"), time_limit=0.3, retry=ONCE
    )
    assert reply.model == "backup"


async def test_without_fallbacks_the_error_is_unchanged(backends, client) -> None:
    with pytest.raises(ModelCallError) as caught:
        await client.complete(models(backends, with_fallback=False), body(), time_limit=5, retry=ONCE)
    assert caught.value.model == "primary" and caught.value.status == 503
    assert records(backends, "backup") == []


async def test_a_bad_request_is_not_failed_over(backends, client) -> None:
    with pytest.raises(ModelCallError) as caught:
        await client.complete(models(backends), body("[[fake:status=400 only=primary]]"), time_limit=5, retry=ONCE)
    assert caught.value.status == 400 and records(backends, "backup") == []


async def test_every_model_failing_raises_the_last_error(backends, client) -> None:
    with pytest.raises(ModelCallError) as caught:
        await client.complete(models(backends), body("[[fake:status=503]]"), time_limit=5, retry=ONCE)
    assert caught.value.model == "backup" and caught.value.status == 503
    assert len(records(backends, "primary")) == len(records(backends, "backup")) == 1


async def test_stream_fails_over_before_the_first_chunk(backends, client) -> None:
    chunks = [c async for c in client.stream(models(backends), body(), headers=HEADERS)]
    text = "".join((ch.get("delta") or {}).get("content") or "" for c in chunks for ch in c.get("choices") or [])
    assert text.startswith("[backup]") and records(backends, "backup")[0]["body"]["model"] == "backup-up"


async def test_stream_is_not_failed_over_after_the_first_chunk(backends, client) -> None:
    stream = client.stream(models(backends), body("[[fake:break_stream_after=1 only=primary]]"))
    with pytest.raises(ModelCallError, match="primary"):
        async for _chunk in stream:
            pass
    assert records(backends, "backup") == []


def fusion_plan(judge: Model) -> Deliberation:
    from extproc.fusion.judge import JudgeResult
    from extproc.fusion.panel import PanelResult

    plan = FusionPlan(decision="d", panel=(judge,), judge=judge, config=FusionConfig.model_validate({}))
    return Deliberation(plan, PanelResult(), [], JudgeResult())


async def test_fusion_synthesis_is_answered_and_traced_by_the_fallback(backends, client) -> None:
    d = fusion_plan(models(backends))
    trace = RunTrace("fusion", "d")
    final = await synthesize(client, d, {"model": "quorum/auto", **body("")}, PRIMARY_503, trace)
    assert final.message["content"].startswith("[backup]")
    assert [(c["stage"], c["model"], c["outcome"]) for c in trace.calls] == [("synthesis", "backup", "ok")]


async def test_fusion_streamed_synthesis_uses_the_fallback(backends, client) -> None:
    d = fusion_plan(models(backends))
    trace = RunTrace("fusion", "d")
    request = {"model": "quorum/auto", **body("")}
    choices = [c async for c in synthesize_stream(client, d, request, PRIMARY_503, trace)]
    assert "".join(c["delta"].get("content") or "" for c in choices).startswith("[backup]")
    assert [(c["stage"], c["outcome"]) for c in trace.calls] == [("synthesis", "ok")]


async def test_a_panel_seat_answered_by_its_fallback_keeps_its_place_and_label(backends, client) -> None:
    from extproc.fusion.judge import assign_labels
    from extproc.fusion.looper import describe
    from extproc.fusion.panel import run_panel

    primary = models(backends)
    backup = primary.fallback_models[0]
    settings = {"include_intermediate_responses": True, "retries": {"attempts": 1}}
    plan = FusionPlan("d", panel=(primary, backup), judge=backup, config=FusionConfig.model_validate(settings))
    panel = await run_panel(client, plan, body(""), PRIMARY_503)
    assert [(c.model, c.asked) for c in panel.answers] == [("backup", "primary"), ("backup", "backup")]
    assert panel.failures == []
    trace = RunTrace("fusion", "d")
    describe(trace, plan, panel, assign_labels(panel.answers), None)
    responses = trace.fields["responses"]
    assert [(r["model"], r.get("fallback_for")) for r in responses] == [("backup", "primary"), ("backup", None)]
    assert {r["label"] for r in responses} == {"A", "B"}  # one label per seat, though one model answered both


async def test_each_model_tried_has_its_own_span(backends) -> None:
    from builders import traced_telemetry

    telemetry, exporter = traced_telemetry()
    client = ModelClient(telemetry=telemetry)
    try:
        with telemetry.tracer.start_as_current_span("run") as parent:
            await client.complete(models(backends), body(), time_limit=5, retry=ONCE, parent=parent)
    finally:
        await client.aclose()
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert [(s.attributes["quorum.model"], s.attributes.get("error.type")) for s in calls] == [
        ("primary", "503"),
        ("backup", None),
    ]
