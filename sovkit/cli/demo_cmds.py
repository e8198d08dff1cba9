"""`sovkit demo`: the main job on the embedded demo site, as a scripted sequence of real CLI verbs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sovkit.cli.output import console
from sovkit.demo import prepare_demo
from sovkit.errors import SovkitError


def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo site lives.")] = Path("sovkit-demo"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over: delete the workdir first.")] = False,
) -> int:
    """Run validate → check → plan → apply → plan on the one-machine demo site (simulated NPUs)."""
    from sovkit.cli.main import main  # the same entry point a shell would use

    workdir = workdir.resolve()
    site = prepare_demo(workdir, fresh=fresh)
    key = workdir / ".sovkit" / "keys" / "operator.key"
    os.environ["SOVKIT_SIGNING_KEY"] = str(key)
    plan_file = workdir / "demo.plan.json"
    steps: list[tuple[str, list[str], int]] = [
        ("validate the inventory", ["validate", str(site)], 0),
        ("evaluate the policy pack", ["check", str(site)], 0),
        ("plan, and save the signed plan", ["plan", str(site), "-o", str(plan_file)], 0),
        ("apply the saved plan through Ansible", ["apply", str(plan_file)], 0),
        ("plan again: nothing left to do", ["plan", str(site), "--detailed-exitcode"], 0),
        ("verify the signed attestations offline", ["attest", "verify", str(site), "--key", f"{key}.pub"], 0),
    ]
    for number, (title, argv, expected) in enumerate(steps, 1):
        console.rule(f"[bold]{number}/{len(steps)}  {title}[/]  [dim]sovkit {' '.join(argv[:1])}[/]")
        code = main(argv)
        if code != expected:
            raise SovkitError(f"demo step {number} (sovkit {' '.join(argv)}) exited {code}, expected {expected}",
                              f"inspect {workdir}; rerun with --fresh to start over")
    console.rule("[bold green]demo complete[/]")
    console.print(f"Demo site in {workdir}: hosts under {workdir / 'hosts'}, state in {workdir / '.sovkit'}.")
    return 0


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
