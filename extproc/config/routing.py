"""`routing.decisions`: rule trees, model references, fusion settings, and `routing` itself."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from extproc.config.base import (
    NAME_PATTERN,
    Fraction,
    Seconds,
    Strict,
)
from extproc.config.signals import (
    EmbeddingEngineConfig,
    SignalsConfig,
)


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


class EarlyExitConfig(Strict):
    consensus: Fraction = 0.9  # every pair of panel answers must agree at least this much
    similarity: Literal["auto", "embedding", "exact"] = "auto"


class GroundingConfig(Strict):
    reference: Literal["auto", "context", "panel"] = "auto"  # auto: the request's context if any, else the panel
    min_score: Fraction = 0.4  # answers scoring below are left out of judge and synthesis
    similarity: Literal["auto", "embedding", "lexical"] = "auto"
    on_error: Literal["skip", "fail"] = "skip"  # scoring failed: keep every answer, or fail the request


class FusionConfig(Strict):
    model: str | None = None
    analysis_models: list[str] = []
    analysis_overrides: dict[str, AnalysisOverride] = {}
    max_concurrent: int = Field(8, ge=1, le=64)
    max_concurrent_runs: int | None = Field(None, ge=1)  # runs of this decision at once, per worker
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
    early_exit: EarlyExitConfig | None = None  # skip judge and synthesis when the panel agrees
    grounding: GroundingConfig | None = None  # score panel answers before the judge, drop ungrounded ones


class ConfidenceConfig(Strict):
    model: str  # the cheap model asked first, with logprobs
    min_mean_logprob: float = Field(-0.5, le=0)  # its answer is returned when at least this confident
    timeout: Seconds = 30.0
    escalate: FusionConfig = FusionConfig()  # the fusion run when it is not (panel defaults to modelRefs)


class AlgorithmConfig(Strict):
    """`type` names a registered algorithm (`extproc.algorithms`); its settings go in the section of
    the same name. Sections of algorithms registered outside this package are kept as raw data and
    validated by their algorithm when the runtime is built."""

    model_config = ConfigDict(extra="allow")

    type: str = "static"
    fusion: FusionConfig | None = None
    confidence: ConfidenceConfig | None = None


class DecisionConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
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
