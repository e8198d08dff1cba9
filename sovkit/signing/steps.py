"""The result of a verification in named steps: one type for `sovkit attest verify`, `sovkit verify` (audit
pack) and `sovkit bundle verify`, so their ``--json`` output has one shape::

    {"subject": "...", "ok": true, "facts": {"name": "value" | 0, ...},
     "steps": [{"name": "...", "status": "ok" | "failed" | "not-checked", "detail": "...",
                "problems": ["..."], "hint": "..." | null}]}

``not-checked`` is a step that had nothing it could check (no state beside a log, an untrusted manifest); it is
not a pass and not a failure of its own. A verification is ok when no step failed. ``facts`` are the values a
verification established that a caller compares (a bundle's manifest sha256, the number of log entries, the
audited site), named the same way in every command that has them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from sovkit.errors import VerificationError

Status = Literal["ok", "failed", "not-checked"]


class Step(BaseModel):
    """One named step: what it checked (``detail``) or every problem it found."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    status: Status
    detail: str = ""
    problems: list[str] = Field(default_factory=list)
    hint: str | None = None

    @classmethod
    def passed(cls, name: str, detail: str) -> Step:
        return cls(name=name, status="ok", detail=detail)

    @classmethod
    def failed_with(cls, name: str, problems: list[str], detail: str = "", hint: str | None = None) -> Step:
        return cls(name=name, status="failed", detail=detail or (problems[0] if problems else ""),
                   problems=problems, hint=hint)

    @classmethod
    def from_error(cls, name: str, error: VerificationError) -> Step:
        return cls.failed_with(name, [error.message], hint=error.hint)

    @classmethod
    def not_checked(cls, name: str, why: str) -> Step:
        return cls(name=name, status="not-checked", detail=why)

    @classmethod
    def of(cls, name: str, problems: list[str], detail: str, hint: str | None = None) -> Step:
        """ok with ``detail`` when there are no problems, else failed listing them."""
        return cls.failed_with(name, problems, detail, hint) if problems else cls.passed(name, detail)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def error(self) -> VerificationError:
        """This failed step as the error a fail-closed caller raises."""
        return VerificationError("; ".join(self.problems) or self.detail, self.hint, step=self.name)


class Verification(BaseModel):
    """Every step's outcome, in order."""

    model_config = ConfigDict(extra="forbid")
    subject: str
    steps: list[Step] = Field(default_factory=list)
    facts: dict[str, str | int] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not any(s.failed for s in self.steps)

    @property
    def failures(self) -> list[Step]:
        return [s for s in self.steps if s.failed]

    @property
    def errors(self) -> list[VerificationError]:
        return [s.error() for s in self.failures]

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)
