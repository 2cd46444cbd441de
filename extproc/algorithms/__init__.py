"""The algorithm seam: what a decision does with a request once it is chosen.

A decision's `algorithm.type` names an entry of `ALGORITHMS`. At load (runtime build) the
algorithm's config section is validated and compiled into one object; per request the handler
either routes (an algorithm that does not answer locally, such as `static`) or hands the request
to the local answerer (`extproc.algorithms.serve`), which runs `start(ctx).answer()` and renders
the result. The handler never knows which algorithm it is serving.

Shared machinery lives in the context: the model client, the recorder (spans, metrics), the run
trace (stages, model calls, usage sum, degrade notes), the request body and call headers.
Registering an algorithm needs no edit anywhere else:

    @register("echo")
    def build(settings: None, decision: DecisionConfig) -> Algorithm: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from extproc.algorithms.trace import RunTrace
    from extproc.config import DecisionConfig
    from extproc.models import ModelClient
    from extproc.route import RouteContext
    from extproc.runtime import Runtime


@dataclass(slots=True)
class Answer:
    """What an algorithm produced: a whole message, or (streaming requests in duplex mode) a stream
    of `choices[]` deltas that ends once the trace is complete."""

    message: dict[str, Any] | None = None
    finish_reason: str = "stop"
    stream: AsyncIterator[dict[str, Any]] | None = None


@dataclass(slots=True)
class Run:
    """A started run: `model` answers (the route header reports it), `headers` go to the client
    before any work is done (streaming starts with them), `answer()` does the work."""

    model: str
    answer: Callable[[], Awaitable[Answer]]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class RunContext:
    route: RouteContext
    client: ModelClient
    trace: RunTrace

    @property
    def runtime(self) -> Runtime:
        return self.route.runtime

    @property
    def body(self) -> dict[str, Any]:
        return self.route.chat.body

    @property
    def streaming(self) -> bool:
        """The client asked for SSE and Envoy lets us send it as it is produced (duplex mode)."""
        return self.route.duplex and self.route.chat.stream

    @property
    def call_headers(self) -> dict[str, str]:
        """Headers every model call carries: the request id, so one request can be followed, and
        the headers of the label guards that matched."""
        rid = self.route.request_id
        return {**self.route.call_headers, "x-request-id": rid} if rid != "-" else dict(self.route.call_headers)

    def require_access(self, models: Iterable[str]) -> None:
        """The caller must be allowed every model the run will call: else the unknown-model 404."""
        access = self.runtime.access
        access.require(models, access.identity(self.route.headers))


class Algorithm(Protocol):
    name: str  # the registered type; the trace appears under this key in the response
    answers_locally: bool  # False: the handler routes to the decision's first model through Envoy
    budget: float  # the longest a run may take (s): Envoy's per-message timeout is extended to it
    heartbeat_interval: float  # streaming: SSE comments this often while nothing else is sent

    def start(self, ctx: RunContext) -> Run:
        """Check the request (errors raised here are ordinary 4xx answers) and plan the run."""
        ...


# build(settings, decision config) -> Algorithm; settings is the validated section (or None).
Builder = Callable[[Any, "DecisionConfig"], Algorithm]
# check(settings, decision config, configured model names) -> problems, "path-suffix: message".
Checker = Callable[[Any, "DecisionConfig", list[str]], list[str]]


@dataclass(frozen=True, slots=True)
class AlgorithmKind:
    build: Builder
    settings: type[BaseModel] | None = None  # the model of `algorithm.<type>`; None: no section
    check: Checker | None = None


ALGORITHMS: dict[str, AlgorithmKind] = {}


def register(
    name: str, settings: type[BaseModel] | None = None, check: Checker | None = None
) -> Callable[[Builder], Builder]:
    def add(build: Builder) -> Builder:
        ALGORITHMS[name] = AlgorithmKind(build, settings, check)
        return build

    return add
