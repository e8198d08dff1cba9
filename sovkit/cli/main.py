"""The ``sovkit`` command: the app, its sub-commands, and the one error boundary."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from sovkit import __version__
from sovkit.cli import (
    attest_cmds,
    audit_cmds,
    bundle_cmds,
    demo_cmds,
    fleet_cmds,
    init_cmds,
    inventory_cmds,
    keyring_cmds,
    monitor_cmds,
    plan_cmds,
    planner_cmds,
    policy_cmds,
    serving_cmds,
    state_cmds,
)
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


for _module in (inventory_cmds, policy_cmds, plan_cmds, attest_cmds, audit_cmds, bundle_cmds, demo_cmds,
                serving_cmds, planner_cmds, init_cmds, fleet_cmds, monitor_cmds, state_cmds):
    _module.register(app)
keyring_cmds.register(app)


def _exception_types() -> tuple[tuple[type[BaseException], ...], ...]:
    """(usage errors, exits, aborts) as typer raises them.

    typer >= 0.2x vendors its own copy of click whose usage errors derive from
    ``typer.TyperException``, not ``click.ClickException``; older typer raises
    click's own. Catch whichever exist.
    """
    usage: list[type[BaseException]] = []
    base = getattr(typer, "TyperException", None)
    if isinstance(base, type) and issubclass(base, Exception):
        usage.append(base)
    exits: list[type[BaseException]] = [typer.Exit]
    aborts: list[type[BaseException]] = [typer.Abort]
    try:
        import click
    except ImportError:  # pragma: no cover - click is optional with a vendoring typer
        pass
    else:
        usage.append(click.ClickException)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    return tuple(usage), tuple(exits), tuple(aborts)


_USAGE_ERRORS, _EXITS, _ABORTS = _exception_types()


def _show_usage_error(exc: BaseException) -> int:
    """Typer's own rendering of a usage error (usage line, 'Try --help', message); exit 2 for usage."""
    show = getattr(exc, "show", None)
    if callable(show):
        show(file=sys.stderr)
    else:  # pragma: no cover - every typer/click usage error has show()
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
    code = getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) else 2


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
    except _EXITS as exc:
        code = getattr(exc, "exit_code", 0)
        return code if isinstance(code, int) else 0
    except _ABORTS:
        err_console.print("[bold red]aborted[/]")
        return 130
    except _USAGE_ERRORS as exc:
        return _show_usage_error(exc)
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


def _tolerate_narrow_encodings() -> None:
    """On a terminal that cannot encode ✓ or — (PYTHONIOENCODING=ascii) print '?' instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            reconfigure(errors="replace")


def run() -> None:
    _tolerate_narrow_encodings()
    sys.exit(main())
