"""`providers`: the models Quorum may route to or call, and where they live."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    field_validator,
)

from extproc.config.base import (
    CLUSTER_PATTERN,
    NAME_PATTERN,
    Strict,
)


class Pricing(Strict):
    """Price per million tokens, for the cost metric and span attribute."""

    prompt_per_1m: float = Field(0.0, ge=0)
    completion_per_1m: float = Field(0.0, ge=0)
    currency: str = "USD"


# The OpenAI endpoints Quorum routes (extproc.endpoints names its processors the same way).
EndpointName = Literal["chat", "responses", "completions", "embeddings"]
ALL_ENDPOINTS: tuple[EndpointName, ...] = ("chat", "responses", "completions", "embeddings")


class ModelConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    provider_model_id: str | None = None
    cluster: str | None = Field(None, pattern=CLUSTER_PATTERN)
    base_url: str
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The client's credential headers (bootstrap.credentials.CLIENT_CREDENTIAL_HEADERS) reach this backend only
    # when the operator opts in; api_key_env still replaces Authorization.
    forward_client_auth: bool = False
    supports_json_schema: bool = False
    # How this server differs from OpenAI in the calls Quorum makes to it (extproc/dialects.py).
    dialect: Literal["openai", "llama_cpp"] = "openai"
    pricing: Pricing | None = None
    endpoints: list[EndpointName] = Field(default_factory=lambda: list(ALL_ENDPOINTS), min_length=1)
    # Models Envoy tries next, in order, when this one's backend is down, overloaded or times out.
    fallbacks: list[str] = Field(default_factory=list)
    # Route explicit requests for this model inside Envoy when no policy needs Quorum (None: envoy.fast_path).
    fast_path: bool | None = None

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
