"""The values a model call produces: token usage, a completion, the retry policy and the call error.

Kept apart from the HTTP client (`extproc.models`) so telemetry and the algorithms can use them
without importing the client (and through it the runtime and telemetry: an import cycle).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: Usage | None) -> None:
        if other is not None:
            self.prompt_tokens += other.prompt_tokens
            self.completion_tokens += other.completion_tokens
            self.total_tokens += other.total_tokens

    @classmethod
    def parse(cls, data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None
        prompt = int(data.get("prompt_tokens") or 0)
        completion = int(data.get("completion_tokens") or 0)
        return cls(prompt, completion, int(data.get("total_tokens") or prompt + completion))

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class Completion:
    model: str  # the configured name that answered
    message: dict[str, Any]
    finish_reason: str
    usage: Usage  # summed over every attempt that reported usage
    latency: float  # seconds, all attempts included
    attempts: int
    response_model: str | None = None  # the `model` the backend reported
    logprobs: list[float] | None = None  # per output token, when asked for and the backend sent them
    fallback_for: str | None = None  # the model that was asked, when one of its `fallbacks` answered instead

    @property
    def asked(self) -> str:
        """The configured model this call was made for (a panel seat), whichever model answered."""
        return self.fallback_for or self.model

    @property
    def content(self) -> str:
        content = self.message.get("content")
        return content if isinstance(content, str) else ""

    @property
    def mean_logprob(self) -> float | None:
        """The answer's mean token log-probability (0 is certain); None without logprobs."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2
    backoff: float = 0.2
    max_backoff: float = 5.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return base * (0.5 + random.random() / 2)  # jitter keeps a panel's retries from marching in step


class ModelCallError(Exception):
    def __init__(self, model: str, reason: str, status: int | None = None, usage: Usage | None = None) -> None:
        super().__init__(f"{model}: {reason}")
        self.model = model
        self.reason = reason
        self.status = status
        self.usage = usage or Usage()
