"""The one place tests build ext_proc protobuf messages, configs and traced telemetry."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from extproc.handler import StreamHandler
from extproc.pb import core, ep
from extproc.telemetry.setup import Telemetry
from extproc.telemetry.spans import RecordExpandingExporter, SpanWriter

BASE_CONFIG = """
version: v1
server: {{listen: 127.0.0.1:{grpc_port}, max_body_bytes: {max_body}, drain_delay: 0s}}
envoy:
  listen: 127.0.0.1:{envoy_port}
  admin: 127.0.0.1:{admin_port}
  message_timeout: 500ms
  request_body_mode: {body_mode}
{envoy_extra}
observability:
  metrics: {{listen: "127.0.0.1:{metrics_port}"}}
  tracing: {tracing}
  usage: {usage}
  debug_headers: {debug_headers}
providers:
  defaults: {{default_model: demo-small}}
  models:
    - name: demo-small
      provider_model_id: small-v1
      cluster: demo_small
      base_url: http://127.0.0.1:{small_port}/v1
    - name: demo-coder
      provider_model_id: coder-v1
      cluster: demo_coder
      base_url: http://127.0.0.1:{coder_port}/v1
    - name: demo-large
      provider_model_id: large-v1
      cluster: demo_large
      base_url: http://127.0.0.1:{large_port}/v1
      api_key_env: QUORUM_TEST_LARGE_KEY
routing:
  auto_model_names: [quorum/auto, auto]
  fusion_model_names: [quorum/fusion]
  signals:
    keyword:
      - {{name: code, keywords: [python, "stack trace"], operator: any, case_sensitive: false}}
      - {{name: compare, keywords: [compare, "pros and cons"], operator: any}}
    regex:   [{{name: ticket, patterns: ["[A-Z]+-[0-9]+"]}}]
    context: [{{name: long_prompt, min_tokens: 4000}}]
    header:  [{{name: premium, header: x-user-tier, values: [gold]}}]
    pii:     [{{name: personal, kinds: [email, us_ssn]}}]
    jailbreak: [{{name: attack, embeddings: false}}]
  decisions:
    - name: coding
      priority: 100
      rules: {{operator: AND, conditions: [{{type: keyword, name: code}}]}}
      modelRefs: [{{model: demo-coder}}]
    - name: premium
      priority: 150
      rules: {{operator: OR, conditions: [{{type: header, name: premium}}, {{type: regex, name: ticket}}]}}
      modelRefs: [{{model: demo-large}}]
    - name: deliberate
      priority: 200
      rules: {{operator: OR, conditions: [{{type: keyword, name: compare}}, {{type: context, name: long_prompt}}]}}
      algorithm:
        type: fusion
        fusion:
          model: demo-large
          analysis_models: [demo-small, demo-coder]
          heartbeat_interval: 100ms
          early_exit: {{consensus: 0.99}}
"""

# Operator policy over BASE_CONFIG: jailbreak attempts blocked and personal data kept on the
# "on-premises" model (demo-coder) for every request; demo-large only for the `research` client,
# whose identity the trusted Lua filter below derives from its API key (as ext_authz would).
POLICY = """
guards:
  - name: no_jailbreak
    rules: {type: jailbreak, name: attack}
    action: block
    message: This request tries to override the assistant's instructions.
  - name: pii_on_prem
    rules: {type: pii, name: personal}
    action: route
    model: demo-coder
    headers: {x-data-class: personal}
access:
  identity_header: x-client-id
  rules:
    - {name: research_only, models: [demo-large], clients: [research]}
"""


def jailbreak_guard(model: str) -> str:
    """A guard that blocks jailbreak attempts on one model only (the others may take the fast path)."""
    return f"""
guards:
  - name: no_jailbreak
    rules: {{type: jailbreak, name: attack}}
    action: block
    applies_to: [{model}]
"""


IDENTITY_FILTER = """  identity_filters:
    - name: envoy.filters.http.lua
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
        default_source_code:
          inline_string: |
            function envoy_on_request(handle)
              if handle:headers():get("authorization") == "Bearer research-key" then
                handle:headers():replace("x-client-id", "research")
              end
            end
