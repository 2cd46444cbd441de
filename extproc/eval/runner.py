"""Run the eval: every arm answers every item through the gateway, then the grader grades each answer."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from extproc.config.providers import Pricing
from extproc.eval import grader
from extproc.eval.cost import Calls, answer_cost, calls_from_trace, find_trace
from extproc.eval.dataset import Item

# Transient statuses retried once (an upstream that closed a keep-alive connection Envoy reused is a 503).
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class Settings:
    base_url: str
    arms: list[str]
    grader_model: str
    api_key: str | None = None
    concurrency: int = 4
    max_tokens: int = 256
    timeout: float = 300.0
    grader_format: str = "auto"  # auto = json_schema, falling back to llama.cpp's json_object+schema


@dataclass
class Result:
    arm: str
    item: str
    latency_s: float
    answer: str = ""
    served_by: str | None = None
    error: str | None = None
    cost: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    calls: Calls = field(default_factory=lambda: Calls(made=1))
    score: float | None = None
    grade_error: str | None = None
    grader_cost: float = 0.0


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.done, self.out, self.width = total, 0, out, width

    def step(self, label: str) -> None:
        self.done += 1
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.out.write(f"\r[{bar}] {self.done}/{self.total} {label[:40]:<40}")
        if self.done == self.total:
            self.out.write("\n")
        self.out.flush()


class Evaluator:
    def __init__(self, settings: Settings, prices: Mapping[str, Pricing | None], client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.prices = prices
        self.client = client
        self.grader_format = "json_schema" if settings.grader_format == "auto" else settings.grader_format
        self.limit = asyncio.Semaphore(settings.concurrency)

    async def _post(self, body: dict[str, Any]) -> tuple[httpx.Response, float]:
        # A UUID request id: llama.cpp's server answers 400 to any other x-request-id.
        headers = {"x-request-id": str(uuid.uuid4())}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        started = time.monotonic()
        async with self.limit:
            response = await self.client.post("/chat/completions", json=body, headers=headers)
            if response.status_code in RETRY_STATUSES:  # once, as the openai SDK would: a reset keep-alive
                await asyncio.sleep(0.5)
                headers["x-request-id"] = str(uuid.uuid4())
                response = await self.client.post("/chat/completions", json=body, headers=headers)
        return response, time.monotonic() - started

    async def answer(self, arm: str, item: Item) -> Result:
        # max_tokens, not max_completion_tokens: llama.cpp caps only on the former.
        body = {"model": arm, "messages": item.messages, "max_tokens": self.settings.max_tokens, "temperature": 0}
        body.update(item.params)
        try:
            response, latency = await self._post(body)
        except httpx.HTTPError as err:
            return Result(arm, item.id, 0.0, error=f"{type(err).__name__}: {err}")
        result = Result(arm, item.id, latency, served_by=response.headers.get("x-quorum-model"))
        data = _json(response)
        if response.status_code != 200 or data is None:
            result.error = f"HTTP {response.status_code}: {_error_message(data, response)}"
            return result
        result.answer = _content(data)
        result.cost, result.usage = answer_cost(data, result.served_by or arm, self.prices)
        result.calls = calls_from_trace(find_trace(data))
        return result

    async def grade(self, item: Item, result: Result) -> None:
        if result.error is not None:
            result.score = 0.0  # a failed answer earns nothing; the error column says why
            return
        criteria = grader.criteria_for(item)
        body: dict[str, Any] = {
            "model": self.settings.grader_model,
            "messages": [{"role": "user", "content": grader.grader_prompt(item, result.answer)}],
            "max_tokens": 16 + 8 * len(criteria.all),
            "temperature": 0,
        }
        for attempt in range(2):
            used = self.grader_format
            fmt = grader.response_format(used, len(criteria.all))
            body.pop("response_format", None)
            if fmt is not None:
                body["response_format"] = fmt
            try:
                response, _ = await self._post(body)
            except httpx.HTTPError as err:
                result.grade_error = f"{type(err).__name__}: {err}"
                return
            data = _json(response)
            if response.status_code != 200 and attempt == 0 and self._fall_back(used):
                continue  # a server without OpenAI's json_schema: retry in llama.cpp's form
            break
        if response.status_code != 200 or data is None:
            result.grade_error = f"HTTP {response.status_code}: {_error_message(data, response)}"
            return
        result.grader_cost, _ = answer_cost(data, response.headers.get("x-quorum-model") or body["model"], self.prices)
        try:
            result.score = grader.score(criteria, grader.parse_verdicts(_content(data), len(criteria.all)))
        except grader.GradeParseError as err:
            result.grade_error = str(err)

    def _fall_back(self, used: str) -> bool:
        """After a failed `json_schema` grade, use llama.cpp's form from now on and retry this one,
        also when a concurrent grade already switched (its own attempt still used json_schema)."""
        if self.settings.grader_format != "auto" or used != "json_schema":
            return False
        self.grader_format = "json_object"
        return True


async def run(
    settings: Settings, items: list[Item], prices: Mapping[str, Pricing | None], progress: Progress | None = None
) -> list[Result]:
    timeout = httpx.Timeout(settings.timeout, connect=10.0)
    async with httpx.AsyncClient(base_url=settings.base_url.rstrip("/"), timeout=timeout) as client:
        evaluator = Evaluator(settings, prices, client)

        async def one(arm: str, item: Item) -> Result:
            result = await evaluator.answer(arm, item)
            if progress:
                progress.step(f"answered {arm} #{item.id}")
            await evaluator.grade(item, result)
            if progress:
                progress.step(f"graded {arm} #{item.id}")
            return result

        return list(await asyncio.gather(*(one(arm, item) for item in items for arm in settings.arms)))


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error_message(data: dict[str, Any] | None, response: httpx.Response) -> str:
    if data and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", ""))[:200]
    return response.text[:200] or "(empty body)"


def _content(data: Mapping[str, Any]) -> str:
    choices = data.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return message.get("content") or ""
