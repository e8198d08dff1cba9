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

# rollout controls (plan, apply): recorded in the plan, so a saved plan carries them
LimitOpt = Annotated[str | None, typer.Option("--limit", help="Only these hosts: globs or rack:GLOB, "
                                                               "comma-separated, !PATTERN excludes.")]
BatchSizeOpt = Annotated[str | None, typer.Option("--batch-size", help="Apply N hosts (or P% of them) at a time; "
                                                                       "a serving group's hosts stay together.")]
CanaryOpt = Annotated[int | None, typer.Option("--canary", help="Apply the first N hosts alone first; stop if "
                                                                "any of them fails.")]
MaxFailOpt = Annotated[int | None, typer.Option("--max-fail-percent", help="Stop before the next batch once more "
                                                                           "than P% of the hosts failed.")]
ForksOpt = Annotated[int | None, typer.Option("--forks", help="Hosts Ansible works on at once (default 10).")]
PolicyBundleOpt = Annotated[Path | None, typer.Option(
    "--policy-bundle", help="Evaluate the pack in this OPA bundle (from `sovkit policy bundle`) instead of the "
    "shipped pack; refused unless its signature and file digests verify (when a key is configured).")]
BundleKeyOpt = Annotated[list[Path] | None, typer.Option(
    "--bundle-key", help="Public key trusted to sign --policy-bundle (repeatable; default: the inventory's "
    "trust_roots.policy_bundles).")]
StateUrlOpt = Annotated[str | None, typer.Option(
    "--state-url", help="Keep the state in PostgreSQL: postgresql://[USER@]HOST[:PORT]/DB (password from PGPASSWORD "
    "or a libpq passfile; default: $SOVKIT_STATE_URL, else the inventory's `state:`, else --state-dir).",
    show_default=False)]
LockTimeoutOpt = Annotated[float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for the state lock "
                                                                             "when another run holds it.")]
