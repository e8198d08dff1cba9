"""The Plan value: ordered changes per host and component, each with its reason."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Component = Literal["firmware", "runtime", "model", "serving", "host"]
Action = Literal["create", "update", "delete"]
COMPONENT_ORDER: dict[str, int] = {"firmware": 0, "runtime": 1, "model": 2, "serving": 3, "host": 4}
SYMBOL = {"create": "+", "update": "~", "delete": "-"}


class Change(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    component: Component
    name: str
    action: Action
    reason: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    site: str
    changes: tuple[Change, ...]
    unchanged: int = 0

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
