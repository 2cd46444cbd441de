"""One HTTP request seen through one ext_proc stream: which phase we are in and what to answer.

The path of an OpenAI request (the endpoint processor is looked up by exact path, see
extproc.endpoints):
  request_headers  -> strip client-sent internal headers, answer /v1/models, reject bad paths early
  request_body     -> endpoint.parse -> signals -> decisions -> route (endpoint.rewrite, envoy.route_request)
                                                              or a local answer (extproc.algorithms)
Anything Quorum answers itself ends the exchange; later messages (there should be none) get an
empty answer of the matching kind so Envoy never waits.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from urllib.parse import unquote

from extproc import envoy
from extproc.admission import Admission
from extproc.config import GUARDS_HEADER, INTERNAL_HEADER_PREFIX
from extproc.config.fallbacks import chain_key
from extproc.decisions import Match
from extproc.endpoints import ENDPOINTS, EndpointProcessor, ParsedRequest
from extproc.endpoints.base import model_first
from extproc.endpoints.honoured import check_honoured
from extproc.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    QuorumError,
)
from extproc.pb import ep, pm
from extproc.policy.access import not_found
from extproc.policy.guards import Verdict
from extproc.policy.selection import select_route
from extproc.route import RouteContext
from extproc.runtime import Model, Runtime
from extproc.signals import Evaluation, SignalSet
from extproc.telemetry.recorder import RequestRecorder
from extproc.telemetry.setup import NO_TELEMETRY, Telemetry
from extproc.telemetry.usage import StreamUsage

log = logging.getLogger("quorum.handler")

MODELS_PATH = "/v1/models"

# Answers the body phase of a request whose decision's algorithm answers locally (fusion, ...).
LocalRunner = Callable[[RouteContext], AsyncIterator[ep.ProcessingResponse]]


class StreamHandler:
    """Per-stream state. Two Envoy body modes are supported, detected from the first message:

    - BUFFERED: Envoy waits for the headers answer, then sends the whole body in one message; the
      route goes in the body answer (headers, new body, content-length, clear_route_cache).
    - FULL_DUPLEX_STREAMED: Envoy sends the body in chunks without waiting; the headers answer is
      held back until the body is complete and carries the route, then the (rewritten) body is sent
      back as a streamed body. Fusion may answer with a StreamedImmediateResponse instead.
    """

    __slots__ = (
        "admission",
        "answered",
        "chain",
        "chunks",
        "duplex",
        "endpoint",
        "evaluation",
        "headers",
        "kind",
        "local",
        "matched",
        "received",
        "recorder",
        "request_id",
        "response_json",
        "routed",
        "routing_slot",
        "runtime",
        "stream_usage",
        "strip_usage",
        "verdict",
    )

    def __init__(
        self,
        runtime: Runtime,
        local: LocalRunner | None = None,
        telemetry: Telemetry | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.runtime = runtime
        self.local = local
        self.admission = admission or UNLIMITED
        self.routing_slot = False  # holds a routing slot of `admission` until the route is answered
        self.recorder = RequestRecorder(telemetry or NO_TELEMETRY)
        self.headers: dict[str, str] = {}
        self.request_id = "-"
        self.kind = "unknown"  # an endpoint's name (chat, ...) | passthrough
        self.endpoint: EndpointProcessor | None = None  # the processor of an OpenAI path Quorum routes
        self.duplex = False
        self.chunks: list[bytes] = []  # duplex mode: the body so far
        self.received = 0
        self.answered = False  # an ImmediateResponse was sent: the exchange is over
        self.routed: Model | None = None  # the model a routed request went to (the one that answered, for a chain)
        self.chain = False  # routed to a fallback chain: Envoy picks the model per attempt
        self.strip_usage = False  # we asked the backend for a usage chunk the client did not want
        self.stream_usage: StreamUsage | None = None
        self.response_json: list[bytes] | None = None  # a routed JSON response, read for its usage
        self.matched: list[str] = []  # signals that matched, for debug headers
        self.verdict: Verdict | None = None  # the guards that matched
        self.evaluation: Evaluation | None = None  # this request's signals, computed on demand

    async def handle(self, request: ep.ProcessingRequest) -> AsyncIterator[ep.ProcessingResponse]:
        which = request.WhichOneof("request")
        try:
            if which == "request_headers":
                self.duplex = request.protocol_config.request_body_mode == _FULL_DUPLEX
                response = self.on_request_headers(request.request_headers)
                if response is not None:
                    yield response
            elif which == "request_body":
                async for response in self.on_request_body(request.request_body):
                    yield response
            elif which == "request_trailers":
                async for response in self.on_request_trailers():
                    yield response
            elif which == "response_headers":
                yield self.on_response_headers(request.response_headers)
            elif which == "response_body":
                yield self.on_response_body(request.response_body)
            else:
                yield _EMPTY_ANSWERS.get(which, _EMPTY_ANSWERS["request_body"])
        except QuorumError as err:
            self.answered = True
            self.recorder.answered(err.status, "error")
            guards = {GUARDS_HEADER: ",".join(self.verdict.names)} if self.verdict else {}
            yield envoy.error_response(err, {**self._echo(), **guards})
        except Exception:
            log.exception("internal error handling %s (request id %s)", which, self.request_id)
            self.answered = True
            self.recorder.answered(500, "error")
            yield envoy.error_response(InternalError("Internal error in the router."), self._echo())

    # ------------------------------------------------------------------ request headers

    def on_request_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse | None:
        headers = envoy.header_map(msg)
        self.headers = headers
        self.request_id = headers.get("x-request-id", "-")
        self.recorder.start(headers)
        path = headers.get(":path", "/").partition("?")[0]
        method = headers.get(":method", "GET")

        endpoint = ENDPOINTS.get(path)
        if endpoint is not None:
            if method != "POST":
                raise MethodNotAllowed(f"Method {method} is not allowed for {path}; use POST.")
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.runtime.max_body_bytes:
                raise self._too_large(int(length))
            if msg.end_of_stream:
                raise BadRequest("The request body is empty; send a JSON request body.", code="invalid_json")
            self.admission.enter_routing()
            self.routing_slot = True
            self.endpoint = endpoint
            self.kind = endpoint.name
            if self.duplex:
                return None  # answered once the body has decided the route
        elif path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            return self._models(method, path)
        elif path == "/v1" or path.startswith("/v1/"):
            raise NotFound(f"Invalid URL ({method} {path})")
        else:
            self.kind = "passthrough"  # not an OpenAI path: Envoy's own routes decide
            self.recorder.kind = "passthrough"
        return envoy.continue_request_headers(self._internal_headers())

    def _internal_headers(self) -> list[str]:
        """Client-sent headers that only Quorum may set; removed so nobody can force a route."""
        rt = self.runtime
        return [
            k
            for k in self.headers
            if k.startswith(INTERNAL_HEADER_PREFIX) or k == rt.route_header or k == rt.decision_header
        ]

    def _models(self, method: str, path: str) -> ep.ProcessingResponse:
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"Method {method} is not allowed for {path}; use GET.")
        self.answered = True
        self.recorder.answered(200, "models")
        rt = self.runtime
        identity = rt.access.identity(self.headers)
        if path == MODELS_PATH:
            return envoy.immediate(200, rt.models_list(identity), headers=self._echo())
        model_id = unquote(path[len(MODELS_PATH) + 1 :])  # the SDK sends quorum/auto as quorum%2Fauto
        body = rt.model_bodies.get(model_id)
        if body is None or not rt.access.allows(model_id, identity):
            raise not_found(model_id)
        return envoy.immediate(200, body, headers=self._echo())

    # ------------------------------------------------------------------ request body

    async def on_request_body(self, msg: ep.HttpBody) -> AsyncIterator[ep.ProcessingResponse]:
        if self.endpoint is None:
            yield envoy.streamed_body(msg.body, msg.end_of_stream) if self.duplex else _EMPTY_ANSWERS["request_body"]
            return
        if not self.duplex:
            if len(msg.body) > self.runtime.max_body_bytes:
                raise self._too_large(len(msg.body))
            async for response in self._complete(msg.body, trailers=False):
                yield response
            return
        self.received += len(msg.body)
        if self.received > self.runtime.max_body_bytes:
            raise self._too_large(self.received)  # Envoy does not limit streamed bodies: we must
        self.chunks.append(msg.body)
        if msg.end_of_stream:
            async for response in self._complete(b"".join(self.chunks), trailers=False):
                yield response

    async def on_request_trailers(self) -> AsyncIterator[ep.ProcessingResponse]:
        """Duplex mode: trailers end the body; anything else only needs an acknowledgement."""
        if self.duplex and self.endpoint is not None:
            async for response in self._complete(b"".join(self.chunks), trailers=True):
                yield response
            if self.answered:
                return
        yield envoy.TRAILERS_CONTINUE

    async def _complete(self, body: bytes, trailers: bool) -> AsyncIterator[ep.ProcessingResponse]:
        assert self.endpoint is not None  # only OpenAI paths reach the body phase here
        chat = self.endpoint.parse(body)
        match = await self._decide(chat)
        self.release()
        decision = match.decision
        local = decision.algorithm.answers_locally
        check_honoured(chat.body, local, "" if local else decision.models[0])
        if local:
            if not self.endpoint.answers_locally:
                raise BadRequest(
                    f"The '{decision.algorithm.name}' decision '{decision.name}' answers itself, which "
                    f"{self.endpoint.name} requests cannot take; name a model instead.",
                    param="model",
                    code="fusion_unsupported_endpoint",
                )
            if self.local is None:
                raise InternalError("Local answers are not enabled on this router.", code="algorithm_unavailable")
            self.admission.enter_local(decision)
            try:
                self.answered = True
                self.recorder.decided(decision.name, decision.priority, match.confidence, "", decision.algorithm.name)
                debug = dict(self._debug(match))
                if self.verdict is not None:
                    debug[GUARDS_HEADER] = ",".join(self.verdict.names)
                local_chat, renderer = self.endpoint.local_request(chat), self.endpoint.renderer(chat)
                ctx = RouteContext(
                    local_chat,
                    self.headers,
                    match,
                    self.request_id,
                    self.runtime,
                    self.duplex,
                    self.recorder,
                    debug,
                    renderer,
                    call_headers=dict(self.verdict.headers) if self.verdict else None,
                )
                async for response in self.local(ctx):
                    yield response
            finally:
                self.admission.leave_local(decision)
            return
        headers, new_body = self._route(chat, match)
        headers += self._debug(match)
        self.recorder.decided(decision.name, decision.priority, match.confidence, decision.models[0], "route")
        if not self.duplex:
            yield envoy.route_request(headers, new_body)
            return
        yield envoy.route_headers(headers, self._internal_headers())
        # Envoy sends a streamed body upstream chunked (it drops content-length), so no length to fix.
        yield envoy.streamed_body(body if new_body is None else new_body, end_of_stream=not trailers)

    async def _decide(self, chat: ParsedRequest) -> Match:
        rt = self.runtime
        model = chat.model
        if (model in rt.auto_names or model in rt.fusion_names) and not self.endpoint.routes_by_alias:
            raise BadRequest(
                f"'{model}' picks a model by routing decision, which {self.endpoint.name} requests do not take; "
                "name the model to use.",
                param="model",
                code="model_required",
            )
        try:
            selection = await select_route(
                rt, chat.model, chat.body, rt.access.identity(self.headers), lambda s: self._evaluation(s, chat)
            )
        finally:
            self._record_signals()
        verdict = self.verdict = selection.verdict
        if verdict is not None:
            self.recorder.guarded(verdict)
            if verdict.block is not None:
                self.recorder.decision = f"guard:{verdict.block.name}"
                raise verdict.block.violation()
        assert selection.match is not None
        return selection.match

    def _evaluation(self, signals: SignalSet, chat: ParsedRequest) -> Evaluation:
        self.evaluation = Evaluation(signals, chat, self.headers)
        return self.evaluation

    def _record_signals(self) -> None:
        """The signals span and debug header list the signals computed (routing skips what it need not)."""
        evaluation = self.evaluation
        if evaluation is not None and evaluation.started is not None and len(evaluation.signals):
            self.matched = self.recorder.signals(evaluation.ordered(), evaluation.started, evaluation.skipped)

    def _guard_headers(self) -> list[tuple[str, str]]:
        """`x-quorum-guards` (which guards matched) and the headers of label guards."""
        if self.verdict is None:
            return []
        return [(GUARDS_HEADER, ",".join(self.verdict.names)), *self.verdict.headers]

    def _debug(self, match: Match) -> list[tuple[str, str]]:
        """`x-quorum-signals` and `x-quorum-confidence`, when the operator enabled debug headers."""
        if not self.recorder.telemetry.debug_headers:
            return []
        return [("x-quorum-signals", ",".join(self.matched) or "-"), ("x-quorum-confidence", f"{match.confidence:.4f}")]

    def _route(self, chat: ParsedRequest, match: Match) -> tuple[list[tuple[str, str]], bytes | None]:
        """The headers that steer Envoy to the model, and the body rewritten for it (None: unchanged)."""
        rt = self.runtime
        model = self.routed = rt.models[match.decision.models[0]]
        if self.endpoint.name not in model.endpoints:
            via = "" if match.decision.name == "explicit" else f" (chosen by decision '{match.decision.name}')"
            raise ModelNotFound(
                f"The model '{model.name}'{via} does not serve {self.endpoint.name} requests.", param="model"
            )
        names = match.decision.models
        chain = names if len(names) > 1 else (model.name, *model.fallbacks)
        route = chain_key(chain)  # Envoy's route for the chain fails over between its models
        headers = [(rt.route_header, route), (rt.decision_header, match.decision.name), *self._guard_headers()]
        if model.authorization is not None:
            headers.append(("authorization", model.authorization))
        body, self.strip_usage = self.endpoint.rewrite(chat, model.upstream_model, rt.request_stream_usage)
        if len(chain) > 1:  # Envoy rewrites `model` per attempt, at the front of the body (bootstrap.fallbacks)
            body = model_first(body if body is not None else chat.with_model(model.upstream_model))
            self.chain = True
        return headers, body

    # ------------------------------------------------------------------ response (usage accounting)

    def on_response_headers(self, msg: ep.HttpHeaders) -> ep.ProcessingResponse:
        """Routed responses: note the status, and ask for the body when it carries usage."""
        response = ep.ProcessingResponse(response_headers=ep.HeadersResponse())
        if self.routed is None or not self.runtime.account_usage:
            return response
        headers = envoy.header_map(msg)
        status = headers.get(":status", "")
        if status.isdigit():
            self.recorder.answered(int(status))
        if self.chain:  # the chain's route names the model that answered (bootstrap.fallbacks)
            answered = self.runtime.models.get(headers.get(self.runtime.route_header, ""))
            if answered is not None:
                self.routed = answered
                self.recorder.answered_by(answered.name)
        content_type = headers.get("content-type", "")
        if msg.end_of_stream:
            return response
        if content_type.startswith("text/event-stream"):
            self.stream_usage = self.endpoint.stream_usage(self.strip_usage)
            body_mode = pm.ProcessingMode.STREAMED
        elif "json" in content_type:
            self.response_json = []
            body_mode = pm.ProcessingMode.BUFFERED
        else:
            return response
        if not self.duplex:  # in duplex mode the body streams to us anyway (see bootstrap)
            response.mode_override.response_body_mode = body_mode
        self.recorder.incomplete = True  # until the body's end arrives
        return response

    def on_response_body(self, msg: ep.HttpBody) -> ep.ProcessingResponse:
        if self.routed is None:
            return _EMPTY_ANSWERS["response_body"]
        if msg.end_of_stream:
            self.recorder.incomplete = False
        if self.stream_usage is None:
            if self.response_json is not None:
                self.response_json.append(msg.body)
                if msg.end_of_stream:
                    self.recorder.add_usage(self.routed, self.endpoint.json_usage(b"".join(self.response_json)))
                    self.response_json = None
            return _EMPTY_ANSWERS["response_body"]
        replacement = self.stream_usage.feed(msg.body, msg.end_of_stream)
        self.recorder.add_usage(self.routed, self.stream_usage.final_usage(msg.end_of_stream))
        if replacement is None:
            return _EMPTY_ANSWERS["response_body"]
        return envoy.replace_response_body(replacement)

    # ------------------------------------------------------------------ helpers

    def release(self) -> None:
        """Give back the routing slot (once the route is decided, or when the stream ends early)."""
        if self.routing_slot:
            self.routing_slot = False
            self.admission.leave_routing()

    def _too_large(self, size: int) -> PayloadTooLarge:
        limit = self.runtime.max_body_bytes
        return PayloadTooLarge(f"The request body is {size} bytes; the limit is {limit} bytes.")

    def _echo(self) -> dict[str, str]:
        rid = self.headers.get("x-request-id")
        return {"x-request-id": rid} if rid else {}


_FULL_DUPLEX = pm.ProcessingMode.FULL_DUPLEX_STREAMED
UNLIMITED = Admission()  # handlers built without a worker's admission (tests, tools)

_EMPTY_ANSWERS = {
    "request_headers": ep.ProcessingResponse(request_headers=ep.HeadersResponse()),
    "response_headers": ep.ProcessingResponse(response_headers=ep.HeadersResponse()),
    "request_body": ep.ProcessingResponse(request_body=ep.BodyResponse()),
    "response_body": ep.ProcessingResponse(response_body=ep.BodyResponse()),
    "request_trailers": ep.ProcessingResponse(request_trailers=ep.TrailersResponse()),
    "response_trailers": ep.ProcessingResponse(response_trailers=ep.TrailersResponse()),
}
