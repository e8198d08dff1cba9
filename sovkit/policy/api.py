"""What the rest of sovkit calls: evaluate the pack for an inventory, its digest, its OPA bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sovkit.inventory.loader import LoadedInventory
from sovkit.policy.embedded import EmbeddedEngine
from sovkit.policy.engine import Decision, PolicyEngine
from sovkit.policy.input import build_input
from sovkit.policy.pack import PolicyPack, load_pack, read_bundle, refuse_v1_rules, write_bundle
from sovkit.signing.keys import PublicKey, Signer
from sovkit.state.models import State

__all__ = ["PolicyBundleFile", "PolicyDecision", "PolicyEngine", "PolicyPack", "PolicySource", "evaluate_bundle",
           "evaluate_input", "evaluate_policy", "export_policy_bundle", "load_policy_bundle", "policy_pack_digest",
           "write_policy_bundle"]

#: where the pack comes from: None (the shipped pack), a directory of extra modules and data added to it, or the
#: pack of a policy bundle already read and verified (:func:`load_policy_bundle`), evaluated instead of it
PolicySource = Path | PolicyPack | None


def _pack(source: PolicySource) -> PolicyPack:
    return source if isinstance(source, PolicyPack) else load_pack(source)


@dataclass
class PolicyDecision:
    """The decision as plans, attestations and the CLI keep it (findings as plain dicts)."""

    allowed: bool
    findings: list[dict[str, Any]] = field(default_factory=list)
    engine: str = ""
    pack_digest: str = ""

    @classmethod
    def from_decision(cls, decision: Decision) -> PolicyDecision:
        return cls(decision.allowed, [f.as_dict() for f in decision.findings], decision.engine, decision.pack_digest)

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> PolicyDecision:
        return cls(bool(d["allowed"]), list(d.get("findings", [])), str(d.get("engine", "")),
                   str(d.get("pack_digest", "")))

    def summary(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "findings": self.findings, "engine": self.engine,
                "pack_digest": self.pack_digest}

    def by_severity(self, severity: str, waived: bool = False) -> list[dict[str, Any]]:
        return [f for f in self.findings if f.get("severity") == severity and bool(f.get("waived")) == waived]


def evaluate_policy(inv: LoadedInventory, state: State | None, extra: PolicySource, engine: PolicyEngine | None,
                    today: date | None = None) -> PolicyDecision:
    """Evaluate the pack (plus ``extra`` modules/data) for ``inv``; any engine failure raises PolicyError."""
    return evaluate_input(build_input(inv, state, today), extra, engine)


def evaluate_input(doc: dict[str, Any], extra: PolicySource, engine: PolicyEngine | None) -> PolicyDecision:
    """Evaluate the pack (plus ``extra``) on an input document already built (the audit keeps it)."""
    return PolicyDecision.from_decision((engine or EmbeddedEngine()).evaluate(_pack(extra), doc))


def evaluate_bundle(bundle: Path, doc: dict[str, Any]) -> PolicyDecision:
    """Re-evaluate a recorded input document with the pack an OPA bundle holds: offline, embedded engine."""
    return PolicyDecision.from_decision(EmbeddedEngine().evaluate(read_bundle(bundle), doc))


def policy_pack_digest(extra: PolicySource) -> str:
    return _pack(extra).digest


def write_policy_bundle(path: Path, extra: PolicySource = None, signer: Signer | None = None) -> str:
    """Write the pack (plus ``extra``) as an OPA bundle tar.gz, signed by ``signer`` if given; the pack digest."""
    return write_bundle(_pack(extra), path, signer)


def load_policy_bundle(path: Path, keys: list[PublicKey] | None) -> PolicyPack:
    """The pack of a policy bundle, verified against ``keys`` first (see :func:`~sovkit.policy.pack.read_bundle`),
    to evaluate live input with: refused when its rules read input v1 keys (an audit pack's own bundle is not
    loaded here, it is re-evaluated on the input it recorded)."""
    pack = read_bundle(path, keys)
    refuse_v1_rules(pack.modules, f"policy bundle {path}")
    return pack


@dataclass(frozen=True)
class PolicyBundleFile:
    """An OPA bundle written by ``sovkit policy bundle``: where, and the digest of the pack it holds."""

    path: str
    pack_digest: str
    signed_by: str | None = None


def export_policy_bundle(path: Path, extra: PolicySource = None, signer: Signer | None = None) -> PolicyBundleFile:
    """The pack (plus ``extra`` rules) as an OPA bundle at ``path`` (signed by ``signer``), with its digest."""
    return PolicyBundleFile(str(path), write_policy_bundle(path, extra, signer),
                            signer.keyid if signer is not None else None)
