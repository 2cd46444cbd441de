"""Admission: full budgets refuse at once with an OpenAI 503 and retry-after; fusion never starves routing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from builders import body_msg, chat, chat_headers, config_text, set_headers

from extproc.admission import Admission
from extproc.config import AdmissionConfig, parse_config
from extproc.handler import StreamHandler
from extproc.pb import ep
from extproc.route import RouteContext
from extproc.runtime import Runtime, build_runtime
from extproc.telemetry.metrics import Metrics


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    line = "          heartbeat_interval: 100ms\n"
    assert line in config_text()
    text = config_text().replace(line, line + "          max_concurrent_runs: 2\n")
    return build_runtime(parse_config(text), environ={"QUORUM_TEST_LARGE_KEY": "k"})


def refusal(responses: list[ep.ProcessingResponse]) -> tuple[int, dict, dict[str, str]]:
    (response,) = responses
    assert response.WhichOneof("response") == "immediate_response"
    return (
        response.immediate_response.status.code,
        orjson.loads(response.immediate_response.body)["error"],
        set_headers(response),
    )


async def answers(handler: StreamHandler, message: ep.ProcessingRequest) -> list[ep.ProcessingResponse]:
    return [r async for r in handler.handle(message)]


async def test_routing_budget_refuses_the_next_request_with_503_and_retry_after(runtime):
    metrics = Metrics()
    admission = Admission(AdmissionConfig(max_in_flight=2, retry_after=3), metrics)
    held = [StreamHandler(runtime, admission=admission) for _ in range(2)]
    for handler in held:
        (go_on,) = await answers(handler, chat_headers())
        assert go_on.WhichOneof("response") == "request_headers"  # admitted: on to the body
    refused = StreamHandler(runtime, admission=admission)
    status, error, headers = refusal(await answers(refused, chat_headers()))
    assert status == 503
    assert error["type"] == "server_error"
    assert error["code"] == "routing_capacity_exceeded"
    assert "server.admission.max_in_flight" in error["message"]
    assert headers["retry-after"] == "3"
    assert headers["x-request-id"] == "req-1"
    assert metrics.registry.get_sample_value("quorum_admission_refusals_total", {"budget": "routing"}) == 1
    assert metrics.registry.get_sample_value("quorum_admission_in_flight", {"budget": "routing"}) == 2

    # a routed request gives its slot back as soon as its route is answered
    (routed,) = await answers(held[0], body_msg(chat("hello")))
    assert routed.WhichOneof("response") == "request_body"
    assert admission.routing == 1
    (admitted,) = await answers(StreamHandler(runtime, admission=admission), chat_headers())
    assert admitted.WhichOneof("response") == "request_headers"


async def test_a_request_that_fails_or_ends_early_gives_its_slot_back(runtime):
    admission = Admission(AdmissionConfig(max_in_flight=1))
    handler = StreamHandler(runtime, admission=admission)
    await answers(handler, chat_headers())
    (bad,) = await answers(handler, body_msg(b"{not json"))
    assert bad.immediate_response.status.code == 400
    handler.release()  # the server does this when the stream ends, however it ends
    handler.release()  # and twice is harmless
    assert admission.routing == 0


def blocking_fusion(started: asyncio.Queue[str], gate: asyncio.Event):
    async def runner(ctx: RouteContext) -> AsyncIterator[ep.ProcessingResponse]:
        started.put_nowait(ctx.match.decision.name)
        await gate.wait()
        yield ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(body=b"fused"))

    return runner


async def run_fusion(runtime: Runtime, admission: Admission, runner) -> list[ep.ProcessingResponse]:
    handler = StreamHandler(runtime, runner, admission=admission)
    await answers(handler, chat_headers())
    try:
        return await answers(handler, body_msg(chat("compare these two")))
    finally:
        handler.release()


@pytest.mark.parametrize(
    ("config", "code"),
    [
        (AdmissionConfig(max_fusion_runs=1), "fusion_capacity_exceeded"),
        (AdmissionConfig(max_fusion_runs=0), "fusion_decision_capacity_exceeded"),  # the decision allows 2
    ],
    ids=["global", "per_decision"],
)
async def test_full_fusion_budget_refuses_fusion_but_routed_requests_still_pass(runtime, config, code):
    admission = Admission(config)
    started: asyncio.Queue[str] = asyncio.Queue()
    gate = asyncio.Event()
    runner = blocking_fusion(started, gate)
    limit = 1 if code == "fusion_capacity_exceeded" else 2
    running = [asyncio.create_task(run_fusion(runtime, admission, runner)) for _ in range(limit)]
    for _ in range(limit):
        await started.get()

    status, error, headers = refusal(await run_fusion(runtime, admission, runner))
    assert (status, error["code"], headers["retry-after"]) == (503, code, "1")
    assert started.empty()  # the refused run never started

    routed = StreamHandler(runtime, runner, admission=admission)
    await answers(routed, chat_headers())
    (response,) = await answers(routed, body_msg(chat("hello")))
    assert set_headers(response)["x-quorum-model"] == "demo-small"

    gate.set()
    for task in running:
        assert (await task)[-1].immediate_response.body == b"fused"
    assert (admission.fusion_runs, admission.fusion_by_decision["deliberate"]) == (0, 0)


async def test_a_cancelled_fusion_run_gives_its_slot_back(runtime):
    admission = Admission(AdmissionConfig(max_fusion_runs=1))
    started: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(run_fusion(runtime, admission, blocking_fusion(started, asyncio.Event())))
    await started.get()
    assert admission.fusion_runs == 1
    task.cancel()  # Envoy cancels the stream when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.fusion_runs == 0


def test_zero_means_no_limit_and_reconfigure_keeps_counts() -> None:
    admission = Admission(AdmissionConfig(max_in_flight=0))
    for _ in range(10_000):
        admission.enter_routing()
    admission.configure(AdmissionConfig(max_in_flight=5))
    assert admission.routing == 10_000
    with pytest.raises(Exception, match="limit of 5"):
        admission.enter_routing()
