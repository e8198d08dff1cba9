"""`sovkit monitor`: continuous compliance — check on a schedule, attest each check, serve Prometheus metrics.

Exit codes: 0 when stopped by SIGTERM/SIGINT (the check under way is abandoned and attested as such) or
when every check of ``--once``/``--count`` found the site compliant; 3 when one found it non-compliant;
1 when a check failed (a stage could not run, or its statement could not be attested).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from sovkit import api
from sovkit.cli.options import InvArg, JsonOpt, PoliciesOpt, StateDirOpt
from sovkit.cli.output import console, err_console
from sovkit.cli.policy_cmds import OpaTimeoutOpt, OpaTokenOpt, OpaUrlOpt, engine_from_options
from sovkit.cli.signing import KeyOpt, wire_signer
from sovkit.errors import MonitorError

DEFAULT_PORT = 9469


def _line(report: api.CheckReport) -> str:
    p = report.predicate
    verdict = "[green]compliant[/]" if p.compliant else "[red]NOT compliant[/]"
    why: list[str] = []
    if p.errors:
        why += [f"{stage} failed: {msg}" for stage, msg in p.errors.items()]
    if p.deny:
        why.append("deny " + ", ".join(p.deny))
    for what, found in (("drift", p.drift), ("pending", p.pending)):
        if found:
            why.append(f"{what} on " + ", ".join(f"{h} ({', '.join(sorted({c.component for c in cs}))})"
                                                 for h, cs in sorted(found.items())))
    down = [f"{s.name} on {s.host}" for s in p.serving if not s.healthy]
    if down:
        why.append("unhealthy " + ", ".join(down))
    attested = f"attested #{report.entry.index}" if report.entry else f"[red]NOT attested[/]: {report.attest_error}"
    detail = f" — {escape('; '.join(why))}" if why else ""
    return f"{p.time} {escape(p.site)}: {verdict}{detail} ({p.duration_s:.1f} s, {attested})"


def monitor(
    inventory: InvArg,
    interval: Annotated[str, typer.Option("--interval", help="Time between check starts: 30s, 15m, 1h, 1d.")] = "15m",
    once: Annotated[bool, typer.Option("--once", help="Run one check and exit (for a systemd timer).")] = False,
    count: Annotated[int | None, typer.Option("--count", min=1, help="Run N checks and exit.")] = None,
    metrics_address: Annotated[str, typer.Option("--metrics-address", help="Address the metrics server binds."
                                                 )] = "127.0.0.1",
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", min=0, max=65535, help=(
        f"Serve Prometheus metrics on this port (default {DEFAULT_PORT} when running until stopped; with --once "
        "or --count only when given; 0: no server)."))] = None,
    metrics_file: Annotated[Path | None, typer.Option("--metrics-file", help="Also write the metrics to this "
                                                      "file after each check (node_exporter textfile collector)."
                                                      )] = None,
    trust: Annotated[list[Path] | None, typer.Option("--trust", help="Public key the attestation log is verified "
                                                     "with (repeatable; default: the operator key's own).")] = None,
    serving_timeout: Annotated[float, typer.Option("--serving-timeout", min=0.1, help="Seconds to wait for each "
                                                   "serving endpoint's probe.")] = 5.0,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = None,
    policies: PoliciesOpt = None,
    key: KeyOpt = None,
    opa_url: OpaUrlOpt = None,
    opa_token: OpaTokenOpt = None,
    opa_timeout: OpaTimeoutOpt = 5.0,
) -> int:
    """Check the site on a schedule: observe the hosts, evaluate the policy, verify the attestation log, probe
    serving; attest each check, log the decision to the decision-log sinks, and serve Prometheus metrics."""
    if once and count is not None:
        raise MonitorError("--once and --count exclude each other", "--once is --count 1")
    seconds = api.parse_interval(text=interval)
    engine = engine_from_options(opa_url, opa_token, opa_timeout)
    ws = wire_signer(api.open_workspace(inventory=inventory, state_dir=state_dir, policy_engine=engine,
                                        extra_policies=policies), key)
    keys = [api.load_public_key(path=p) for p in trust] if trust else None
    mon = api.open_monitor(workspace=ws, keys=keys, serving_timeout=serving_timeout)
    metrics = api.monitor_metrics(monitor=mon)
    port = metrics_port if metrics_port is not None else (0 if once or count is not None else DEFAULT_PORT)
    server = api.serve_monitor_metrics(metrics=metrics, address=metrics_address, port=port) if port else None
    if server is not None and not json_out:
        err_console.print(f"metrics on http://{escape(metrics_address)}:{server.port}/metrics")

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}

    def show(report: api.CheckReport) -> None:
        if json_out:
            doc = {"predicate": report.predicate.model_dump(mode="json"),
                   "attestation": report.entry.index if report.entry else None, "attest_error": report.attest_error}
            sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            console.print(_line(report))

    try:
        reports = api.run_monitor(monitor=mon, interval=seconds, stop=stop, count=1 if once else count,
                                  metrics=metrics, metrics_file=metrics_file, on_check=show)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.close()
    if stop.is_set():
        if not json_out:
            err_console.print("monitor stopped")
        return 0
    if any(r.failed for r in reports):
        return 1
    return 0 if all(r.predicate.compliant for r in reports) else 3


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
