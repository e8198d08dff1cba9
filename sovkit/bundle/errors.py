"""Bundle errors: one that carries every problem found, so a report is complete."""

from __future__ import annotations

from sovkit.errors import BundleError


class BundleInvalid(BundleError):
    """A bundle (or its volumes) failed verification; lists every problem, not just the first."""

    def __init__(self, problems: list[str], what: str = "bundle", hint: str | None = None) -> None:
        n = len(problems)
        super().__init__(
            f"{what} failed verification: {n} problem{'s' if n != 1 else ''}",
            hint or "nothing was imported; obtain an untampered copy from the connected side",
        )
        self.problems = problems

    def details(self) -> list[str]:
        return list(self.problems)


class BundleIncomplete(BundleError):
    """Some volumes are not there yet; what was already verified is kept for the next run."""

    exit_code = 4

    def __init__(self, report: object, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.report = report
