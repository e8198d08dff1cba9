"""The sovkit error tree.

Every failure a user can cause or meet is a ``SovkitError`` carrying a one-line
message and a hint saying what to do. The CLI has exactly one boundary that
turns these into a message and an exit code; the library never prints or exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class SovkitError(Exception):
    """Base of every error sovkit reports to a user."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def details(self) -> list[str]:
        """Extra lines (one per problem) shown under the message."""
        return []


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file (``file:line:col`` plus the field path)."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str = ""
    hint: str | None = None

    def where(self) -> str:
        if self.file is None:
            return "<input>"
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def render(self) -> str:
        field_part = f" [{self.path}]" if self.path else ""
        hint_part = f" ({self.hint})" if self.hint else ""
        return f"{self.where()}:{field_part} {self.message}{hint_part}"


@dataclass
class InventoryError(SovkitError):
    """The inventory could not be read or is invalid; carries every problem found."""

    problems: list[Problem] = field(default_factory=list)
    summary: str = "inventory is invalid"

    def __post_init__(self) -> None:
        n = len(self.problems)
        msg = f"{self.summary}: {n} problem{'s' if n != 1 else ''}" if n else self.summary
        SovkitError.__init__(self, msg, "fix the problems listed above and run `sovkit validate` again")

    def details(self) -> list[str]:
        return [p.render() for p in self.problems]


class CatalogError(SovkitError):
    """The hardware catalog is missing or malformed (a packaging bug)."""


class PlannerError(SovkitError):
    """The serving planner cannot predict or place: a bad model config, a missing figure, infeasible targets."""


class PolicyError(SovkitError):
    """The policy engine could not give an answer. Fail closed: nothing is allowed."""


class PolicyDenied(SovkitError):
    """The policy decision is deny."""

    exit_code = 3


class StateError(SovkitError):
    """The state file is unreadable, locked, or inconsistent."""


class StateLocked(StateError):
    """Another run holds the state lock."""


class PlanError(SovkitError):
    """A saved plan is stale, tampered with, or unreadable."""


class ProvisionError(SovkitError):
    """Provisioning failed on one or more hosts."""


class ObserveError(ProvisionError):
    """Refresh failed closed: some hosts could not be read back, so nothing was compared or recorded."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(failures)
        names = ", ".join(sorted(self.failures))
        n = len(self.failures)
        super().__init__(
            f"could not observe {n} host{'s' if n != 1 else ''} ({names}): refresh stopped, nothing was "
            "compared or recorded",
            "fix the reason shown for each host (connection, python_interpreter, permissions) and run again; "
            "the recorded state is never used in place of a host that could not be read",
        )

    def details(self) -> list[str]:
        return [f"{host}: {reason}" for host, reason in sorted(self.failures.items())]


class HardwareMismatch(ProvisionError):
    """A host's hardware (arch, CPU kind, accelerator cards) is not what the inventory says: an inventory error,
    not drift sovkit could repair, so the refresh stops before anything is planned or recorded."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = {h: list(p) for h, p in problems.items()}
        names = ", ".join(sorted(self.problems))
        n = len(self.problems)
        super().__init__(
            f"hardware on {n} host{'s' if n != 1 else ''} ({names}) differs from the inventory: refresh stopped, "
            "nothing was planned or recorded",
            "correct the host's arch, cpu or accelerators in the inventory to what is installed (`sovkit init "
            "--discover HOST` shows what sovkit reads), or fix the hardware (a card missing from the PCI bus: "
            "check it is seated and powered, `lspci -nn`), then run again",
        )

    def details(self) -> list[str]:
        return [f"{host}: {line}" for host, lines in sorted(self.problems.items()) for line in lines]


class SigningKeyError(SovkitError):
    """A key could not be generated, read, or decrypted."""


class VerificationError(SovkitError):
    """A signature, digest, or chain did not verify."""

    def __init__(self, message: str, hint: str | None = None, step: str | None = None) -> None:
        super().__init__(message, hint)
        self.step = step


class BundleError(SovkitError):
    """A bundle could not be created, verified, or imported."""


class FleetError(SovkitError):
    """A fleet file is invalid, or a site's gateway or its answer cannot be used."""


class PolicyBundleInvalid(PolicyError):
    """A policy bundle's signature or file digests do not verify (or it is unsigned where a key is required).

    Fail closed: nothing from the bundle is evaluated or applied.
    """


class MonitorError(SovkitError):
    """`sovkit monitor` could not start or run (bad interval, metrics port taken, no signing key)."""
