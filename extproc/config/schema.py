"""The whole configuration file's schema."""

from __future__ import annotations

from typing import Literal

from extproc.config.base import Strict
from extproc.config.observability import ObservabilityConfig
from extproc.config.policy import AccessConfig, GuardConfig
from extproc.config.providers import (
    ModelConfig,
    ProvidersConfig,
)
from extproc.config.routing import RoutingConfig
from extproc.config.server import (
    EnvoyConfig,
    ServerConfig,
)


class Config(Strict):
    version: Literal["v1"] = "v1"
    server: ServerConfig = ServerConfig()
    envoy: EnvoyConfig = EnvoyConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    providers: ProvidersConfig
    routing: RoutingConfig = RoutingConfig()
    guards: list[GuardConfig] = []
    access: AccessConfig = AccessConfig()

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.providers.models if m.name == name)
