"""The Plan value: ordered changes per host and component, each with its reason."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property

from pydantic import BaseModel, ConfigDict

from sovkit.components import registry
from sovkit.components.base import Action, Change, Component
from sovkit.plan.rollout import Rollout

__all__ = ["COMPONENT_ORDER", "SYMBOL", "Action", "Change", "Component", "Plan", "Rollout"]


class _Order(Mapping[str, int]):
    """Component -> place on a host, read from the kind registry (firmware, runtime, model, serving, …, host)."""

    def __getitem__(self, component: str) -> int:
        return registry.order(component)

    def __iter__(self) -> Iterator[str]:
        return iter([*(k.name for k in registry.kinds()), "host"])

    def __len__(self) -> int:
        return len(registry.kinds()) + 1


COMPONENT_ORDER: Mapping[str, int] = _Order()
SYMBOL = {"create": "+", "update": "~", "delete": "-"}


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    site: str
    changes: tuple[Change, ...]
    unchanged: int = 0
    #: how the apply runs these changes (the limit already chose them); part of what a saved plan signs
    rollout: Rollout = Rollout()
    #: changes the limit left out (on hosts it did not select): the site is not converged when this is > 0
    held_back: int = 0

    @property
    def empty(self) -> bool:
        return not self.changes

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0}
        for c in self.changes:
            counts[c.action] += 1
        return counts

    @cached_property
    def _by_host(self) -> dict[str, list[Change]]:
        """Changes grouped by host, in plan order (built once: per-host lookups on big plans stay linear)."""
        out: dict[str, list[Change]] = {}
        for c in self.changes:
            out.setdefault(c.host, []).append(c)
        return out

    def hosts(self) -> list[str]:
        return list(self._by_host)

    def for_host(self, host: str) -> list[Change]:
        return list(self._by_host.get(host, ()))
