"""The PolicyEngine port and the Decision it returns, whichever engine evaluated the pack.

Both adapters (embedded regopy, OPA server) hand the raw value of
``data.sovkit.main.decision`` to :func:`decision_from_raw`, which refuses
anything malformed: a decision that cannot be read is an error, never "allowed".
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.errors import PolicyError
from sovkit.policy.pack import PolicyPack

DECISION_QUERY = "data.sovkit.main.decision"
DECISION_PATH = "sovkit/main/decision"

Severity = Literal["deny", "warn"]


class Waived(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reason: str
    expires: str


class Finding(BaseModel):
    """One rule result: ``{id, severity, msg, resource, remediation}`` plus its waiver when waived."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1)
    severity: Severity
    msg: str
    resource: str
    remediation: str
    waived: Waived | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    allowed: bool
    findings: list[Finding]
    engine: str
    pack_digest: str


class PolicyEngine(Protocol):
    """Evaluates a policy pack against one input document."""

    name: str

    def evaluate(self, pack: PolicyPack, input_doc: dict[str, Any]) -> Decision: ...


class _RawFinding(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    msg: str
    resource: str
    remediation: str
    severity: str | None = None
    waived: Waived | None = None


class _RawDecision(BaseModel):
    model_config = ConfigDict(extra="ignore")
    allowed: bool
    deny: list[_RawFinding]
    warn: list[_RawFinding]
    waived: list[_RawFinding]


def _sort_key(f: Finding) -> tuple[int, str, str, str]:
    return (0 if f.severity == "deny" else 1, f.id, f.resource, f.msg)


def decision_from_raw(raw: Any, engine: str, pack_digest: str) -> Decision:
    """Validate the raw decision document; malformed or inconsistent -> PolicyError (fail closed)."""
    if raw is None:
        raise PolicyError(f"policy decision is undefined ({engine} engine): {DECISION_QUERY} has no value",
                          "the pack must define data.sovkit.main.decision; check --policies modules for errors")
    try:
        parsed = _RawDecision.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"policy decision is malformed ({engine} engine): {where}: {first['msg']}",
                          "every finding needs string id, msg, resource and remediation") from exc
    findings = [Finding(id=f.id, severity="deny", msg=f.msg, resource=f.resource, remediation=f.remediation)
                for f in parsed.deny]
    findings += [Finding(id=f.id, severity="warn", msg=f.msg, resource=f.resource, remediation=f.remediation)
                 for f in parsed.warn]
    for f in parsed.waived:
        if f.waived is None:
            raise PolicyError(f"policy decision is malformed ({engine} engine): waived finding {f.id} has no waiver")
        findings.append(Finding(id=f.id, severity="deny" if f.severity == "deny" else "warn", msg=f.msg,
                                resource=f.resource, remediation=f.remediation, waived=f.waived))
    # The pack builds findings as arrays (rego-cpp builds sets in quadratic time): a finding is one fact however
    # many rule bodies yield it, so identical findings count once, as they would in a Rego set.
    findings = list({(f.severity, f.id, f.resource, f.msg, f.remediation, f.waived): f for f in findings}.values())
    if parsed.allowed != (not parsed.deny):
        raise PolicyError(f"policy decision is inconsistent ({engine} engine): allowed={parsed.allowed} with "
                          f"{len(parsed.deny)} denial(s)", "a module overrides data.sovkit.main; remove it")
    return Decision(allowed=parsed.allowed, findings=sorted(findings, key=_sort_key), engine=engine,
                    pack_digest=pack_digest)
