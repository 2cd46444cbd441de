"""What one fusion run will do: panel, judge and settings, from the decision and the request's plugin."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from extproc.config import FusionConfig
from extproc.errors import BadRequest
from extproc.modeltypes import RetryPolicy
from extproc.runtime import Model, Runtime

PLUGIN_ID = "fusion"


@dataclass(frozen=True, slots=True)
class FusionPlan:
    decision: str
    panel: tuple[Model, ...]
    judge: Model
    config: FusionConfig

    @property
    def retry(self) -> RetryPolicy:
        r = self.config.retries
        return RetryPolicy(r.attempts, r.backoff, r.max_backoff)

    @property
    def budget(self) -> float:
        return budget(self.config)

    def without(self, names: set[str]) -> FusionPlan:
        """The plan for the panel members not yet asked (the quorum shrinks with them)."""
        panel = tuple(m for m in self.panel if m.name not in names)
        quorum = max(1, self.config.min_successful_responses - (len(self.panel) - len(panel)))
        config = self.config.model_copy(update={"min_successful_responses": quorum})
        return replace(self, panel=panel, config=config)


def budget(config: FusionConfig) -> float:
    """The longest a run may take: every stage at its timeout, the judge asked twice."""
    t = config.timeouts
    return t.panel + 2 * t.judge + t.synthesis


def fusion_plugin(body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    plugins = body.get("plugins")
    if plugins is None:
        return None
    if not isinstance(plugins, list):
        raise BadRequest("'plugins' must be an array", param="plugins", code="invalid_value")
    for i, plugin in enumerate(plugins):
        if isinstance(plugin, dict) and plugin.get("id") == PLUGIN_ID:
            return i, plugin
    return None


def build_plan(
    runtime: Runtime, decision: str, config: FusionConfig, models: tuple[str, ...], body: dict[str, Any]
) -> FusionPlan:
    """Panel and judge from the settings (or the decision's `models`), overridden by a
    `plugins: [{"id": "fusion", ...}]` entry in the request."""
    panel_names = list(config.analysis_models or models)
    judge_name = config.model
    found = fusion_plugin(body)
    if found is not None:
        index, plugin = found
        path = f"plugins[{index}]"
        if "analysis_models" in plugin:
            names = plugin["analysis_models"]
            if not isinstance(names, list) or not names:
                raise BadRequest(
                    f"'{path}.analysis_models' must be a non-empty array of model names",
                    param=f"{path}.analysis_models",
                    code="invalid_value",
                )
            panel_names = [_configured(runtime, n, f"{path}.analysis_models[{j}]") for j, n in enumerate(names)]
        if "model" in plugin:
            judge_name = _configured(runtime, plugin["model"], f"{path}.model")
    if not panel_names:
        raise BadRequest("A fusion run needs at least one panel model.", param="plugins", code="invalid_value")
    judge_name = judge_name or panel_names[0]
    return FusionPlan(
        decision=decision,
        panel=tuple(runtime.models[n] for n in dict.fromkeys(panel_names)),
        judge=runtime.models[judge_name],
        config=config,
    )


def _configured(runtime: Runtime, name: Any, param: str) -> str:
    """Plugins may only name configured models: never an alias (no recursion) nor an arbitrary id."""
    if not isinstance(name, str) or name not in runtime.models:
        allowed = ", ".join(m for m in runtime.models if m not in runtime.access.restricted)  # no leak
        raise BadRequest(
            f"'{param}' must be one of the configured models ({allowed}); got {name!r}.",
            param=param,
            code="invalid_value",
        )
    return name