"""

PORT_KEYS = ("grpc_port", "envoy_port", "admin_port", "small_port", "coder_port", "large_port", "metrics_port")


def config_text(
    max_body: int = 1 << 20,
    body_mode: str = "full_duplex_streamed",
    tracing: str = "{exporter: none}",
    usage: str = "{enabled: false}",
    debug_headers: bool = False,
    envoy_extra: str = "",
    extra: str = "",
    **ports: int,
) -> str:
    values = dict.fromkeys(PORT_KEYS, 1)
    values.update(ports)
    return (
        BASE_CONFIG.format(
            max_body=max_body,
            body_mode=body_mode,
            tracing=tracing,
            usage=usage,
            debug_headers=str(debug_headers).lower(),
            envoy_extra=envoy_extra.rstrip("\n"),
            **values,
        )
        + extra
    )


def headers_msg(
    headers: dict[str, str], end_of_stream: bool = False, which: str = "request_headers"
) -> ep.ProcessingRequest:
    hmap = core.HeaderMap(headers=[core.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
    return ep.ProcessingRequest(**{which: ep.HttpHeaders(headers=hmap, end_of_stream=end_of_stream)})


def chat_headers(**extra: str) -> ep.ProcessingRequest:
    base = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        "content-type": "application/json",
        "x-request-id": "req-1",
    }
    return headers_msg({**base, **extra})


def body_msg(body: bytes | dict[str, Any]) -> ep.ProcessingRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return ep.ProcessingRequest(request_body=ep.HttpBody(body=raw, end_of_stream=True))


def chat(text: str, model: str = "quorum/auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def set_headers(response: ep.ProcessingResponse) -> dict[str, str]:
    """Headers set by a body or headers response (or an immediate response), by name."""
    which = response.WhichOneof("response")
    if which == "immediate_response":
        mutation = response.immediate_response.headers
    else:
        mutation = getattr(response, which).response.header_mutation
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


async def exchange(handler: StreamHandler, *messages: ep.ProcessingRequest) -> list[ep.ProcessingResponse]:
    """Feed `messages` to the handler in order, stopping once it has answered the request itself."""
    out = []
    for message in messages:
        out.extend([r async for r in handler.handle(message)])
        if handler.answered:
            break
    return out


def error_of(response: ep.ProcessingResponse) -> tuple[int, dict]:
    assert response.WhichOneof("response") == "immediate_response"
    imm = response.immediate_response
    assert set_headers(response)["content-type"] == "application/json"
    return imm.status.code, orjson.loads(imm.body)["error"]


def traced_telemetry(ratio: float = 1.0, **options: Any) -> tuple[Telemetry, InMemorySpanExporter]:
    """Telemetry exporting every span synchronously to memory, routing records expanded, sampled at `ratio`.
    `options` are further Telemetry fields (access_log, debug_headers, ...)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    processor = SimpleSpanProcessor(RecordExpandingExporter(exporter))
    provider.add_span_processor(processor)
    telemetry = Telemetry(
        tracer=provider.get_tracer("t"),
        metrics=None,
        provider=provider,
        spans=SpanWriter(provider, processor, ratio),
        **options,
    )
    return telemetry, exporter


def runtime_with_decision(decision: dict[str, Any], **config: Any) -> Any:
    """The test config plus `decision` (highest priority, matched by the keyword `compare`)."""
    import yaml

    from extproc.config import parse_config
    from extproc.runtime import build_runtime

    raw = yaml.safe_load(config_text(**config))
    rules = {"operator": "AND", "conditions": [{"type": "keyword", "name": "compare"}]}
    raw["routing"]["decisions"].append({"priority": 300, "rules": rules, **decision})
    return build_runtime(parse_config(yaml.safe_dump(raw)), environ={"QUORUM_TEST_LARGE_KEY": "k"})


async def answer_locally(
    runtime: Any, client: Any, body: dict[str, Any], duplex: bool = False, telemetry: Telemetry | None = None
) -> tuple[Any, list[ep.ProcessingResponse]]:
    """One chat request through StreamHandler and the local answerer; returns the handler and every answer."""
    from extproc.algorithms.serve import LocalAnswerer
    from extproc.handler import StreamHandler
    from extproc.pb import pm

    handler = StreamHandler(runtime, LocalAnswerer(client), telemetry)
    headers = chat_headers()
    if duplex:
        headers.protocol_config.request_body_mode = pm.ProcessingMode.FULL_DUPLEX_STREAMED
    out = [r async for r in handler.handle(headers)]
    out += [r async for r in handler.handle(body_msg(body))]
    return handler, out


def sse_events(responses: list[ep.ProcessingResponse]) -> list[dict[str, Any]]:
    """The JSON events of a streamed immediate response (duplex) or of an SSE immediate response."""
    if responses[-1].WhichOneof("response") == "immediate_response":
        raw = responses[-1].immediate_response.body
    else:
        raw = b"".join(r.streamed_immediate_response.body_response.body for r in responses)
    return [orjson.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]


def read_stream(stream: Any, trace_key: str) -> tuple[str, Any, Any]:
    """An SDK chat stream read to its end: the text, the trace found under `trace_key`, the usage chunk."""
    content, trace, usage = "", None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        content += "".join(c.delta.content or "" for c in chunk.choices)
        trace = (chunk.model_extra or {}).get(trace_key) or trace
        usage = chunk.usage or usage
    return content, trace, usage
