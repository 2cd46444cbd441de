"""The YAML configuration: schema, loading and validation. No behaviour lives here.

Structural checks come from the pydantic models; cross references (a rule naming an undeclared
signal, a decision naming an unknown model, ...) are checked in `_check_references` once the
structure is valid. Every problem of a stage is reported at once, as `dotted.path[index].key: what
is wrong`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

INTERNAL_HEADER_PREFIX = "x-quorum-"
EXTPROC_CLUSTER = "quorum_extproc"  # the Envoy cluster of Quorum's own gRPC endpoints
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"
_CLUSTER = r"^[A-Za-z0-9_.-]+$"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists `path: message` lines."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _duration(value: Any) -> Any:
    """Accept seconds as a number or a string with a unit: 250ms, 30s, 5m."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", value)
        if not m:
            raise ValueError("a duration is a number of seconds or a string like 250ms, 30s, 5m")
        number, unit = float(m.group(1)), m.group(2) or "s"
        return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    return value


def _token_count(value: Any) -> Any:
    """Accept 4000, "4000", "32K" or "1M"."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+)\s*([kKmM])?\s*", value)
        if not m:
            raise ValueError("a token count is an integer, optionally with a K or M suffix")
        return int(m.group(1)) * {None: 1, "k": 1000, "m": 1_000_000}[(m.group(2) or "").lower() or None]
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
Scope = Literal["last_user", "user", "conversation", "conversation_no_system"]
Fraction = Annotated[float, Field(ge=0, le=1)]
Tokens = Annotated[int, BeforeValidator(_token_count), Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- server and envoy


class ServerConfig(Strict):
    listen: str = "127.0.0.1:50051"
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, le=1024 * 1024 * 1024)
    workers: int = Field(1, ge=1, le=64)
    route_header: str = "x-quorum-model"
    decision_header: str = "x-quorum-decision"
    grace_period: Seconds = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_host_port(v)
        return v

    @model_validator(mode="after")
    def _worker_ports(self) -> ServerConfig:
        _, port = split_host_port(self.listen)
        if port + self.workers - 1 > 65535:
            raise ValueError(f"workers listen on consecutive ports from {port}: {self.workers} do not fit below 65536")
        return self

    @field_validator("route_header", "decision_header")
    @classmethod
    def _header_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9-]+", v):
            raise ValueError("a header name is lower-case letters, digits and dashes")
        return v


class EnvoyConfig(Strict):
    """Settings used only by `quorum envoy-config` when it renders the Envoy bootstrap."""

    listen: str = "127.0.0.1:8080"
    admin: str = "127.0.0.1:9901"
    # full_duplex_streamed (the default): Envoy sends the body without waiting for the headers
    # answer, so routing costs one ext_proc round trip instead of two, and fusion can stream its
    # answer token by token. buffered: Envoy buffers the body and enforces its own size limit
    # first; the routed upstream request keeps its content-length instead of going out chunked.
    request_body_mode: Literal["buffered", "full_duplex_streamed"] = "full_duplex_streamed"
    message_timeout: Seconds = 5.0
    max_message_timeout: Seconds = 600.0
    upstream_timeout: Seconds = 600.0
    retries: int = Field(2, ge=0, le=10)

    @field_validator("listen", "admin")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_host_port(v)
        return v


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------- providers


class Pricing(Strict):
    """Price per million tokens, for the cost metric and span attribute."""

    prompt_per_1m: float = Field(0.0, ge=0)
    completion_per_1m: float = Field(0.0, ge=0)
    currency: str = "USD"


class ModelConfig(Strict):
    name: str = Field(pattern=_NAME)
    provider_model_id: str | None = None
    cluster: str | None = Field(None, pattern=_CLUSTER)
    base_url: str
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    supports_json_schema: bool = False
    pricing: Pricing | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an absolute http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not have a query or fragment")
        return v.rstrip("/")

    @property
    def upstream_model(self) -> str:
        return self.provider_model_id or self.name

    @property
    def cluster_name(self) -> str:
        return self.cluster or re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)


class ProviderDefaults(Strict):
    default_model: str | None = None


class ProvidersConfig(Strict):
    defaults: ProviderDefaults = ProviderDefaults()
    models: list[ModelConfig] = Field(min_length=1)


# ---------------------------------------------------------------- signals


class KeywordSignal(Strict):
    name: str = Field(pattern=_NAME)
    keywords: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    operator: Literal["any", "all", "none"] = "any"
    case_sensitive: bool = False
    scope: Scope = "last_user"

    @field_validator("operator", mode="before")
    @classmethod
    def _anchor_operators(cls, v: Any) -> Any:
        # vLLM Semantic Router spells these OR / AND / NOR.
        return {"or": "any", "and": "all", "nor": "none"}.get(str(v).lower(), str(v).lower())


class RegexSignal(Strict):
    name: str = Field(pattern=_NAME)
    patterns: list[str] = Field(min_length=1)
    operator: Literal["any", "all", "none"] = "any"
    case_sensitive: bool = True
    scope: Scope = "last_user"

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        from extproc.signals.lexical import compile_regex

        for i, pattern in enumerate(v):
            try:
                compile_regex(pattern)
            except ValueError as exc:
                raise ValueError(f"patterns[{i}]: {exc}") from None
        return v


class ContextSignal(Strict):
    name: str = Field(pattern=_NAME)
    min_tokens: Tokens = 0
    max_tokens: Tokens | None = None

    @model_validator(mode="after")
    def _range(self) -> ContextSignal:
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError("max_tokens must be >= min_tokens")
        if self.min_tokens == 0 and self.max_tokens is None:
            raise ValueError("set min_tokens, max_tokens or both")
        return self


class HeaderSignal(Strict):
    name: str = Field(pattern=_NAME)
    header: str
    values: list[str] | None = None  # None: the header being present is enough
    case_sensitive: bool = False

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        v = v.lower()
        if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", v):
            raise ValueError(f"{v!r} is not a valid header name")
        if v.startswith(INTERNAL_HEADER_PREFIX):
            raise ValueError(f"{INTERNAL_HEADER_PREFIX}* headers are removed before routing and cannot be signals")
        return v


class EmbeddingSignal(Strict):
    """Similar to example phrases: score = best_weight * best + (1 - best_weight) * mean of the top_k."""

    name: str = Field(pattern=_NAME)
    candidates: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    threshold: Fraction = 0.6
    top_k: int = Field(3, ge=1, le=64)
    best_weight: Fraction = 0.75
    scope: Scope = "last_user"


class DomainSignal(Strict):
    """One domain; the request gets the nearest domain of its scope when it wins by `margin`."""

    name: str = Field(pattern=_NAME)
    examples: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    threshold: Fraction = 0.25
    margin: Fraction = 0.02
    scope: Scope = "last_user"


class ComplexitySignal(Strict):
    """Matches when the request is closer to the `level` side (hard or easy examples) by `margin`."""

    name: str = Field(pattern=_NAME)
    hard: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    easy: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    level: Literal["hard", "easy"] = "hard"
    margin: Fraction = 0.02
    scope: Scope = "last_user"


class LanguageSignal(Strict):
    """Matches when the detected language (ISO 639-1) is one of `languages` (default: the name)."""

    name: str = Field(pattern=_NAME)
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] | None = None
    threshold: Fraction = 0.5
    scope: Scope = "last_user"

    @model_validator(mode="after")
    def _supported(self) -> LanguageSignal:
        try:
            from extproc.signals.language import supported_languages
        except ImportError:
            return self  # reported when the signal is built: the semantic extra is missing
        try:
            known = supported_languages()
        except Exception:  # lingua not installed
            return self
        unknown = sorted(set(self.languages or [self.name]) - known)
        if unknown:
            raise ValueError(f"unsupported language code(s) {unknown}; use ISO 639-1 codes lingua knows")
        return self


PIIKind = Literal["email", "phone", "payment_card", "iban", "ip_address", "us_ssn"]


class PIISignal(Strict):
    """Matches when any of `kinds` is found; reports which kinds, never the values."""

    name: str = Field(pattern=_NAME)
    kinds: list[PIIKind] = ["email", "phone", "payment_card", "iban", "ip_address", "us_ssn"]
    scope: Scope = "user"


class JailbreakSignal(Strict):
    """Known attack phrasing (patterns), plus similarity to attack examples when `embeddings`."""

    name: str = Field(pattern=_NAME)
    threshold: Fraction = 0.5
    embeddings: bool = True
    scope: Scope = "user"


class SignalsConfig(Strict):
    keyword: list[KeywordSignal] = []
    regex: list[RegexSignal] = []
    context: list[ContextSignal] = []
    header: list[HeaderSignal] = []
    embedding: list[EmbeddingSignal] = []
    domain: list[DomainSignal] = []
    complexity: list[ComplexitySignal] = []
    language: list[LanguageSignal] = []
    pii: list[PIISignal] = []
    jailbreak: list[JailbreakSignal] = []


class EmbeddingEngineConfig(Strict):
    """Where embeddings come from: the bundled offline model, or an OpenAI-compatible endpoint."""

    backend: Literal["local", "remote"] = "local"
    model: str = "all-MiniLM-L6-v2"
    max_tokens: int = Field(256, ge=8, le=512)
    cache_size: int = Field(4096, ge=0)
    threads: int | None = Field(None, ge=1, le=64)  # inference threads (default: one per core)
    base_url: str | None = None  # remote: e.g. http://embeddings:8000/v1
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _remote_needs_url(self) -> EmbeddingEngineConfig:
        if self.backend == "remote" and not self.base_url:
            raise ValueError("backend remote needs base_url")
        return self


# ---------------------------------------------------------------- decisions


class RuleLeaf(Strict):
    type: str
    name: str
    threshold: Fraction | None = None  # match only when the signal's confidence is at least this


def _rule_kind(value: Any) -> str:
    """A condition with a `type` is a leaf; anything else is an operator node."""
    if isinstance(value, dict):
        return "leaf" if "type" in value else "node"
    return "leaf" if isinstance(value, RuleLeaf) else "node"


class RuleNode(Strict):
    operator: Literal["AND", "OR", "NOT"]
    conditions: list[Rule]

    @field_validator("operator", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return str(v).upper()

    @model_validator(mode="after")
    def _arity(self) -> RuleNode:
        if self.operator == "NOT" and len(self.conditions) != 1:
            raise ValueError("NOT takes exactly one condition")
        if self.operator == "OR" and not self.conditions:
            raise ValueError("OR needs at least one condition (an empty AND is the catch-all)")
        return self


Rule = Annotated[Annotated[RuleLeaf, Tag("leaf")] | Annotated[RuleNode, Tag("node")], Discriminator(_rule_kind)]
RuleNode.model_rebuild()


class ModelRef(Strict):
    model: str


class StageTimeouts(Strict):
    panel: Seconds = 60.0
    judge: Seconds = 60.0
    synthesis: Seconds = 120.0


class RetryConfig(Strict):
    attempts: int = Field(2, ge=1, le=10)
    backoff: Seconds = 0.2
    max_backoff: Seconds = 5.0


class AnalysisOverride(Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    max_completion_tokens: int | None = Field(None, gt=0)


class FusionConfig(Strict):
    model: str | None = None
    analysis_models: list[str] = []
    analysis_overrides: dict[str, AnalysisOverride] = {}
    max_concurrent: int = Field(8, ge=1, le=64)
    min_successful_responses: int = Field(1, ge=1)
    round_timeout: Seconds | None = None
    timeouts: StageTimeouts = StageTimeouts()
    retries: RetryConfig = RetryConfig()
    temperature: float | None = Field(None, ge=0, le=2)
    max_completion_tokens: int | None = Field(None, gt=0)
    include_analysis: bool = True
    include_intermediate_responses: bool = True
    on_error: Literal["skip", "fail"] = "skip"
    analysis_template: str | None = None
    synthesis_template: str | None = None
    judge_prompt_version: str = "fusion-v1"
    heartbeat_interval: Seconds = 2.0  # true streaming: SSE comments while panel and judge work


class AlgorithmConfig(Strict):
    type: Literal["static", "fusion"] = "static"
    fusion: FusionConfig | None = None


class DecisionConfig(Strict):
    name: str = Field(pattern=_NAME)
    description: str | None = None
    priority: int = 0
    rules: Rule | None = None
    model_refs: list[ModelRef] = Field([], alias="modelRefs")
    algorithm: AlgorithmConfig = AlgorithmConfig()


class RoutingConfig(Strict):
    auto_model_names: list[str] = ["quorum/auto", "auto"]
    fusion_model_names: list[str] = ["quorum/fusion"]
    embedding: EmbeddingEngineConfig = EmbeddingEngineConfig()
    signals: SignalsConfig = SignalsConfig()
    decisions: list[DecisionConfig] = []


class TracingConfig(Strict):
    # none: no spans (the default unless OTEL_TRACES_EXPORTER says otherwise); otlp_grpc / otlp_http
    # honour the standard OTEL_EXPORTER_OTLP_* variables when `endpoint` is not set.
    exporter: Literal["none", "otlp_grpc", "otlp_http", "console"] | None = None
    endpoint: str | None = None
    service_name: str = "quorum"
    sample_ratio: float = Field(1.0, ge=0, le=1)
    capture_content: bool = False  # record prompt and answer text on model-call spans


class MetricsConfig(Strict):
    enabled: bool = True
    listen: str = "127.0.0.1:9190"  # worker i serves on port + i

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_host_port(v)
        return v


class UsageConfig(Strict):
    # Read routed responses (JSON bodies, SSE streams) for token usage: costs ext_proc messages
    # on the response path, so it is off unless asked for.
    enabled: bool = False
    # Ask streaming backends for a usage chunk, and remove it for clients that did not ask.
    request_stream_usage: bool = False


class ObservabilityConfig(Strict):
    tracing: TracingConfig = TracingConfig()
    metrics: MetricsConfig = MetricsConfig()
    access_log: bool = True  # one JSON line per request on the quorum.access logger
    usage: UsageConfig = UsageConfig()
    debug_headers: bool = False  # x-quorum-signals / x-quorum-confidence on responses


class Config(Strict):
    version: Literal["v1"] = "v1"
    server: ServerConfig = ServerConfig()
    envoy: EnvoyConfig = EnvoyConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    providers: ProvidersConfig
    routing: RoutingConfig = RoutingConfig()

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.providers.models if m.name == name)


# ---------------------------------------------------------------- loading


def load_config(path: str | Path) -> Config:
    text = Path(path).read_text(encoding="utf-8")
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "config") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from None
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping"], source)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()], source) from None
    problems = _check_references(config)
    if problems:
        raise ConfigError(problems, source)
    return config


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("leaf", "node") or "[" in part or "(" in part:
            continue  # union tags and validator labels pydantic inserts; not part of the user's path
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: Any) -> str:
    path = _dotted(tuple(err["loc"]))
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    return f"{path}: {msg}" if path else msg


def _check_references(cfg: Config) -> list[str]:
    problems: list[str] = []
    models = [m.name for m in cfg.providers.models]
    model_set = set(models)
    routing = cfg.routing

    for i, name in enumerate(models):
        if models.index(name) != i:
            problems.append(f"providers.models[{i}].name: duplicate model name {name!r}")
    clusters: dict[str, str] = {}
    for i, m in enumerate(cfg.providers.models):
        origin = _origin(m.base_url)
        if m.cluster_name == EXTPROC_CLUSTER:
            problems.append(f"providers.models[{i}].cluster: {EXTPROC_CLUSTER!r} is reserved for Quorum itself")
        known = clusters.setdefault(m.cluster_name, origin)
        if known != origin:
            problems.append(f"providers.models[{i}].cluster: cluster {m.cluster_name!r} already points at {known}")
    if (m_default := cfg.providers.defaults.default_model) and m_default not in model_set:
        problems.append(f"providers.defaults.default_model: unknown model {m_default!r} ({_known(models)})")

    aliases = {
        "routing.auto_model_names": routing.auto_model_names,
        "routing.fusion_model_names": routing.fusion_model_names,
    }
    seen_alias: dict[str, str] = {}
    for path, names in aliases.items():
        for j, alias in enumerate(names):
            if alias in model_set:
                problems.append(f"{path}[{j}]: {alias!r} is also a configured model name")
            if alias in seen_alias:
                problems.append(f"{path}[{j}]: {alias!r} is already listed in {seen_alias[alias]}")
            seen_alias[alias] = path

    declared: dict[str, list[str]] = {}
    for kind in SignalsConfig.model_fields:
        names = [s.name for s in getattr(routing.signals, kind)]
        declared[kind] = names
        for j, n in enumerate(names):
            if names.index(n) != j:
                problems.append(f"routing.signals.{kind}[{j}].name: duplicate {kind} signal {n!r}")

    decision_names: set[str] = set()
    for i, d in enumerate(routing.decisions):
        base = f"routing.decisions[{i}]"
        if d.name in decision_names:
            problems.append(f"{base}.name: duplicate decision name {d.name!r}")
        decision_names.add(d.name)
        if d.rules is not None:
            problems.extend(_check_rule(d.rules, f"{base}.rules", declared))
        for j, ref in enumerate(d.model_refs):
            if ref.model not in model_set:
                problems.append(f"{base}.modelRefs[{j}].model: unknown model {ref.model!r} ({_known(models)})")
        if d.algorithm.type == "fusion":
            problems.extend(_check_fusion(d, base, model_set, models))
        elif not d.model_refs:
            problems.append(f"{base}.modelRefs: a {d.algorithm.type} decision needs at least one model")
        elif d.algorithm.fusion is not None:
            problems.append(f"{base}.algorithm.fusion: only allowed when algorithm.type is fusion")
    return problems


def _check_fusion(d: DecisionConfig, base: str, model_set: set[str], models: list[str]) -> list[str]:
    problems = []
    fusion = d.algorithm.fusion or FusionConfig()
    path = f"{base}.algorithm.fusion"
    panel = fusion.analysis_models or [r.model for r in d.model_refs]
    if not panel:
        problems.append(f"{path}.analysis_models: a fusion decision needs panel models (here or in modelRefs)")
    for j, name in enumerate(fusion.analysis_models):
        if name not in model_set:
            problems.append(f"{path}.analysis_models[{j}]: unknown model {name!r} ({_known(models)})")
    if fusion.model is not None and fusion.model not in model_set:
        problems.append(f"{path}.model: unknown model {fusion.model!r} ({_known(models)})")
    for name in fusion.analysis_overrides:
        if name not in panel:
            problems.append(f"{path}.analysis_overrides.{name}: not one of the panel models {panel}")
    if panel and fusion.min_successful_responses > len(panel):
        problems.append(
            f"{path}.min_successful_responses: {fusion.min_successful_responses} exceeds the panel size {len(panel)}"
        )
    return problems


def _check_rule(node: RuleNode | RuleLeaf, path: str, declared: dict[str, list[str]]) -> list[str]:
    if isinstance(node, RuleLeaf):
        if node.type not in declared:
            return [f"{path}.type: unknown signal type {node.type!r} (supported: {', '.join(declared)})"]
        if node.name not in declared[node.type]:
            names = ", ".join(declared[node.type]) or "none"
            return [f"{path}.name: undeclared {node.type} signal {node.name!r} (declared: {names})"]
        return []
    problems: list[str] = []
    for k, child in enumerate(node.conditions):
        problems.extend(_check_rule(child, f"{path}.conditions[{k}]", declared))
    return problems


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def _known(names: list[str]) -> str:
    return "configured: " + ", ".join(names)
