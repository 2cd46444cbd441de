"""Compile a validated Config into the frozen Runtime the request path reads.

This is the only module that turns configuration into behaviour: signals are compiled, decisions
sorted, secrets read from the environment and static responses rendered once, so the hot path
does attribute reads and nothing else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from extproc.config import Config, ConfigError, FusionConfig, ModelConfig, Pricing
from extproc.config.providers import ALL_ENDPOINTS
from extproc.config.report import missing_api_keys
from extproc.decisions import Decision, compile_rule, rule_signals
from extproc.dialects import Dialect
from extproc.openai import render_model, render_model_list
from extproc.policy.access import ANONYMOUS, NO_ACCESS_RULES, Access, Identity, compile_access
from extproc.policy.guards import Guard, applies, compile_guard, guard_signals
from extproc.signals import SEMANTIC_KINDS, SignalSet, compile_signals
from extproc.signals import needs_engine as signals_need_engine

ALL_ENDPOINT_NAMES = frozenset(ALL_ENDPOINTS)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    upstream_model: str  # what the backend expects in "model"
    base_url: str
    authorization: str | None = field(default=None, repr=False)  # never logged
    supports_json_schema: bool = False
    dialect: Dialect = "openai"
    pricing: Pricing | None = None
    endpoints: frozenset[str] = ALL_ENDPOINT_NAMES  # which OpenAI endpoints the model serves
    fallbacks: tuple[str, ...] = ()  # tried next by Envoy, in order, when this model's backend fails
    # The same chain as Models, for the calls Quorum makes itself (extproc.models); one level deep.
    fallback_models: tuple[Model, ...] = field(default=(), repr=False, compare=False)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    models: dict[str, Model]
    auto_names: frozenset[str]
    fusion_names: frozenset[str]
    default_model: str | None
    decisions: tuple[Decision, ...]  # by descending priority, then file order
    local_decisions: tuple[Decision, ...]  # those whose algorithm answers locally (the fusion alias picks among them)
    signals: SignalSet
    local_signals: SignalSet  # what local_decisions read
    request_decision: Decision  # the fusion alias with no matching decision but a `fusion` plugin in the request
    max_body_bytes: int
    route_header: str
    decision_header: str
    models_body: bytes  # GET /v1/models
    model_bodies: dict[str, bytes]  # GET /v1/models/{id}
    account_usage: bool = False  # read routed responses for token usage
    request_stream_usage: bool = False  # ask streaming backends for usage, strip it if the client did not
    access: Access = NO_ACCESS_RULES
    # Per requested name (model or alias): the guards that apply, and every signal the request
    # needs (guards' and, for aliases, the decisions'), evaluated once.
    guards: dict[str, tuple[Guard, ...]] = field(default_factory=dict)
    request_signals: dict[str, SignalSet] = field(default_factory=dict)
    owners: tuple[tuple[str, str], ...] = ()  # (name, owned_by) for GET /v1/models
    created: int = 0

    def models_list(self, identity: Identity) -> bytes:
        """GET /v1/models for one caller: only the names it may use."""
        if identity is ANONYMOUS and not self.access.enabled:
            return self.models_body
        return render_model_list([(n, o) for n, o in self.owners if self.access.allows(n, identity)], self.created)

    embedder: Any = None  # the embedding engine, when semantic signals or an algorithm loaded one
    semantic: Any = None  # the SemanticContext (embedding engine, detector pool), kept for reloads to reuse


def build_runtime(config: Config, environ: dict[str, str] | None = None, semantic: Any = None) -> Runtime:
    """Compile `config`. Semantic signals get `semantic` (a SemanticContext) or one made for the config;
    `await prepare_runtime(runtime)` must run before serving when any is used."""
    env = os.environ if environ is None else environ
    if missing := missing_api_keys(config, env):
        raise ConfigError(missing)
    models = _with_fallback_models({m.name: _model(m, env) for m in config.providers.models})
    routing = config.routing

    from extproc.algorithms.compile import compile_algorithm  # the algorithms import this module's Model
    from extproc.fusion.algorithm import Fusion

    decisions = [
        Decision(
            name=d.name,
            priority=d.priority,
            order=order,
            rule=compile_rule(d.rules),
            models=tuple(r.model for r in d.model_refs),
            algorithm=compile_algorithm(d, f"routing.decisions[{order}].algorithm"),
            reads=frozenset(rule_signals(d.rules)),
        )
        for order, d in enumerate(routing.decisions)
    ]
    decisions.sort(key=lambda d: (-d.priority, d.order))
    local = tuple(d for d in decisions if d.algorithm.answers_locally)
    used = set().union(*(rule_signals(d.rules) for d in routing.decisions)) if routing.decisions else set()
    local_names = {d.name for d in local}
    local_used = {key for d in routing.decisions if d.name in local_names for key in rule_signals(d.rules)}
    guarded = guard_signals(config.guards)

    wants_embeddings = any(getattr(d.algorithm, "wants_embeddings", False) for d in decisions)
    if semantic is None and (wants_embeddings or any(kind in SEMANTIC_KINDS for kind, _ in used | guarded)):
        semantic = semantic_context(config, env, used | guarded, wants_embeddings)
    every_signal = compile_signals(routing.signals, used | guarded, semantic)

    created = int(time.time())
    owners = [(m.name, "quorum") for m in config.providers.models]
    owners += [(n, "quorum-router") for n in routing.auto_model_names]
    owners += [(n, "quorum-fusion") for n in routing.fusion_model_names]
    decision_keys = dict.fromkeys(routing.auto_model_names, used)
    decision_keys.update(dict.fromkeys(routing.fusion_model_names, local_used))
    guards: dict[str, tuple[Guard, ...]] = {}
    request_signals: dict[str, SignalSet] = {}
    for name, _ in owners:
        applicable = [g for g in config.guards if applies(g, name)]
        guards[name] = tuple(compile_guard(g) for g in applicable)
        request_signals[name] = every_signal.subset(guard_signals(applicable) | decision_keys.get(name, set()))
    return Runtime(
        config=config,
        models=models,
        auto_names=frozenset(routing.auto_model_names),
        fusion_names=frozenset(routing.fusion_model_names),
        default_model=config.providers.defaults.default_model,
        decisions=tuple(decisions),
        local_decisions=local,
        signals=every_signal.subset(used),
        local_signals=every_signal.subset(local_used),
        request_decision=Decision(
            name="fusion_request",
            priority=0,
            order=-1,
            rule=lambda _: 0.0,
            models=(),
            algorithm=Fusion(FusionConfig(), ()),
        ),
        max_body_bytes=config.server.max_body_bytes,
        route_header=config.server.route_header,
        decision_header=config.server.decision_header,
        models_body=render_model_list(owners, created),
        model_bodies={name: render_model(name, owner, created) for name, owner in owners},
        account_usage=config.observability.usage.enabled,
        request_stream_usage=config.observability.usage.enabled and config.observability.usage.request_stream_usage,
        access=compile_access(config.access),
        guards=guards,
        request_signals=request_signals,
        owners=tuple(owners),
        created=created,
        embedder=getattr(semantic, "engine", None),
        semantic=semantic,
    )


async def prepare_runtime(runtime: Runtime) -> None:
    """Load models and embed example phrases now, so the first request is not the slow one."""
    prepared: set[int] = set()
    for signals in (runtime.signals, runtime.local_signals, *runtime.request_signals.values()):
        await signals.prepare(skip=prepared)


def semantic_context(
    config: Config, env: Mapping[str, str], used: set[tuple[str, str]], needs_engine: bool = False
) -> Any:
    """The embedding engines (only those a used signal, or embedding consensus, needs) and a small
    pool for detectors."""
    from concurrent.futures import ThreadPoolExecutor

    from extproc.signals.semantic import SemanticContext

    routing = config.routing
    # Domain signals run on their own model (routing.embedding.domain_model): not a reason for `model`.
    needs_engine = needs_engine or signals_need_engine(routing.signals, [k for k in used if k[0] != "domain"])
    needs_domains = any(kind == "domain" for kind, _ in used)
    cfg = routing.embedding
    domain_cfg = cfg.model_copy(update={"model": cfg.domain_engine_model})
    engine = domain_engine = first_stage = None
    try:
        if needs_engine:
            engine = make_engine(cfg, env)
        if needs_domains:
            same = engine is not None and domain_cfg.model == cfg.model
            domain_engine = engine if same else make_engine(domain_cfg, env)
            if cfg.domain_first_stage:
                first = {"backend": "local", "model": cfg.domain_first_stage, "max_tokens": None}
                first_stage = make_engine(cfg.model_copy(update=first), env)
    except ImportError as exc:
        raise ConfigError(
            [
                f"routing.embedding: semantic signals and embedding consensus need the semantic extra ({exc}); "
                "install it with: pip install 'quorum[semantic]'"
            ]
        ) from None
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quorum-signals")
    return SemanticContext(
        engine,
        executor,
        domain_engine=domain_engine,
        first_stage=first_stage,
        first_stage_confidence=cfg.domain_first_stage_confidence,
    )


def make_engine(cfg: Any, env: Mapping[str, str]) -> Any:
    from extproc.semantic.engine import EngineUnavailable, RemoteEmbeddingEngine, local_engine

    try:
        if cfg.backend == "remote":
            engine: Any = RemoteEmbeddingEngine(
                cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, cache_size=cfg.cache_size, env=dict(env)
            )
        else:
            engine = local_engine(cfg.model, max_tokens=cfg.max_tokens, cache_size=cfg.cache_size, threads=cfg.threads)
        engine.load()
    except EngineUnavailable as exc:
        raise ConfigError([f"routing.embedding: {exc}"]) from None
    return engine


def _with_fallback_models(models: dict[str, Model]) -> dict[str, Model]:
    """Each model with its `fallbacks` resolved (validation has checked every name)."""
    return {
        name: replace(m, fallback_models=tuple(models[f] for f in m.fallbacks if f in models))
        for name, m in models.items()
    }


def _model(m: ModelConfig, env: os._Environ[str] | dict[str, str]) -> Model:
    authorization = None
    if m.api_key_env:
        key = env.get(m.api_key_env)
        if not key:
            raise ConfigError(
                [f"providers.models[{m.name}].api_key_env: environment variable {m.api_key_env} is not set"]
            )
        authorization = f"Bearer {key}"
    return Model(
        name=m.name,
        upstream_model=m.upstream_model,
        base_url=m.base_url,
        authorization=authorization,
        supports_json_schema=m.supports_json_schema,
        dialect=m.dialect,
        pricing=m.pricing,
        endpoints=frozenset(m.endpoints),
        fallbacks=tuple(m.fallbacks),
    )
