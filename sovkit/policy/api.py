"""TEMPORARY shim until the policy engine lands (replaced on merge). Not for release."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sovkit.inventory.loader import LoadedInventory
from sovkit.state.models import State


class PolicyEngine(Protocol):
    name: str


@dataclass
class PolicyDecision:
    allowed: bool
    findings: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> PolicyDecision:
        return cls(bool(d["allowed"]), list(d.get("findings", [])))

    def summary(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "findings": self.findings}


def evaluate_policy(inv: LoadedInventory, state: State, extra: Path | None, engine: PolicyEngine | None
                    ) -> PolicyDecision:
    return PolicyDecision(True)


def policy_pack_digest(extra: Path | None) -> str:
    return "0" * 64
