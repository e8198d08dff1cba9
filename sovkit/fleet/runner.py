"""Drive each site of a fleet through its gateway, sites in parallel, one failing site never stopping others.

Per site: the job (``fleet.yml`` with the verb's arguments) is transmitted over SSH to ``python -m
ansible_runner worker`` on the gateway, which runs ``sovkit fleet agent`` there against the site's own
inventory, state, artifact store and attestation log; the event stream comes back and is processed here. The
controller holds no site data and never connects to a site's hosts: only to the gateway, with strict host-key
checking. What comes back is the signed summary, verified with the site's key before it is believed.
"""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovkit.errors import FleetError, SovkitError
from sovkit.fleet.models import FleetSite, LoadedFleet
from sovkit.fleet.summary import SiteSummary, Verb, verify_summary
from sovkit.plan.rollout import Rollout
from sovkit.provision.ansible_executor import AnsibleRunnerExecutor
from sovkit.provision.executor import ExecEvent, HostTarget
from sovkit.signing.keys import PublicKey

WorkerFactory = Callable[[list[str], str], AnsibleRunnerExecutor]


@dataclass(frozen=True)
class SiteResult:
    """One row of the fleet table: the verified summary, or why there is none."""

    site: str
    gateway: str
    summary: SiteSummary | None
    error: str | None = None
    envelope: str | None = None

    @property
    def ok(self) -> bool:
        return self.summary is not None and self.summary.ok


def ssh_worker_argv(loaded: LoadedFleet, site: FleetSite) -> list[str]:
    """``ssh … GATEWAY -- PATH=… PYTHON -m ansible_runner worker``: strict host keys, batch mode, no agent.

    The remote side is a command line the gateway's shell reads, so every piece is a validated plain value
    (fleet models) and quoted once more here.
    """
    gw = site.gateway
    bindir = gw.python.rsplit("/", 1)[0] or "/"
    remote = (f"PATH={shlex.quote(bindir)}:/usr/local/bin:/usr/bin:/bin "
              f"{shlex.quote(gw.python)} -m ansible_runner worker")
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"UserKnownHostsFile={loaded.local(gw.known_hosts)}", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=6",
            "-i", str(loaded.local(gw.ssh_key)), "-p", str(gw.port), "-l", gw.user, gw.address, "--", remote]


def agent_args(site: FleetSite, verb: Verb, nonce: str, rollout: Rollout) -> list[str]:
    """The arguments ``sovkit fleet agent`` gets on the gateway (values only; the playbook passes them as argv)."""
    args = [verb, site.inventory, "--site", site.name, "--nonce", nonce]
    if site.state_dir:
        args += ["--state-dir", site.state_dir]
    if site.signing_key:
        args += ["--key", site.signing_key]
    options = {"--limit": rollout.limit, "--batch-size": rollout.batch_size, "--canary": rollout.canary,
               "--max-fail-percent": rollout.max_fail_percent, "--forks": rollout.forks}
    for flag, value in options.items():
        if value is not None:
            args += [flag, str(value)]
    return args


def _executor(worker: list[str], label: str) -> AnsibleRunnerExecutor:
    return AnsibleRunnerExecutor(worker=worker, worker_label=label)


def run_site(loaded: LoadedFleet, site: FleetSite, verb: Verb, rollout: Rollout, workdir: Path,
             make_executor: WorkerFactory = _executor) -> SiteResult:
    """One site, start to verified summary. Never raises for the site's own failures: they are its row."""
    label = f"gateway {site.gateway.address} (site {site.name})"
    nonce = secrets.token_hex(16)
    try:
        key = PublicKey.load(loaded.local(site.key))
        connection = {"ansible_connection": "local", "ansible_python_interpreter": site.gateway.python}
        target = HostTarget(site.name, connection, {"sovkit_python": site.gateway.python,
                             "sovkit_fleet_args": agent_args(site, verb, nonce, rollout)})
        got: list[dict[str, Any]] = []
        failed: list[str] = []

        def on_event(event: ExecEvent) -> None:
            if event.kind == "record" and "sovkit_fleet" in event.data:
                got.append(event.data)
            elif event.kind in ("failed", "unreachable"):
                failed.append(f"{event.task}: {event.message}")

        executor = make_executor(ssh_worker_argv(loaded, site), label)
        executor.run("fleet.yml", [target], on_event, workdir / site.name)
        if not got:
            raise FleetError(f"{label} ran the job but sent no summary" + (f" ({failed[0]})" if failed else ""),
                             "check sovkit on the gateway (`python3 -m sovkit --version` there)")
        data = got[-1]
        raw = data["sovkit_fleet"]
        raw = json.dumps(raw) if isinstance(raw, dict) else str(raw).strip()
        if not raw:
            stderr = str(data.get("sovkit_fleet_stderr") or "").strip().splitlines()
            raise FleetError(f"the fleet agent at site {site.name} failed (exit {data.get('sovkit_fleet_rc')}): "
                             f"{stderr[-1] if stderr else 'no message'}",
                             "run the same `sovkit fleet agent` on the gateway to see why")
        summary = verify_summary(raw, key, site.name, verb, nonce)
        return SiteResult(site.name, site.gateway.address, summary, envelope=raw)
    except SovkitError as exc:
        return SiteResult(site.name, site.gateway.address, None, error=exc.message)


def run_fleet(loaded: LoadedFleet, verb: Verb, rollout: Rollout, workdir: Path, parallel: int | None = None,
              sites: Sequence[str] | None = None, make_executor: WorkerFactory = _executor,
              on_result: Callable[[SiteResult], None] = lambda r: None) -> list[SiteResult]:
    """Every site (or those named), ``parallel`` at once; results in fleet order."""
    chosen = [s for s in loaded.fleet.sites if sites is None or s.name in sites]
    unknown = set(sites or ()) - {s.name for s in loaded.fleet.sites}
    if unknown:
        raise FleetError(f"no site {', '.join(sorted(unknown))} in {loaded.path}",
                         f"sites: {', '.join(s.name for s in loaded.fleet.sites)}")
    workdir.mkdir(parents=True, exist_ok=True)

    def one(site: FleetSite) -> SiteResult:
        result = run_site(loaded, site, verb, rollout, workdir, make_executor)
        on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=parallel or loaded.fleet.parallel) as pool:
        return list(pool.map(one, chosen))
