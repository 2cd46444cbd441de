"""Guards: rules over signals that every request passes, whatever model it names, before routing.

Order for one request: access (an unknown or forbidden model name is a 404) -> guards -> decisions
(aliases only) -> the default model. Among the guards that match, a `block` wins over a `route`, and
the first `route` in file order wins over later ones; every matching guard adds its headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from extproc.config import GuardConfig
from extproc.decisions import Rule, compile_rule, rule_signals
from extproc.errors import ClientError
from extproc.signals import SignalKey, SignalResults


class PolicyViolation(ClientError):
    """A block guard matched: the status and code come from the guard's configuration."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message, param="messages", code=code)
        self.status = status


@dataclass(frozen=True, slots=True)
class Guard:
    name: str
    action: str  # block | route | label
    rule: Rule = field(repr=False, compare=False)
    model: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    message: str = ""
    status: int = 400
    code: str = "content_policy_violation"
    reads: frozenset[SignalKey] | None = None  # the signals `rule` reads; None: maybe any

    def violation(self) -> PolicyViolation:
        return PolicyViolation(self.message, self.status, self.code)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guards that matched one request decided."""

    matched: tuple[Guard, ...]
    block: Guard | None = None
    route: Guard | None = None  # the route guard that chose the model
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.matched)

    @property
    def action(self) -> str:
        """What the guards did to the request as a whole: block, route or label."""
        return "block" if self.block else "route" if self.route else "label"


def compile_guard(cfg: GuardConfig) -> Guard:
    message = cfg.message or f"This request was blocked by the operator's policy ({cfg.name})."
    return Guard(
        name=cfg.name,
        action=cfg.action,
        rule=compile_rule(cfg.rules),
        model=cfg.model,
        headers=tuple(cfg.headers.items()),
        message=message,
        status=cfg.status,
        code=cfg.code,
        reads=frozenset(rule_signals(cfg.rules)),
    )


def guard_signals(guards: Iterable[GuardConfig]) -> set[SignalKey]:
    return set().union(*(rule_signals(g.rules) for g in guards))


def applies(cfg: GuardConfig, requested: str) -> bool:
    return not cfg.applies_to or requested in cfg.applies_to


def check(guards: tuple[Guard, ...], results: SignalResults) -> Verdict | None:
    """None when no guard matched (the common case costs one rule call per guard)."""
    matched = [g for g in guards if g.rule(results) is not None]
    if not matched:
        return None
    block = next((g for g in matched if g.action == "block"), None)
    route = None if block else next((g for g in matched if g.action == "route"), None)
    headers = tuple(h for g in matched for h in g.headers)
    return Verdict(tuple(matched), block, route, headers)
