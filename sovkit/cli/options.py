"""Options shared by several verbs, declared once so their names and help agree everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

InvArg = Annotated[Path, typer.Argument(help="Inventory file or directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
JsonAlwaysOpt = Annotated[bool, typer.Option("--json", help="Accepted for symmetry; the output is always JSON.")]
StateDirOpt = Annotated[Path | None, typer.Option("--state-dir", help="State directory (default: .sovkit/ beside "
                                                                       "the inventory).")]
PoliciesOpt = Annotated[Path | None, typer.Option("--policies", help="Extra Rego modules (package sovkit.custom.*) "
                                                                     "and data.json to add to the shipped pack.")]
StateUrlOpt = Annotated[str | None, typer.Option(
    "--state-url", help="Keep the state in PostgreSQL: postgresql://[USER@]HOST[:PORT]/DB (password from PGPASSWORD "
    "or a libpq passfile; default: $SOVKIT_STATE_URL, else the inventory's `state:`, else --state-dir).",
    show_default=False)]
LockTimeoutOpt = Annotated[float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for the state lock "
                                                                             "when another run holds it.")]
