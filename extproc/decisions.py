"""Decisions: AND/OR/NOT rule trees over signal results, selected in priority order.

Confidence of a tree: a leaf has its signal's confidence, AND the mean of its children, OR the best
child, NOT 1.0 when its child does not match. An empty AND (or no `rules`) always matches with
confidence 0, which makes it a catch-all.

Selection: the highest `priority` among matching decisions wins; a tie is won by the higher
confidence, and then by the decision declared first in the file. `choose` reaches the same answer
while computing the costly signals one priority group at a time, so those (an embedding, say) that
only lower groups read are never computed for a request a higher group settles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby
from typing import Protocol

from extproc.algorithms import Algorithm
from extproc.algorithms.static import STATIC
from extproc.config import RuleLeaf, RuleNode
from extproc.signals import Evaluation, SignalKey, SignalResults

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
    reads: frozenset[SignalKey] | None = None  # the signals `rule` reads (rule_signals); None: maybe any


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


class ReadsSignals(Protocol):
    @property
    def reads(self) -> frozenset[SignalKey] | None: ...


def reads(rules: Iterable[ReadsSignals]) -> frozenset[SignalKey] | None:
    """Every signal some of `rules` (decisions or guards) reads; None when one may read any."""
    keys: set[SignalKey] = set()
    for rule in rules:
        if rule.reads is None:
            return None
        keys |= rule.reads
    return frozenset(keys)


async def choose(decisions: Iterable[Decision], evaluation: Evaluation) -> Match | None:
    """`select` with signals computed on demand: for each priority group, from the highest, compute
    what its rules read (nothing already computed is computed again), and stop at the first group
    with a match. Its rules then see exactly the values eager evaluation would have given them, and
    lower groups could not have won, so the answer is `select`'s over every signal."""
    for _, group in groupby(decisions, key=lambda d: d.priority):
        members = tuple(group)
        await evaluation.need(reads(members))
        match = select(members, evaluation.results)
        if match is not None:
            return match
    return None


@cache
def fixed_decision(label: str, model: str) -> Decision:
    """The decision reported for an explicitly named model ("explicit") or the default route ("default")."""
    return Decision(name=label, priority=0, order=-1, rule=_always, models=(model,))
