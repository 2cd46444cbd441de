"""The YAML configuration: schema, loading and validation. No behaviour lives here.

One module per top-level part of the file: `server` (and `envoy`), `providers`, `signals`,
`routing` (decisions, rules, fusion), `observability`; `schema` puts them together and `base`
holds the shared types. Structural checks come from the pydantic models; cross references (a rule
naming an undeclared signal, a decision naming an unknown model, ...) are checked by
`validation.check_references` once the structure is valid. Every problem of a stage is reported at
once, as `dotted.path[index].key: what is wrong`. Import from `extproc.config`, not the modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from extproc.config.base import (
    CLUSTER_PATTERN,
    EXTPROC_CLUSTER,
    GUARDS_HEADER,
    INTERNAL_HEADER_PREFIX,
    NAME_PATTERN,
    ConfigError,
    Fraction,
    Scope,
    Seconds,
    SecondsOrZero,
    Strict,
    Tokens,
    split_host_port,
)
from extproc.config.observability import (
    MetricsConfig,
    ObservabilityConfig,
    TracingConfig,
    UsageConfig,
)
from extproc.config.policy import (
    AccessConfig,
    AccessRule,
    GuardConfig,
)
from extproc.config.providers import (
    ModelConfig,
    Pricing,
    ProviderDefaults,
    ProvidersConfig,
)
from extproc.config.routing import (
    AlgorithmConfig,
    AnalysisOverride,
    ConfidenceConfig,
    DecisionConfig,
    EarlyExitConfig,
    FusionConfig,
    GroundingConfig,
    ModelRef,
    RetryConfig,
    RoutingConfig,
    Rule,
    RuleLeaf,
    RuleNode,
    StageTimeouts,
)
from extproc.config.schema import Config
from extproc.config.server import (
    AdmissionConfig,
    EnvoyConfig,
    ServerConfig,
    SupervisionConfig,
)
from extproc.config.signals import (
    ComplexitySignal,
    ContextSignal,
    DomainSignal,
    EmbeddingEngineConfig,
    EmbeddingSignal,
    HeaderSignal,
    JailbreakSignal,
    KeywordSignal,
    LanguageSignal,
    PIIKind,
    PIISignal,
    RegexSignal,
    SignalsConfig,
)
from extproc.config.source import ConfigSource, Snapshot
from extproc.config.validation import check_references, describe

__all__ = [
    "CLUSTER_PATTERN",
    "EXTPROC_CLUSTER",
    "GUARDS_HEADER",
    "INTERNAL_HEADER_PREFIX",
    "NAME_PATTERN",
    "AccessConfig",
    "AccessRule",
    "AdmissionConfig",
    "AlgorithmConfig",
    "AnalysisOverride",
    "ComplexitySignal",
    "ConfidenceConfig",
    "Config",
    "ConfigError",
    "ConfigSource",
    "ContextSignal",
    "DecisionConfig",
    "DomainSignal",
    "EarlyExitConfig",
    "EmbeddingEngineConfig",
    "EmbeddingSignal",
    "EnvoyConfig",
    "Fraction",
    "FusionConfig",
    "GroundingConfig",
    "GuardConfig",
    "HeaderSignal",
    "JailbreakSignal",
    "KeywordSignal",
    "LanguageSignal",
    "MetricsConfig",
    "ModelConfig",
    "ModelRef",
    "ObservabilityConfig",
    "PIIKind",
    "PIISignal",
    "Pricing",
    "ProviderDefaults",
    "ProvidersConfig",
    "RegexSignal",
    "RetryConfig",
    "RoutingConfig",
    "Rule",
    "RuleLeaf",
    "RuleNode",
    "Scope",
    "Seconds",
    "SecondsOrZero",
    "ServerConfig",
    "SignalsConfig",
    "Snapshot",
    "StageTimeouts",
    "Strict",
    "SupervisionConfig",
    "Tokens",
    "TracingConfig",
    "UsageConfig",
    "load_config",
    "parse_config",
    "split_host_port",
    "validate_document",
]


def load_config(path: str | Path) -> Config:
    """A config file, or a directory of them (merged as described in `config.source`)."""
    return validate_document(ConfigSource(path).read().raw, source=str(path))


def parse_config(text: str, source: str = "config") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from None
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping"], source)
    return validate_document(raw, source)


def validate_document(raw: dict[str, Any], source: str = "config") -> Config:
    """Schema and cross-reference checks of a parsed document; every problem at once."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([describe(err) for err in exc.errors()], source) from None
    problems = check_references(config)
    if problems:
        raise ConfigError(problems, source)
    return config
