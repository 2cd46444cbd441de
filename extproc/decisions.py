"""Decisions: AND/OR/NOT rule trees over signal results, selected in priority order.

Confidence of a tree: a leaf has its signal's confidence, AND the mean of its children, OR the best
child, NOT 1.0 when its child does not match. An empty AND (or no `rules`) always matches with
confidence 0, which makes it a catch-all.

Selection: the highest `priority` among matching decisions wins; a tie is won by the higher
confidence, and then by the decision declared first in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

from extproc.algorithms import Algorithm
from extproc.algorithms.static import STATIC
from extproc.config import RuleLeaf, RuleNode
from extproc.signals import SignalKey, SignalResults

# A compiled rule returns the confidence of a match, or None when it does not match.
Rule = Callable[[SignalResults], float | None]


def _always(_: SignalResults) -> float | None:
    return 0.0


def compile_rule(node: RuleNode | RuleLeaf | None) -> Rule:
    if node is None:
        return _always
    if isinstance(node, RuleLeaf):
        key = (node.type, node.name)
        threshold = node.threshold
        if threshold is None:
            return lambda results: results.get(key)

        def at_least(results: SignalResults) -> float | None:
            conf = results.get(key)
            return conf if conf is not None and conf >= threshold else None

        return at_least
    children = tuple(compile_rule(c) for c in node.conditions)
    if node.operator == "NOT":
        (child,) = children
        return lambda results: 1.0 if child(results) is None else None
    if node.operator == "OR":

        def any_of(results: SignalResults) -> float | None:
            best = None
            for c in children:
                conf = c(results)
                if conf is not None and (best is None or conf > best):
                    best = conf
            return best

        return any_of
    if not children:
        return _always

    def all_of(results: SignalResults) -> float | None:
        total = 0.0
        for c in children:
            conf = c(results)
            if conf is None:
                return None
            total += conf
        return total / len(children)

    return all_of


def rule_signals(node: RuleNode | RuleLeaf | None) -> set[SignalKey]:
    """Every (type, name) a rule tree reads, so only those signals are computed."""
    if node is None:
        return set()
    if isinstance(node, RuleLeaf):
        return {(node.type, node.name)}
    return set().union(*(rule_signals(c) for c in node.conditions))


@dataclass(frozen=True, slots=True)
class Decision:
    name: str
    priority: int
    order: int  # position in the file, the last tie-breaker
    rule: Rule = field(repr=False, compare=False)
    models: tuple[str, ...]
    algorithm: Algorithm = STATIC  # compiled from `algorithm` at load (extproc.algorithms)


@dataclass(frozen=True, slots=True)
class Match:
    decision: Decision
    confidence: float


def select(decisions: Iterable[Decision], results: SignalResults) -> Match | None:
    """`decisions` must be sorted by descending priority, then file order (see `Runtime`)."""
    best: Match | None = None
    for decision in decisions:
        if best is not None and decision.priority < best.decision.priority:
            break  # lower priorities can never win once something matched
        confidence = decision.rule(results)
        if confidence is not None and (best is None or confidence > best.confidence):
            best = Match(decision, confidence)
    return best


@cache
def fixed_decision(label: str, model: str) -> Decision:
    """The decision reported for an explicitly named model ("explicit") or the default route ("default")."""
    return Decision(name=label, priority=0, order=-1, rule=_always, models=(model,))
