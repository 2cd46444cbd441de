"""The client's credential headers, which a model backend never sees unless the operator opts in."""

from __future__ import annotations

from collections.abc import Iterable

from extproc.config import ModelConfig

# Headers that carry the client's credentials for the gateway (OpenAI-style bearer, Anthropic and
# Azure style keys, Gemini's key, a proxy's credentials); a backend must not see them.
CLIENT_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization")


def credential_headers_to_remove(models: Iterable[ModelConfig]) -> list[str]:
    """The client's credential headers on a route to `models` (one model, or a fallback chain's):
    each one that any of them does not take from the client (`forward_client_auth`).

    Envoy applies the removal after ext_proc, so a model with `api_key_env` keeps the
    `authorization` Quorum set for it (its own key) and loses only the client's other headers.
    """
    removed: dict[str, None] = {}
    for model in models:
        if model.forward_client_auth:
            continue
        own_key = model.api_key_env is not None
        removed.update((name, None) for name in CLIENT_CREDENTIAL_HEADERS if not (own_key and name == "authorization"))
    return [name for name in CLIENT_CREDENTIAL_HEADERS if name in removed]
