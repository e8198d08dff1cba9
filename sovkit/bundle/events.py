"""Progress events the bundle operations emit (the CLI turns them into a progress bar)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class BundleEvent:
    """``start``: a phase with ``total`` bytes begins; ``bytes``: ``n`` more bytes done (negative when a
    file starts over); ``note``: a message."""

    kind: Literal["start", "bytes", "note"]
    phase: str = ""
    total: int = 0
    n: int = 0
    message: str = ""


OnEvent = Callable[[BundleEvent], None]


def ignore(event: BundleEvent) -> None:
    """The default callback: no progress wanted."""
