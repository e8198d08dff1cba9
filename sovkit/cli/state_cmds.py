"""`sovkit state list|show|history|pull|push`: the recorded state, its history of serials, and moving it
between the local state directory and PostgreSQL (docs/state.md)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sovkit import api
from sovkit.cli.options import InvArg, JsonOpt, LockTimeoutOpt, StateDirOpt, StateUrlOpt
from sovkit.cli.output import console, emit_result
from sovkit.errors import SovkitError

state_app = typer.Typer(help="The recorded state: list sites, show, history of serials, pull/push (PostgreSQL).",
                        no_args_is_help=True)

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a state of another lineage (or a newer serial); "
                                                        "the replaced serials stay in the history.")]


@state_app.command("list")
def list_sites(state_url: StateUrlOpt = None, json_out: JsonOpt = False) -> None:
    """The sites with a state in the database: serial, hosts, last writer, lock holder."""
    url = state_url or os.environ.get("SOVKIT_STATE_URL")
    if not url:
        raise SovkitError("which database?", "pass --state-url postgresql://USER@HOST/DB (or set $SOVKIT_STATE_URL)")
    rows = api.state_sites(url=url)
    if json_out:
        emit_result(rows)
        return
    table = Table(title=f"{len(rows)} site(s)", title_justify="left")
    for col in ("site", "serial", "hosts", "lineage", "updated", "by", "locked"):
        table.add_column(col, justify="right" if col in ("serial", "hosts") else "left")
    for r in rows:
        table.add_row(escape(r.site), str(r.serial), str(r.hosts), r.lineage[:8], r.updated_at, escape(r.updated_by),
                      escape(r.locked_by or "-"))
    console.print(table)


@state_app.command("show")
def show(inventory: InvArg, state_dir: StateDirOpt = None, state_url: StateUrlOpt = None,
         json_out: JsonOpt = False) -> None:
    """The site's current state: where it is kept, lineage, serial, hosts and what each has recorded."""
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir, state_url=state_url)
    state = ws.store.read()
    held = ws.store.current_lock()
    if json_out:
        emit_result({"location": ws.store.location, "lock": held, "state": state})
        return
    console.print(f"State {escape(ws.store.location)}: site {escape(state.site or '-')}, lineage "
                  f"{state.lineage or '(none yet)'}, serial {state.serial}, {len(state.hosts)} host(s)")
    if held is not None:
        console.print(f"[yellow]locked:[/] {escape(held.operation)} by {escape(held.owner)} (pid {held.pid} on "
                      f"{escape(held.hostname)}) since {held.created}, lock id {held.id}")
    for name, rec in sorted(state.hosts.items()):
        parts = [f"{len(v)} {k}" for k, v in (("firmware", rec.firmware), ("runtimes", rec.runtimes),
                                              ("models", rec.models), ("serving", rec.serving),
                                              ("drivers", rec.drivers)) if v]
        console.print(f"  {escape(name)}: {', '.join(parts) or 'nothing recorded'}"
                      f"{f' (last apply {rec.last_apply})' if rec.last_apply else ''}")


@state_app.command("history")
def history(inventory: InvArg, state_dir: StateDirOpt = None, state_url: StateUrlOpt = None,
            json_out: JsonOpt = False) -> None:
    """Every serial written: when, by whom (user@host), in which operation and run (lock id)."""
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir, state_url=state_url)
    entries = api.state_history(workspace=ws)
    if json_out:
        emit_result(entries)
        return
    table = Table(title=f"History of {escape(ws.store.location)} ({len(entries)} serial(s))", title_justify="left")
    for col in ("serial", "lineage", "when", "who", "operation", "run"):
        table.add_column(col, justify="right" if col == "serial" else "left", overflow="fold")
    for e in entries:
        table.add_row(str(e.serial), e.lineage[:8], e.at, escape(f"{e.who}@{e.hostname}"), escape(e.operation),
                      e.run or "-")
    console.print(table)


def _move(direction: str, inventory: InvArg, state_dir: StateDirOpt, state_url: StateUrlOpt, force: bool,
          lock_timeout: float, json_out: bool) -> None:
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir, lock_timeout=lock_timeout)
    moved = api.state_move(workspace=ws, direction="pull" if direction == "pull" else "push", state_url=state_url,
                           force=force)
    if json_out:
        emit_result(moved)
        return
    if not moved.changed:
        console.print(f"{escape(moved.target)} already holds serial {moved.serial} (lineage {moved.lineage}): "
                      "nothing to move.")
        return
    what = f", replacing {moved.replaced}" if moved.replaced else ""
    console.print(f"{'Pulled' if direction == 'pull' else 'Pushed'} serial {moved.serial} (lineage {moved.lineage}) "
                  f"from {escape(moved.source)} to {escape(moved.target)}{escape(what)}.")


@state_app.command("pull")
def pull(inventory: InvArg, state_dir: StateDirOpt = None, state_url: StateUrlOpt = None, force: ForceOpt = False,
         lock_timeout: LockTimeoutOpt = 0.0, json_out: JsonOpt = False) -> None:
    """Copy the site's state from the database into the local state directory (same lineage and serial)."""
    _move("pull", inventory, state_dir, state_url, force, lock_timeout, json_out)


@state_app.command("push")
def push(inventory: InvArg, state_dir: StateDirOpt = None, state_url: StateUrlOpt = None, force: ForceOpt = False,
         lock_timeout: LockTimeoutOpt = 0.0, json_out: JsonOpt = False) -> None:
    """Move the local state into the database (refusing another lineage or a newer serial there without --force)."""
    _move("push", inventory, state_dir, state_url, force, lock_timeout, json_out)


def register(app: typer.Typer) -> None:
    app.add_typer(state_app, name="state")
