"""Shared console output for CLI commands (rich for humans, plain JSON for machines)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# emoji=False: user text such as "rack:cd:01" must print as written, never as ":cd:" -> 💿.
console = Console(highlight=False, soft_wrap=True, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout, undecorated (no rich markup or wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
