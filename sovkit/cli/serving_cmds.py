"""`sovkit serving status|request`: the serving endpoints, seen from where sovkit runs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sovkit import api
from sovkit.cli.options import InvArg, JsonOpt, StateDirOpt
from sovkit.cli.output import console, emit_result
from sovkit.cli.plan_cmds import Progress, show_report
from sovkit.errors import ProvisionError, SovkitError

serving_app = typer.Typer(help="Serving endpoints: health, the model they serve, a request through the router.",
                          no_args_is_help=True)


@serving_app.command("status")
def status(inventory: InvArg, state_dir: StateDirOpt = None, json_out: JsonOpt = False,
           timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each endpoint.")] = 10.0,
           ) -> None:
    """Each endpoint's health, role, model version and latency; exit 1 when one is not healthy."""
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir)
    rows = api.serving_status(workspace=ws, timeout=timeout)
    if json_out:
        emit_result(rows)
    else:
        table = Table()
        for col in ("host", "process", "role", "endpoint", "health", "serves", "recorded", "latency"):
            table.add_column(col, overflow="fold")
        for r in rows:
            health = "[green]healthy[/]" if r.healthy else f"[red]down[/] {escape(r.error)}"
            table.add_row(escape(r.host), escape(r.name), escape(r.role), escape(r.endpoint), health,
                          escape(r.model_version or "-"),
                          escape(f"{r.recorded_status} {r.recorded_version or ''}".strip()),
                          f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "-")
        console.print(table)
    down = [r for r in rows if not r.healthy]
    if down:
        raise SovkitError(f"{len(down)} of {len(rows)} serving endpoint(s) not healthy: "
                          + ", ".join(f"{r.name} on {r.host}" for r in down),
                          "`sovkit plan --refresh` shows them as drift; `sovkit apply` restarts them")


@serving_app.command("request")
def request(
    inventory: InvArg,
    prompt: Annotated[str, typer.Option("--prompt", help="The prompt to send.")] = "Hello from sovkit",
    to: Annotated[str | None, typer.Option("--to", help="A serving group or plain deployment (default: the "
                                                        "first by name).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=4096)] = 16,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send one completion through a serving group's router (or to a plain deployment); print it with timings."""
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir)
    answer = api.serving_request(workspace=ws, prompt=prompt, target=to, max_tokens=max_tokens)
    if json_out:
        emit_result(answer)
        return
    console.print(f"[bold]{escape(answer.model)}[/] via {escape(answer.endpoint)}: {escape(answer.text)}")
    console.print(f"time to first token {answer.ttft_ms:.1f} ms, whole answer {answer.total_ms:.1f} ms "
                  f"({answer.chunks} chunks)")
    _show_forecast(api.serving_forecast(workspace=ws, prompt=prompt, target=to), answer)


def _show_forecast(f: api.RequestForecast | None, answer: api.Answer) -> None:
    """The planner's prediction for the same request, next to what was measured."""
    if f is None or f.ttft_ms is None:
        return
    measured = ((answer.total_ms - answer.ttft_ms) / (answer.chunks - 1)) if answer.chunks > 1 else None
    per_token = f"{measured:.3g} ms" if measured is not None else "-"
    prefill = f"prefill {f.front.prefill_ms:.3g} ms" + (
        f" + KV transfer {f.front.kv_transfer_ms:.3g} ms" if f.front.kv_transfer_ms is not None else "")
    where = f"{f.front.accelerator} TP {f.front.tensor_parallel}"
    if f.decode is not None:
        where = f"prefill on {where}, decode on {f.decode.accelerator} TP {f.decode.tensor_parallel}"
    calibrated = "calibrated" if f.front.calibrated else "uncalibrated"
    tokens = f"{'~' if f.tokens_estimated else ''}{f.prompt_tokens}-token prompt"
    tpot = f"{f.tpot_ms:.3g} ms" if f.tpot_ms is not None else "-"
    console.print(f"measured:  time to first token {answer.ttft_ms:.1f} ms, per token {per_token}")
    console.print(f"predicted: time to first token {f.ttft_ms:.3g} ms ({prefill}), per token {tpot}")
    console.print(f"[dim]           (serving planner, {escape(tokens)} at batch 1, {escape(where)}, {calibrated})[/]")
    if f.simulated:
        console.print("[dim]on the simulator the measured side is the simulator's: the demo runtime does no model "
                      "arithmetic on simulated NPUs, so its times are this machine's processes and HTTP; the "
                      "prediction is what the chip itself would take[/]")


@serving_app.command("stop")
def stop(
    inventory: InvArg,
    host: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop the serving processes (maintenance, the end of a demo); `sovkit apply` starts them again."""
    ws = api.open_workspace(inventory=inventory, state_dir=state_dir)
    with Progress(enabled=not json_out) as progress:
        report = api.serving_stop(workspace=ws, hosts=host or None, on_event=progress)
    show_report(report, json_out)
    if not report.ok:
        raise ProvisionError(f"stopping failed on {len(report.failures)} host(s)", "see the messages above")


def register(app: typer.Typer) -> None:
    app.add_typer(serving_app, name="serving")
