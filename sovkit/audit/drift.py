"""The last refresh's drift, kept beside the state so an audit can show what changed behind sovkit's back.

``sovkit refresh`` overwrites the recorded state with what it observed; without
this record the drift it found would be lost. One JSON file, replaced
atomically on every refresh.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from sovkit.audit.model import DriftChange, DriftSection
from sovkit.errors import StateError
from sovkit.fsutil import atomic_write
from sovkit.plan.model import Plan
from sovkit.state.models import now

REFRESH_RECORD = "last-refresh.json"


def write_refresh_record(state_dir: Path, drift: Plan, unreachable: dict[str, str]) -> Path:
    record = DriftSection(
        recorded_at=now(),
        unreachable=dict(unreachable),
        changes=[DriftChange(host=c.host, component=c.component, name=c.name, reason=c.reason)
                 for c in drift.changes],
    )
    path = state_dir / REFRESH_RECORD
    atomic_write(path, (record.model_dump_json(indent=2) + "\n").encode())
    return path


def read_refresh_record(state_dir: Path) -> DriftSection | None:
    """The drift recorded by the last refresh, or None when no refresh was ever recorded."""
    path = state_dir / REFRESH_RECORD
    if not path.is_file():
        return None
    try:
        return DriftSection.model_validate(json.loads(path.read_bytes()))
    except (ValueError, ValidationError) as exc:
        raise StateError(f"{path}: unreadable refresh record ({exc.__class__.__name__})",
                         "run `sovkit refresh` again to rewrite it") from exc
