"""Shared console output for CLI commands (rich for humans, plain JSON for machines)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from rich.console import Console

# emoji=False: user text such as "rack:cd:01" must print as written, never as ":cd:" -> 💿.
console = Console(highlight=False, soft_wrap=True, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout, undecorated (no rich markup or wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def jsonable(value: Any) -> Any:
    """A library result (pydantic model, dataclass, or lists/dicts of them) as plain JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def emit_result(result: Any) -> None:
    """``--json`` output: the library's result model, dumped as it is (the CLI builds no dicts)."""
    emit_json(jsonable(result))
