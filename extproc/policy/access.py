"""Per-client model access: names (models or aliases) that only some client identities may use.

The identity is a request header that a filter the mesh trusts has set (the rendered Envoy config
removes any client-sent value first). It may list several identities separated by commas (a
groups claim). A name no rule covers is open to everyone; a covered name is open to the union of
the clients of the rules that cover it. A caller outside gets the same 404 as for an unknown model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from extproc.config import AccessConfig
from extproc.errors import ModelNotFound

Identity = frozenset[str]
ANONYMOUS: Identity = frozenset()


@dataclass(frozen=True, slots=True)
class Access:
    header: str
    restricted: Mapping[str, frozenset[str]]  # name -> clients allowed to use it

    @property
    def enabled(self) -> bool:
        return bool(self.restricted)

    def identity(self, headers: Mapping[str, str]) -> Identity:
        if not self.restricted:
            return ANONYMOUS
        value = headers.get(self.header)
        if not value:
            return ANONYMOUS
        return frozenset(part.strip() for part in value.split(",") if part.strip())

    def allows(self, name: str, identity: Identity) -> bool:
        clients = self.restricted.get(name)
        return clients is None or not clients.isdisjoint(identity)

    def require(self, names: Iterable[str], identity: Identity) -> None:
        """Raise the unknown-model 404 for the first name the caller may not use."""
        for name in names:
            if not self.allows(name, identity):
                raise not_found(name)


NO_ACCESS_RULES = Access("x-client-id", {})


def not_found(name: str) -> ModelNotFound:
    return ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.", param="model")


def compile_access(cfg: AccessConfig) -> Access:
    restricted: dict[str, set[str]] = {}
    for rule in cfg.rules:
        for name in rule.models:
            restricted.setdefault(name, set()).update(rule.clients)
    return Access(cfg.identity_header, {name: frozenset(clients) for name, clients in restricted.items()})
