"""`sovkit validate`, `sovkit schema`, `sovkit inventory show|export`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from sovkit import api
from sovkit.cli.options import InvArg, JsonAlwaysOpt, JsonOpt
from sovkit.cli.output import console, emit_json, emit_result
from sovkit.errors import InventoryError

inventory_app = typer.Typer(help="Inspect and export a site inventory.", no_args_is_help=True)


def validate(inventory: InvArg, json_out: JsonOpt = False) -> None:
    """Check an inventory: schema, jurisdiction codes, references, catalog ids, files."""
    try:
        loaded = api.validate(path=inventory)
    except InventoryError as exc:
        if json_out:  # machine-readable problems on stdout; the error boundary still reports and exits 1
            emit_result(api.InventoryInvalid.of(exc))
        raise
    site = loaded.site
    counts = {
        "racks": len(site.racks), "hosts": len(site.hosts), "models": len(site.models),
        "deployments": len(site.deployments),
    }
    if json_out:
        emit_result(api.InventoryValid.of(loaded))
        return
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    console.print(f"[green]✓[/] {site.metadata.name}: inventory is valid ({summary})")
    console.print(f"  digest sha256:{loaded.digest}")


def schema(json_out: JsonAlwaysOpt = False) -> None:
    """Print the JSON Schema of the inventory (for editors and CI)."""
    emit_json(api.inventory_schema())


@inventory_app.command("show")
def show(inventory: InvArg, json_out: JsonOpt = False) -> None:
    """Racks, hosts, accelerators, and power draw against each rack's budget."""
    loaded = api.validate(path=inventory)
    site = loaded.site
    racks = api.site_power(inventory=loaded)
    if json_out:
        emit_result(api.InventoryShow.of(loaded))
        return
    where = site.jurisdiction.region or site.jurisdiction.country
    console.print(f"[bold]{escape(site.metadata.name)}[/] — {escape(site.metadata.description or 'site')} ({where}"
                  f"{', air-gapped' if site.residency.air_gapped else ''})")
    rt = Table(title="Racks", title_justify="left")
    for col in ("rack", "hosts", "accelerators", "power (TDP)", "budget", "use"):
        rt.add_column(col, justify="right" if col != "rack" else "left")
    for r in racks:
        use = f"{r.ratio:.0%}"
        style = "red" if r.ratio > 1 else "yellow" if r.ratio > 0.9 else "green"
        lower = f" + {r.draw.unknown} unknown" if r.draw.unknown else ""
        rt.add_row(escape(r.rack), str(r.hosts), str(r.accelerators), f"{r.draw.watts:,.0f} W{lower}",
                   f"{r.budget_w:,.0f} W", f"[{style}]{use}[/]")
    console.print(rt)
    if len(site.hosts) > 200:
        console.print(f"{len(site.hosts):,} hosts (use --json for the full list)")
        return
    ht = Table(title="Hosts", title_justify="left")
    for col in ("host", "rack", "address", "cpu", "accelerators", "firmware"):
        ht.add_column(col)
    for h in site.hosts:
        accels = ", ".join(f"{s.count}× {s.kind}" for s in h.accelerators) or "—"
        fws = ", ".join(s.firmware or "unpinned" for s in h.accelerators) or "—"
        ht.add_row(*(escape(c) for c in (h.name, h.rack, h.address if h.connection == "ssh" else "local", h.cpu,
                                          accels, fws)))
    console.print(ht)


@inventory_app.command("export")
def export(
    inventory: InvArg,
    fmt: Annotated[str, typer.Option("--format", help="Output format: ansible.")] = "ansible",
    json_out: JsonOpt = False,
) -> None:
    """Export the inventory for other tools (an Ansible YAML inventory grouped by rack, role, accelerator)."""
    if fmt != "ansible":
        raise typer.BadParameter(f"unknown format {fmt!r}; supported: ansible", param_hint="--format")
    data: Any = api.export_ansible(inventory=api.validate(path=inventory))
    if json_out:
        emit_json(data)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("schema")(schema)
    app.add_typer(inventory_app, name="inventory")
