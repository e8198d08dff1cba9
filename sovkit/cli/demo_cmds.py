"""`sovkit demo`: the main job on the embedded demo site, as a scripted sequence of real CLI verbs."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from sovkit import api
from sovkit.cli.options import JsonOpt
from sovkit.cli.output import console, emit_result
from sovkit.errors import SovkitError


def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo site lives.")] = Path("sovkit-demo"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over: delete the workdir first.")] = False,
    json_out: JsonOpt = False,
) -> int:
    """Run validate → check → plan → apply → plan → attest verify → audit → verify on the demo site."""
    from sovkit.cli.main import main  # the same entry point a shell would use

    workdir = workdir.resolve()
    site = api.prepare_demo(workdir, fresh=fresh)
    os.environ["SOVKIT_SIGNING_KEY"] = str(workdir / ".sovkit" / "keys" / "operator.key")
    pack = workdir / "audit-pack"
    if pack.exists():  # the demo's own output from an earlier run; `sovkit audit` refuses to overwrite
        shutil.rmtree(pack)
    report = api.DemoReport(str(workdir), audit_pack=str(pack))
    commands = api.demo_commands(workdir, site)
    for number, step in enumerate(commands, 1):
        command = "sovkit " + " ".join(step.argv)
        # in JSON mode every step's own output (tables, progress) goes to stderr: stdout is the summary only
        with contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
            console.rule(f"[bold]{number}/{len(commands)}  {step.name}[/]  [dim]sovkit {step.argv[0]}[/]")
            code = main(step.argv)
        ok = code == 0
        report.steps.append(api.DemoStep(step.name, command, ok, f"exit {code}" + ("" if ok else ", expected 0")))
        if not ok:
            report.ok = False
            if json_out:
                emit_result(report)
            raise SovkitError(f"demo step {number} ({command}) exited {code}, expected 0",
                              f"inspect {workdir}; rerun with --fresh to start over")
    if json_out:
        emit_result(report)
        return 0
    console.rule("[bold green]demo complete[/]")
    console.print(f"Demo site in {workdir}: hosts under {workdir / 'hosts'}, state in {workdir / '.sovkit'}, "
                  f"audit report in {pack / 'report.html'}.")
    return 0


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
