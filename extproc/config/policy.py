"""`routing.guards` (operator policy on every request) and `access` (which client may use which model)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from extproc.config.base import INTERNAL_HEADER_PREFIX, NAME_PATTERN, Strict
from extproc.config.routing import Rule

HEADER_NAME = r"^[a-z0-9-]+$"


class GuardConfig(Strict):
    """A rule evaluated for every request whatever its model name, before any model is chosen.

    `action`: block (an OpenAI error), route (to `model`, whatever the client asked for) or label
    (add `headers` to the upstream request). Every matching guard adds its `headers`.
    """

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    rules: Rule
    action: Literal["block", "route", "label"]
    # Requested model names (models or aliases) the guard applies to; empty: every request.
    applies_to: list[str] = []
    model: str | None = None  # route: the model the request goes to
    message: str | None = None  # block: what the client reads
    code: str = Field("content_policy_violation", pattern=r"^[a-z0-9_]+$")  # block
    status: Literal[400, 403, 422, 451] = 400  # block
    headers: dict[str, str] = {}

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(HEADER_NAME, name):
                raise ValueError(f"{name!r}: a header name is lower-case letters, digits and dashes")
            if name in ("authorization", "host", "content-length") or name.startswith(":"):
                raise ValueError(f"{name!r} cannot be set by a guard")
        return v

    @model_validator(mode="after")
    def _action_fields(self) -> GuardConfig:
        if self.action == "route" and self.model is None:
            raise ValueError("a route guard needs `model`")
        if self.action != "route" and self.model is not None:
            raise ValueError("`model` is only for action: route")
        if self.action == "label" and not self.headers:
            raise ValueError("a label guard needs `headers`")
        return self


class AccessRule(Strict):
    """`models` (configured models or aliases) may be used only by the listed `clients`."""

    name: str = Field(pattern=NAME_PATTERN)
    models: list[str] = Field(min_length=1)
    clients: list[str] = Field(min_length=1)


class AccessConfig(Strict):
    # Set by a filter the mesh trusts (jwt_authn claim_to_headers, ext_authz); the rendered Envoy
    # config removes any client-sent value before the `envoy.identity_filters` run.
    identity_header: str = "x-client-id"
    rules: list[AccessRule] = []

    @field_validator("identity_header")
    @classmethod
    def _identity_header(cls, v: str) -> str:
        if not re.fullmatch(HEADER_NAME, v):
            raise ValueError("a header name is lower-case letters, digits and dashes")
        if v.startswith(INTERNAL_HEADER_PREFIX) or v in ("authorization", "host"):
            raise ValueError(f"{v!r} cannot carry the client identity")
        return v
