"""Rollout controls: which hosts an apply touches, in which batches, and when it stops.

Part of the plan value (so a saved plan carries them under its signature, and the provision attestations name
them): ``limit`` selects hosts when the plan is made; ``canary``, ``batch_size``, ``max_fail_percent`` and
``forks`` shape how the apply runs it — as Ansible's ``--limit``, ``serial``, ``max_fail_percentage`` and
``forks`` do, except that a serving group's hosts always go in the same batch (a prefill/decode pair is never
half-switched) and the failure threshold is judged after each batch.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from sovkit.errors import PlanError

#: comma-separated host-name globs; ``rack:GLOB`` selects the hosts of matching racks; a leading ``!`` excludes
LIMIT_PATTERN = r"^!?(rack:)?[A-Za-z0-9._*?\[\]-]{1,128}(,!?(rack:)?[A-Za-z0-9._*?\[\]-]{1,128}){0,63}$"
BATCH_PATTERN = r"^([1-9][0-9]{0,5}|([1-9][0-9]?|100)%)$"


class Rollout(BaseModel):
    """How an apply rolls out; the default runs every planned host in one batch, whatever fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    limit: Annotated[str, StringConstraints(pattern=LIMIT_PATTERN)] | None = Field(
        default=None, description="host globs (or rack:GLOB), comma-separated, ! to exclude")
    batch_size: Annotated[str, StringConstraints(pattern=BATCH_PATTERN)] | None = Field(
        default=None, description="hosts per batch after the canary: N, or P% of the planned hosts")
    canary: Annotated[int, Field(ge=1, le=100000)] | None = Field(
        default=None, description="the first N hosts go alone first; any failure among them stops the apply")
    max_fail_percent: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None, description="stop before the next batch once more than P% of the planned hosts failed")
    forks: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="hosts Ansible works on at once within a batch")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def default(self) -> bool:
        return self == Rollout()

    def describe(self) -> str:
        """One line for plan output and messages: ``limit web-*, canary 1, batches of 25%, …``."""
        parts = [f"limit {self.limit}" if self.limit else "",
                 f"canary {self.canary}" if self.canary else "",
                 f"batches of {self.batch_size}" if self.batch_size else "",
                 f"stop above {self.max_fail_percent}% failed" if self.max_fail_percent is not None else "",
                 f"forks {self.forks}" if self.forks else ""]
        return ", ".join(p for p in parts if p) or "all hosts in one batch"

    # --- limit --------------------------------------------------------------------------------------------------

    def select(self, hosts: Iterable[str], racks: Mapping[str, str]) -> set[str]:
        """The hosts the limit keeps (all without one); ``racks`` maps host -> rack name.

        Raises PlanError for a pattern that matches nothing, as Ansible does: a typo must not plan an empty
        change set and report success.
        """
        names = list(hosts)
        if not self.limit:
            return set(names)
        keep: set[str] = set()
        drop: set[str] = set()
        includes = 0
        for item in self.limit.split(","):
            negate = item.startswith("!")
            pattern = item.removeprefix("!")
            if pattern.startswith("rack:"):
                glob = pattern.removeprefix("rack:")
                hit = {h for h in names if fnmatch.fnmatchcase(racks.get(h, ""), glob)}
            else:
                hit = {h for h in names if fnmatch.fnmatchcase(h, pattern)}
            if not hit:
                raise PlanError(f"--limit {self.limit!r}: {item!r} matches no host of this site",
                                "check the host (or rack:NAME) names with `sovkit inventory show`")
            if negate:
                drop |= hit
            else:
                includes += 1
                keep |= hit
        return (keep if includes else set(names)) - drop

    # --- batches ------------------------------------------------------------------------------------------------

    def batches(self, hosts: list[str], ties: Iterable[set[str]] = ()) -> list[list[str]]:
        """``hosts`` (in plan order) cut into batches: the canary first, then ``batch_size`` at a time.

        Hosts tied together (the hosts of one serving group) always land in the same batch, placed where the
        first of them falls, so a batch may be larger than asked for.
        """
        if not hosts:
            return []
        group_of: dict[str, int] = {}
        for i, tie in enumerate(ties):
            for h in tie:
                group_of.setdefault(h, i)
        size = self._batch_hosts(len(hosts))
        out: list[list[str]] = []
        placed: set[str] = set()
        current: list[str] = []
        limit = self.canary or size
        for host in hosts:
            if host in placed:
                continue
            group = group_of.get(host)
            members = [h for h in hosts if group is not None and group_of.get(h) == group] or [host]
            current.extend(h for h in members if h not in placed)
            placed.update(members)
            if len(current) >= limit:
                out.append(current)
                current, limit = [], size
        if current:
            out.append(current)
        return out

    def _batch_hosts(self, total: int) -> int:
        if self.batch_size is None:
            return total
        if self.batch_size.endswith("%"):
            return max(1, math.floor(total * int(self.batch_size[:-1]) / 100))
        return int(self.batch_size)

    # --- stopping -----------------------------------------------------------------------------------------------

    def stop_reason(self, batch: int, failed_in_batch: list[str], failed: int, total: int) -> str | None:
        """Why the apply stops after batch ``batch`` (0-based), or None to go on."""
        if self.canary and batch == 0 and failed_in_batch:
            return f"the canary failed on {', '.join(sorted(failed_in_batch))}"
        if self.max_fail_percent is not None and total and failed * 100 > self.max_fail_percent * total:
            return (f"{failed} of {total} hosts failed ({100 * failed / total:.0f}%), more than "
                    f"--max-fail-percent {self.max_fail_percent}")
        return None


_OPTION = {"limit": "--limit", "batch_size": "--batch-size", "canary": "--canary",
           "max_fail_percent": "--max-fail-percent", "forks": "--forks"}
_FORMS = {"limit": "host globs or rack:GLOB, comma-separated, ! to exclude (letters, digits, . _ - * ? [ ])",
          "batch_size": "N (hosts) or P% (1% to 100%)", "canary": "a host count of 1 or more",
          "max_fail_percent": "a percentage from 0 to 100", "forks": "a count from 1 to 1000"}


def rollout_from_options(**options: object) -> Rollout:
    """The CLI's rollout options as a Rollout, or one PlanError naming the option and the accepted form."""
    try:
        return Rollout.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        raise PlanError(f"{_OPTION.get(field, field)} {options.get(field)!r} is not valid",
                        f"give {_FORMS.get(field, 'a valid value')}") from None
