"""Request fields Quorum must honour or refuse, never drop: `plugins` and, on local answers, `n`.

A routed request goes to one backend as sent, so its fields are the backend's to judge, except the
fusion plugin, which only Quorum can act on. A locally answered (fusion) request is rebuilt for
each model call, so a field the run cannot honour would be lost silently: it is a 400 instead.
"""

from __future__ import annotations

from typing import Any

from extproc.errors import BadRequest

FUSION_PLUGIN = "fusion"


def check_honoured(body: dict[str, Any], answered_locally: bool, model: str) -> None:
    """Raise the 400 for the first field this request asks for that its answer cannot give."""
    plugins = body.get("plugins")
    if plugins is not None:
        if not isinstance(plugins, list):
            raise BadRequest("'plugins' must be an array", param="plugins", code="invalid_value")
        for i, plugin in enumerate(plugins):
            _check_plugin(plugin, f"plugins[{i}]", answered_locally, model)
    n = body.get("n")
    if answered_locally and isinstance(n, int) and n > 1:
        raise BadRequest(
            f"A fusion answer is one synthesis; 'n' must be 1 (got {n}). Send {n} requests for {n} answers.",
            param="n",
            code="unsupported_value",
        )


def _check_plugin(plugin: Any, path: str, answered_locally: bool, model: str) -> None:
    if not isinstance(plugin, dict) or not isinstance(plugin.get("id"), str):
        raise BadRequest(f"'{path}' must be an object with a string 'id'", param=f"{path}.id", code="invalid_value")
    plugin_id = plugin["id"]
    if plugin_id == FUSION_PLUGIN and not answered_locally:
        raise BadRequest(
            f"The '{FUSION_PLUGIN}' plugin ({path}) cannot take effect: this request is routed to the single "
            f"model '{model}'. Send it with a fusion model name (for example quorum/fusion) instead.",
            param=path,
            code="plugin_not_applicable",
        )
    if plugin_id != FUSION_PLUGIN and answered_locally:
        raise BadRequest(
            f"The '{plugin_id}' plugin ({path}) cannot take effect on a fusion answer; "
            f"only the '{FUSION_PLUGIN}' plugin can.",
            param=path,
            code="plugin_not_applicable",
        )
