"""`sovkit serving predict|calibrate`: the serving planner's performance model, on the serving command group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from sovkit import api
from sovkit.cli.options import JsonOpt
from sovkit.cli.output import console, emit_result
from sovkit.cli.serving_cmds import serving_app

DtypeName = Literal["bf16", "fp16", "fp8", "int8", "int4"]


def predict(
    model_config: Annotated[str, typer.Option("--model-config", help="A model's config.json, or a shipped example "
                                              "(llama-3.1-8b, llama-3.1-70b, llama-2-70b, ax-4.0-light, ax-k1, "
                                              "opt-13b).", show_default=False)],
    accelerator: Annotated[str, typer.Option("--accelerator", help="Catalog accelerator kind.", show_default=False)],
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", min=1, help="Tokens per prompt.",
                                               show_default=False)],
    tp: Annotated[int, typer.Option("--tp", min=1, help="Tensor-parallel degree (devices per instance).")] = 1,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Prompts per prefill / sequences per decode step.")
                     ] = 1,
    context_tokens: Annotated[int | None, typer.Option("--context-tokens", min=0, help="Tokens in each sequence's "
                                                       "KV cache at the decode step (default: the prompt).")] = None,
    dtype: Annotated[DtypeName, typer.Option("--dtype", help="Weight dtype.")] = "bf16",
    kv_dtype: Annotated[DtypeName, typer.Option("--kv-dtype", help="KV cache dtype.")] = "bf16",
    power_cap_w: Annotated[float | None, typer.Option("--power-cap-w", min=1, help="Per-device power cap (W); "
                                                      "below a phase's power it slows compute-bound work.")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="A site calibration file (from "
                                                     "`sovkit serving calibrate --write`), used before the "
                                                     "catalog's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict prefill time, decode step time, the largest batch memory allows, power and tokens per joule."""
    work = api.Workload(tp=tp, batch=batch, prompt_tokens=prompt_tokens,
                        context_tokens=prompt_tokens if context_tokens is None else context_tokens,
                        weight_dtype=dtype, kv_dtype=kv_dtype, power_cap_w=power_cap_w)
    out = api.serving_predict(model_config=model_config, accelerator=accelerator, work=work, calibration=calibration)
    if json_out:
        emit_result(out)
        return
    console.print(f"[bold]{escape(out.model)}[/] ({out.params_total / 1e9:.2f}B parameters, "
                  f"{out.params_active / 1e9:.2f}B active) on {out.tp} x {escape(out.accelerator)}, "
                  f"{out.dtype} weights, {out.kv_dtype} KV")
    table = Table()
    for col in ("", "prefill", "decode step"):
        table.add_column(col)
    table.add_row("shape", f"{out.batch} x {out.prompt_tokens} tokens",
                  f"{out.batch} sequence(s) at {out.context_tokens} tokens")
    table.add_row("time", f"{out.prefill_ms:.2f} ms", f"{out.decode_step_ms:.2f} ms")
    table.add_row("bound", out.prefill_bound, out.decode_bound)
    table.add_row("all-reduce", f"{out.allreduce_ms['prefill']:.2f} ms", f"{out.allreduce_ms['decode']:.3f} ms")
    table.add_row("tokens/s", f"{out.prefill_tokens_per_s:,.0f}", f"{out.decode_tokens_per_s:,.1f}")
    table.add_row("power (instance)", f"{out.power_prefill_w:,.0f} W", f"{out.power_decode_w:,.0f} W")
    table.add_row("tokens/J", f"{out.prefill_tokens_per_j:.2f}", f"{out.decode_tokens_per_j:.3f}")
    console.print(table)
    console.print(f"KV cache {out.kv_bytes_per_token:,} bytes/token; per device: weights "
                  f"{out.weights_gb_per_device:.1f} GB, one sequence's KV {out.kv_gb_per_sequence:.3f} GB, "
                  f"usable {out.usable_gb_per_device:.1f} GB -> max batch [bold]{out.max_batch}[/]")
    if out.note:
        console.print(f"[red]{escape(out.note)}[/]" if out.max_batch == 0 else f"[yellow]{escape(out.note)}[/]")
    if out.calibrated:
        console.print(f"calibrated: eta compute {out.eta_compute:g}, eta memory {out.eta_memory:g}, overhead "
                      f"{out.overhead_ms:g} ms ({escape(out.calibration_source)})")
    else:
        console.print(f"[yellow]{escape(out.calibration_source)}[/]")


def calibrate(
    measurements: Annotated[Path, typer.Argument(help="CSV of measured points (columns: docs/planner.md).",
                                                 show_default=False)],
    write: Annotated[Path | None, typer.Option("--write", help="Write the calibration (factors, per-point errors, "
                                               "source) to this YAML file for `predict --calibration`.")] = None,
    per_tp: Annotated[bool, typer.Option("--per-tp", help="Fit each TP degree apart (default: one fit per chip; "
                                         "the all-reduce term carries TP).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fit compute/memory efficiency and per-step overhead per device from measured latencies; report the errors."""
    result = api.serving_calibrate(measurements=measurements, write=write, per_tp=per_tp)
    if json_out:
        emit_result(result)
        return
    table = Table(title="fitted factors")
    for col in ("device", "tp", "eta compute", "eta memory", "overhead ms", "source"):
        table.add_column(col, overflow="fold")
    for c in result.calibrations:
        table.add_row(escape(c.device), str(c.tp or "any"), f"{c.eta_compute:g}", f"{c.eta_memory:g}",
                      f"{c.overhead_ms:g}", escape(c.source))
    console.print(table)
    points = Table(title="points (held out: not fitted)")
    for col in ("device", "tp", "model", "phase", "batch x prompt / context", "measured ms", "predicted ms",
                "error", "held out"):
        points.add_column(col)
    for p in result.points:
        points.add_row(escape(p.device), str(p.tp), escape(p.model), p.phase,
                       f"{p.batch} x {p.prompt_tokens} / {p.context_tokens}", f"{p.measured_ms:g}",
                       f"{p.predicted_ms:.2f}", f"{p.error_pct:+.1f} %", "yes" if p.holdout else "")
    console.print(points)
    console.print(f"mean absolute error: fitted points {result.mean_abs_error_fit_pct} %, held-out points "
                  f"{result.mean_abs_error_holdout_pct if result.mean_abs_error_holdout_pct is not None else '-'} %")
    if write is not None:
        console.print(f"wrote {escape(str(write))}")


def register(app: typer.Typer) -> None:
    """Attach the commands to the `serving` group (which serving_cmds adds to the app)."""
    serving_app.command("predict")(predict)
    serving_app.command("calibrate")(calibrate)
