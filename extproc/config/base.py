"""Shared pieces of the configuration schema: the strict base model, value types, errors."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

INTERNAL_HEADER_PREFIX = "x-quorum-"
GUARDS_HEADER = "x-quorum-guards"  # the guards that matched a request; Envoy copies it to the response
EXTPROC_CLUSTER = "quorum_extproc"  # the Envoy cluster of Quorum's own gRPC endpoints
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"
CLUSTER_PATTERN = r"^[A-Za-z0-9_.-]+$"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists `path: message` lines."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _duration(value: Any) -> Any:
    """Accept seconds as a number or a string with a unit: 250ms, 30s, 5m."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", value)
        if not m:
            raise ValueError("a duration is a number of seconds or a string like 250ms, 30s, 5m")
        number, unit = float(m.group(1)), m.group(2) or "s"
        return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    return value


def _token_count(value: Any) -> Any:
    """Accept 4000, "4000", "32K" or "1M"."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+)\s*([kKmM])?\s*", value)
        if not m:
            raise ValueError("a token count is an integer, optionally with a K or M suffix")
        return int(m.group(1)) * {None: 1, "k": 1000, "m": 1_000_000}[(m.group(2) or "").lower() or None]
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
SecondsOrZero = Annotated[float, BeforeValidator(_duration), Field(ge=0)]  # 0 turns the feature off
Scope = Literal["last_user", "user", "conversation", "conversation_no_system"]
Fraction = Annotated[float, Field(ge=0, le=1)]
Tokens = Annotated[int, BeforeValidator(_token_count), Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)
