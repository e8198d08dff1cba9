"""`sovkit init DIR --discover HOST…`: a starting inventory from what the hosts are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sovkit import api
from sovkit.cli.options import JsonOpt
from sovkit.cli.output import console, emit_result
from sovkit.errors import SovkitError


def init(
    directory: Annotated[Path, typer.Argument(help="Directory to write site.yaml into (created if missing).",
                                              show_default=False)],
    discover: Annotated[list[str] | None, typer.Option(
        "--discover", help="A host to read: NAME=ADDRESS or ADDRESS (repeat for several hosts).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Site name (default: the directory's name).")] = None,
    country: Annotated[str | None, typer.Option(
        "--country", help="The site's ISO 3166-1 alpha-2 country (left as a TODO when not given).")] = None,
    user: Annotated[str, typer.Option("--user", help="SSH login name.")] = "root",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="SSH port.")] = 22,
    key: Annotated[Path | None, typer.Option("--key", help="SSH private key file.")] = None,
    python: Annotated[str | None, typer.Option("--python", help="Python on the hosts (default /usr/bin/python3; "
                                               "local: this Python).")] = None,
    connection: Annotated[str, typer.Option("--connection", help="ssh, or local (this machine).")] = "ssh",
    root: Annotated[Path | None, typer.Option(
        "--root", help="Simulated hosts: host NAME's filesystem root is ROOT/NAME (written as its `root:`).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing site.yaml.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a starting site.yaml: hosts with the arch, CPU and accelerators they report; racks, trust roots and
    the artifact store left as TODO values that `sovkit validate` names until they are filled."""
    if connection not in ("ssh", "local"):
        raise typer.BadParameter(f"unknown connection {connection!r}; use ssh or local", param_hint="--connection")
    if not discover:
        raise SovkitError("nothing to discover: no --discover HOST given",
                          "pass --discover NAME=ADDRESS for each host to read")
    opts = api.DiscoverOptions(connection="local" if connection == "local" else "ssh", user=user, port=port, key=key,
                           python=python, root=root)
    done = api.discover_site(directory=directory, hosts=discover, options=opts, name=name, country=country,
                             force=force)
    if json_out:
        emit_result({"path": str(done.path),
                     "hosts": {h.name: h.facts.model_dump(mode="json") for h in done.hosts}})
        return
    for h in done.hosts:
        f = h.facts
        cards = ", ".join(f"{n}× {k}" for k, n in sorted(f.accelerator_counts().items())) or "no accelerators"
        console.print(f"[green]✓[/] {escape(h.name)}: {escape(f.arch or '?')}, {escape(f.cpu or 'unknown cpu')}, "
                      f"{escape(cards)}")
        for other in f.other_devices:
            console.print(f"  [yellow]not in the catalog:[/] {escape(other)}")
    console.print(f"wrote {escape(str(done.path))}: fill in its TODO values, then run `sovkit validate "
                  f"{escape(str(done.path))}`")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
