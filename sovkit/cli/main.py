"""The ``sovkit`` command: the app, its sub-commands, and the one error boundary."""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer
from rich.markup import escape

from sovkit import __version__
from sovkit.cli import bundle_cmds, demo_cmds, inventory_cmds, plan_cmds
from sovkit.cli.output import err_console
from sovkit.errors import SovkitError

app = typer.Typer(
    name="sovkit",
    help="Sovereign AI sites: inventories, policies, plan/apply, attestations, audits, air-gap bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sovkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """sovkit: from bare OS to a serving, approved local model — with evidence a regulator can verify."""


for _module in (inventory_cmds, plan_cmds, demo_cmds, bundle_cmds):
    _module.register(app)


def _report(exc: SovkitError) -> int:
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
    for line in exc.details():
        err_console.print(f"  {escape(line)}")
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {escape(exc.hint)}")
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; the single place errors become messages."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="sovkit", standalone_mode=False)
    except SovkitError as exc:
        if debug:
            raise
        return _report(exc)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("[bold red]aborted[/]")
        return 130
    except click.ClickException as exc:
        exc.show(file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        return 130
    except Exception as exc:
        if debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}\n"
            "[dim]hint:[/] this is a bug in sovkit; rerun with --debug for the traceback and report it"
        )
        return 1
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
