"""Backpressure through a real Envoy: a full budget is an immediate OpenAI 503 with retry-after."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml
from conftest import backend_requests, clear_backends, module_stack

from extproc.dev.stack import Stack

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}


# one routing slot and one fusion run per worker
tight_stack = module_stack("admission", server="admission: {max_in_flight: 1, max_fusion_runs: 1, retry_after: 2}")


def _cap_extproc_streams(text: str) -> str:
    raw = yaml.safe_load(text)
    raw["envoy"].setdefault("limits", {})["max_extproc_streams"] = 2
    return yaml.safe_dump(raw)


# Two routing slots and an Envoy cap of two streams: two held routed requests both fit Quorum's
# budget, so whichever order a resumed worker reads them in, both are served.
capped_stack = module_stack(
    "stream-cap", server="admission: {max_in_flight: 2, max_fusion_runs: 1, retry_after: 2}", edit=_cap_extproc_streams
)


def body(text: str) -> bytes:
    return b'{"model":"quorum/auto","messages":[{"role":"user","content":"' + text.encode() + b'"}]}'


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", code)
    assert error["message"]


def test_request_held_in_routing_makes_the_next_one_a_503_at_once(tight_stack: Stack) -> None:
    release = threading.Event()
    result: dict[str, httpx.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield body("hello there")[:20]  # the headers are in: this request holds the routing slot
        release.wait(10)
        yield body("hello there")[20:]

    def send_slowly() -> None:
        with httpx.Client(base_url=tight_stack.envoy_url, timeout=20) as c:
            result["held"] = c.post(CHAT, content=slow_body(), headers=JSON)

    holder = threading.Thread(target=send_slowly)
    holder.start()
    try:
        metrics_url = f"http://{tight_stack.config.observability.metrics.listen}/metrics"
        deadline = time.monotonic() + 10
        # Wait until the slow request's headers hold the slot (probing instead would race with it:
        # a probe in flight when its headers arrive gets it refused, and every later probe passes).
        while 'quorum_admission_in_flight{budget="routing"} 1.0' not in httpx.get(metrics_url).text:
            assert time.monotonic() < deadline, "the slow request never reached Quorum"
            time.sleep(0.02)
        with httpx.Client(base_url=tight_stack.envoy_url, timeout=20) as c:
            refused = c.post(CHAT, content=body("hello there"), headers=JSON)
            assert_refused(refused, "routing_capacity_exceeded")
        assert 'quorum_admission_refusals_total{budget="routing"} 1.0' in httpx.get(metrics_url).text
    finally:
        release.set()
        holder.join(20)
    assert result["held"].status_code == 200
    assert result["held"].headers["x-fake-backend"] == "demo-small"


def test_full_fusion_budget_refuses_fusion_while_routed_requests_pass(tight_stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{tight_stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=20)
    done: dict[str, object] = {}

    def long_fusion() -> None:
        done["answer"] = client.chat.completions.create(
            model="quorum/auto", messages=[{"role": "user", "content": "compare these [[fake:delay_ms=1500]]"}]
        )

    clear_backends(tight_stack)
    runner = threading.Thread(target=long_fusion)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not backend_requests(tight_stack, "demo-small") and time.monotonic() < deadline:
            time.sleep(0.02)  # until the long run calls its panel: it holds the fusion slot
        with httpx.Client(base_url=tight_stack.envoy_url, timeout=20) as c:
            started = time.monotonic()
            refused = c.post(CHAT, content=body("compare this"), headers=JSON)
            refusal_seconds = time.monotonic() - started
            assert_refused(refused, "fusion_capacity_exceeded")
            assert refusal_seconds < 1.0  # answered at once, not after the 1.5 s run it would wait for
            routed = c.post(CHAT, content=body("hello there"), headers=JSON)
            assert routed.status_code == 200
            assert routed.headers["x-quorum-decision"] == "default"
        with pytest.raises(openai.InternalServerError) as info:  # what the SDK raises (and retries) on it
            client.chat.completions.create(model="quorum/auto", messages=[{"role": "user", "content": "compare"}])
        assert info.value.response.headers["retry-after"] == "2"
    finally:
        runner.join(20)
    assert "answer" in done


def extproc_streams(stack: Stack) -> int:
    stats = httpx.get(f"{stack.admin_url}/stats?filter=^cluster.quorum_extproc.upstream_rq_active$").text
    return int(stats.split(":")[1])


def test_requests_beyond_the_stream_budget_of_a_stuck_worker_are_refused_by_envoy_at_once(capped_stack: Stack) -> None:
    """A worker whose event loop makes no progress (here: frozen) cannot refuse anything itself.
    Envoy keeps at most `envoy.limits.max_extproc_streams` ext_proc streams open to it (2 here), so
    the next request gets an OpenAI 503 with retry-after at once instead of queueing behind them.
    (With the derived cap, max_in_flight + max_fusion_runs, two routed requests can exceed a routing
    budget of one once the worker resumes, and Quorum then refuses one itself.)"""
    held: list[httpx.Response] = []

    def routed() -> None:
        with httpx.Client(base_url=capped_stack.envoy_url, timeout=20) as c:
            held.append(c.post(CHAT, content=body("hello there"), headers=JSON))

    senders = [threading.Thread(target=routed) for _ in range(2)]
    capped_stack.signal("quorum", signal.SIGSTOP)
    try:
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 10
        while extproc_streams(capped_stack) < 2:
            assert time.monotonic() < deadline, "the two requests never reached the ext_proc cluster"
            time.sleep(0.02)
        with httpx.Client(base_url=capped_stack.envoy_url, timeout=20) as c:
            started = time.monotonic()
            refused = c.post(CHAT, content=body("hello there"), headers=JSON)
            elapsed = time.monotonic() - started
        assert_refused(refused, "router_overloaded")
        assert elapsed < 2.0  # not queued behind the frozen worker (it stays frozen for longer)
        time.sleep(max(0.0, 2.5 - elapsed))
    finally:
        capped_stack.signal("quorum", signal.SIGCONT)
        for sender in senders:
            sender.join(20)
    assert [r.status_code for r in held] == [200, 200]  # the held requests were served once it resumed
    with httpx.Client(base_url=capped_stack.envoy_url, timeout=20) as c:
        assert c.post(CHAT, content=body("hello there"), headers=JSON).status_code == 200
