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
PolicyBundleOpt = Annotated[Path | None, typer.Option(
    "--policy-bundle", help="Evaluate the pack in this OPA bundle (from `sovkit policy bundle`) instead of the "
    "shipped pack; refused unless its signature and file digests verify (when a key is configured).")]
BundleKeyOpt = Annotated[list[Path] | None, typer.Option(
    "--bundle-key", help="Public key trusted to sign --policy-bundle (repeatable; default: the inventory's "
    "trust_roots.policy_bundles).")]
