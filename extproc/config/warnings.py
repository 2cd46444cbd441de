"""Settings that are valid but unsafe: `quorum validate` prints them, `quorum serve` logs them."""

from __future__ import annotations

from urllib.parse import urlsplit

from extproc.config.schema import Config


def config_warnings(config: Config) -> list[str]:
    warnings = []
    https = [m.name for m in config.providers.models if urlsplit(m.base_url).scheme == "https"]
    if https and not config.envoy.tls.verify:
        warnings.append(
            "envoy.tls.verify is false: Envoy does not check the certificates of the https backends "
            f"({', '.join(https)}), so their API keys can go to an impostor"
        )
    forwarded = [m.name for m in config.providers.models if m.forward_client_auth]
    if forwarded:
        warnings.append(f"forward_client_auth: the client's credential headers reach {', '.join(forwarded)}")
    return warnings
