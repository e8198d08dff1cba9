"""`sovkit serving status|request`: the serving endpoints, seen from where sovkit runs."""

from __future__ import annotations

from pathlib import Path
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


# --- `serving plan` (psearch) ---------------------------------------------------------------------------------


@serving_app.command("plan")
def plan(
    inventory: InvArg,
    model: Annotated[str, typer.Option("--model", help="The inventory model to place.", show_default=False)],
    ttft_ms: Annotated[float, typer.Option("--ttft-ms", min=0.001, help="Time-to-first-token target (ms).",
                                           show_default=False)],
    tpot_ms: Annotated[float, typer.Option("--tpot-ms", min=0.001, help="Time-per-output-token target (ms).",
                                           show_default=False)],
    rate: Annotated[float, typer.Option("--rate", min=0.000001, help="Arrival rate, requests per second.",
                                        show_default=False)],
    isl: Annotated[int | None, typer.Option("--isl", min=1, help="Prompt (input) tokens per request.")] = None,
    osl: Annotated[int | None, typer.Option("--osl", min=1, help="Output tokens per request.")] = None,
    lengths: Annotated[Path | None, typer.Option("--lengths", help="Request-length histogram CSV "
                                                 "(isl,osl,weight) instead of --isl/--osl.")] = None,
    percentile: Annotated[int, typer.Option("--percentile", help="TTFT percentile the target holds at: 50, 90 "
                                            "or 99.")] = 90,
    price: Annotated[list[str] | None, typer.Option("--price", help="KIND=USD_PER_HOUR per device (repeatable); "
                                                    "then the objective is cost.")] = None,
    link: Annotated[str, typer.Option("--link", help="KV-transfer link between the pools: loopback, ethernet, "
                                      "rdma, pcie, nvlink.")] = "rdma",
    link_gbs: Annotated[float | None, typer.Option("--link-gbs", min=0.001, help="Measured link bandwidth, GB/s "
                                                   "(default: the nominal figure for --link).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Serving group / deployment name stem (default: the "
                                             "model name).")] = None,
    write: Annotated[Path | None, typer.Option("--write", help="Insert the placement into this site file and "
                                               "show the diff.")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="A site calibration file (from "
                                                     "`serving calibrate --write`), used first.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="auto (the planner chooses), disaggregated (a prefill/decode "
                                      "serving group) or colocated.")] = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Place MODEL's prefill and decode pools (or co-located instances) on free accelerators under the targets."""
    inv = api.validate(path=inventory)
    out = api.plan_serving(inventory=inv, model=model, ttft_ms=ttft_ms, tpot_ms=tpot_ms, rate=rate, isl=isl,
                           osl=osl, lengths=lengths, percentile=percentile, prices=price, link=link,
                           link_gbs=link_gbs, name=name, write=write, calibration=calibration, mode=mode)
    if json_out:
        emit_result(out)
        return
    _show_plan(out)


def _show_plan(out: api.ServingPlanOutput) -> None:
    p = out.plan
    console.print(f"[bold]{escape(p.model)}[/]: {p.mode} at {p.rate:g} req/s — TTFT p{p.percentile} "
                  f"{p.ttft_ms:.1f} ms (target {p.targets_ttft_ms:g}; queueing {p.queueing_ms:.1f}, KV transfer "
                  f"{p.kv_transfer_ms:.1f}), TPOT {p.tpot_ms:.1f} ms (target {p.targets_tpot_ms:g})")
    table = Table()
    for col in ("pool", "accelerator", "TP", "instances", "hosts", "devices", "max batch", "peak W/instance"):
        table.add_column(col, overflow="fold")
    for pool in p.pools:
        cap = f" (cap {pool.power_cap_w:g} W)" if pool.power_cap_w is not None else ""
        table.add_row(pool.role, escape(pool.accelerator + cap), str(pool.tensor_parallel), str(pool.instances),
                      escape(", ".join(pool.hosts)), ",".join(map(str, pool.devices)), str(pool.max_batch),
                      f"{pool.power_per_instance_w:.0f}")
    console.print(table)
    cost = f", ${p.cost_per_hour:.2f}/h" if p.cost_per_hour is not None else ""
    console.print(f"goodput {p.goodput_rps:g} req/s ({p.goodput_tokens_per_s:g} output tokens/s); "
                  f"{p.output_tokens_per_j:g} output tokens/J at peak; pools draw {p.power_w:.0f} W peak "
                  f"(+{p.added_power_w:.0f} W over idle){cost}")
    for r in p.racks:
        mark = "[green]ok[/]" if r.ok else "[red]over[/]"
        console.print(f"rack {escape(r.rack)}: {r.before_w:.0f} W → {r.peak_w:.0f} W peak of {r.budget_w:.0f} W "
                      f"{mark}")
    if p.alternatives:
        console.print("[bold]alternatives[/]")
        for a in p.alternatives:
            console.print(f"  {escape(a.summary)}: {escape(a.why_lost)}")
    for note in p.notes:
        console.print(f"[yellow]note[/] {escape(note)}")
    if out.diff is not None:
        console.print(f"[bold]written into {escape(out.written or '')}[/]")
        console.print(escape(out.diff), end="")
    else:
        console.print("[bold]placement[/] (add it to the inventory, or rerun with --write SITE_FILE)")
        console.print(escape(out.placement_yaml), end="")


def register(app: typer.Typer) -> None:
    app.add_typer(serving_app, name="serving")
