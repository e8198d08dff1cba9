"""Plan and apply benchmark: ratios measured in one run, plus `plan` seconds and peak RSS on a big site.

    python bench/apply_bench.py                      # everything (apply parts need root for the SSH test hosts)
    python bench/apply_bench.py --skip-apply         # only the 10,000-host plan
    python bench/apply_bench.py --hosts 3 --rounds 3 --plan-hosts 10000

1. apply overhead: the whole `sovkit apply SITE --auto-approve` (load, plan, preflight hashing and signature
   checks, per-component state writes, ansible-runner) against plain `ansible-playbook` replaying the very
   playbook, inventory and variables sovkit generated for that run (kept in `.sovkit/runs/RUN_ID/`), on the
   same hosts reset to the same fresh state. Each timed run gets its own SSH ControlPath directory, so no run
   reuses another's connections.
2. a no-op apply (hosts already match: the plan is empty and Ansible is not started) against a full apply.
3. `sovkit plan` on a synthetic N-host inventory (wall and CPU seconds, peak RSS), with no state and with a
   converged state (no changes).

Hosts for 1 and 2 are network-namespace SSH test hosts (tests/hostlab.py; needs root), or with `--local`
local-connection hosts. NPUs are the simulator. Absolute times on a shared machine are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from sovkit.components.host import desired_site  # noqa: E402
from sovkit.inventory import load_inventory  # noqa: E402
from sovkit.simulator import install_simulator  # noqa: E402
from sovkit.state.models import HostRecord, State  # noqa: E402
from sovkit.state.store import LocalStateStore  # noqa: E402
from tests.sitefactory import KIND, Site, big_site, make_lab_site, make_site  # noqa: E402


@dataclass
class Timed:
    wall: float
    cpu: float  # user + system of the process and every child it waited for (ansible forks, ssh)
    max_rss_kb: int
    rc: int


def timed(argv: list[str], env: dict[str, str] | None = None, out: Path | None = None) -> Timed:
    """Run a command to completion; wall time, CPU time and peak RSS from wait4 (only this command's tree)."""
    sink = open(out, "wb") if out else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if out:
            sink.close()  # type: ignore[union-attr]
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, proc.returncode)


def sovkit_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "sovkit", *map(str, args)]


def fresh_control_dir(base: Path) -> str:
    d = Path(tempfile.mkdtemp(prefix="cp", dir=base))
    return str(d)


def reset_hosts(site: Site) -> None:
    """Put every host back to its fresh state: empty root, simulated NPUs on firmware 1.0.0."""
    for h in site.data["hosts"]:
        root = site.host_root(h["name"])
        shutil.rmtree(root, ignore_errors=True)
        count = sum(a["count"] for a in h.get("accelerators", []))
        install_simulator(root, "rbln-smi", [(KIND, "1.0.0")] * count, interpreter=sys.executable)


def replay_env(run_dir: Path, control_dir: str) -> dict[str, str]:
    env = {**os.environ, **yaml.safe_load((run_dir / "env" / "envvars").read_text())}
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = control_dir
    return env


def local_site(tmp: Path, n: int) -> Site:
    hosts = [{"name": f"npu-node-{i}", "rack": "demo-rack", "address": "127.0.0.1", "arch": "aarch64",
              "cpu": "arm-neoverse-v2", "connection": "local", "root": f"hosts/npu-node-{i}",
              "python_interpreter": sys.executable,
              "accelerators": [{"kind": KIND, "count": 2, "firmware": "atom-max-fw-1.2.0"}]}
             for i in range(1, n + 1)]
    site = make_site(tmp, hosts=hosts)
    site.data["racks"][0]["power_budget_w"] = 2000 * n
    site.save()
    return site


def bench_apply(args: argparse.Namespace, work: Path) -> None:
    lab = None
    if not args.local:
        from tests.hostlab import create_lab, unavailable_reason

        reason = unavailable_reason()
        if reason:
            sys.exit(f"apply benchmark: {reason} (or pass --local)")
        lab = create_lab(args.hosts, work / "lab")
    try:
        kind = f"{args.hosts} SSH test hosts (network namespaces)" if lab else f"{args.hosts} local-connection hosts"
        print(f"apply: {kind}, {args.rounds} round(s), {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}")
        rows = []
        for i in range(args.rounds):
            tmp = work / f"round-{i}"
            tmp.mkdir()
            site = make_lab_site(tmp, lab) if lab else local_site(tmp, args.hosts)
            env = {**os.environ, "ANSIBLE_SSH_CONTROL_PATH_DIR": fresh_control_dir(work)}
            full = timed(sovkit_cmd("apply", site.path, "--auto-approve"), env, tmp / "apply.log")
            if full.rc != 0:
                sys.exit(f"sovkit apply failed, see {tmp / 'apply.log'}")
            run_dir = max((site.root / ".sovkit" / "runs").glob("apply-*"), key=lambda p: p.stat().st_mtime)
            reset_hosts(site)
            replay = timed(["ansible-playbook", "-i", str(run_dir / "inventory" / "hosts.yml"),
                            str(run_dir / "project" / "apply.yml"), "--forks", "10"],
                           replay_env(run_dir, fresh_control_dir(work)), tmp / "replay.log")
            if replay.rc != 0:
                sys.exit(f"ansible-playbook replay failed, see {tmp / 'replay.log'}")
            noop = timed(sovkit_cmd("apply", site.path, "--auto-approve"), env, tmp / "noop.log")
            if noop.rc != 0 or "Nothing to apply" not in (tmp / "noop.log").read_text():
                sys.exit(f"the no-op apply was not a no-op, see {tmp / 'noop.log'}")
            rows.append((full, replay, noop))
            print(f"  round {i + 1}: sovkit apply {full.wall:6.1f}s wall {full.cpu:5.1f}s cpu | "
                  f"ansible-playbook {replay.wall:6.1f}s wall {replay.cpu:5.1f}s cpu | "
                  f"no-op apply {noop.wall:5.2f}s wall {noop.cpu:5.2f}s cpu")
        overhead = [f.wall / r.wall for f, r, _ in rows]
        overhead_cpu = [f.cpu / r.cpu for f, r, _ in rows]
        noop_ratio = [n.wall / f.wall for f, _, n in rows]
        print(f"apply overhead (sovkit apply / ansible-playbook, same playbook and hosts): "
              f"median {statistics.median(overhead):.2f}x wall (rounds: {', '.join(f'{x:.2f}' for x in overhead)}), "
              f"{statistics.median(overhead_cpu):.2f}x cpu; goal <= 1.15x")
        print(f"no-op apply / full apply: median {statistics.median(noop_ratio):.3f}x wall "
              f"(rounds: {', '.join(f'{x:.3f}' for x in noop_ratio)})")
    finally:
        if lab is not None:
            lab.destroy()


def converge_state(site: Site) -> int:
    """Record the state a successful apply of ``site`` would leave (so the next plan has no changes)."""
    hosts: dict[str, Any] = {}
    for name, want in desired_site(load_inventory(site.path)).items():
        hosts[name] = HostRecord.model_validate({
            "firmware": {k: {"kind": k, "version": f.version, "image_sha256": f.image.sha256,
                             "devices": {str(i): {"kind": k, "firmware": f.version} for i in range(f.count)}}
                         for k, f in want.firmware.items()},
            "runtimes": {r.name: {"version": r.version, "package": r.package, "prefix": r.prefix,
                                  "artifacts": {a.store_path: a.sha256 for a in r.artifacts}}
                         for r in want.runtimes.values()},
            "models": {m.name: {"version": m.version, "files": {f.name: f.sha256 for f in m.files},
                                "path": f"{m.path}/{m.version}"} for m in want.models.values()},
            "serving": {s.deployment: {"role": s.role, "model": s.model, "model_version": s.model_version,
                                       "runtime": s.runtime, "runtime_version": s.runtime_version,
                                       "config_sha256": s.config_sha256, "port": s.port}
                        for s in want.serving.values()},
        })
    LocalStateStore(site.root / ".sovkit").write(State(site=site.data["metadata"]["name"], hosts=hosts))
    return (site.root / ".sovkit" / "state.json").stat().st_size


def bench_plan(args: argparse.Namespace, work: Path) -> None:
    n = args.plan_hosts
    site = big_site(work / "big", n)
    size = site.path.stat().st_size
    print(f"plan: synthetic site, {n:,} hosts, {len(site.data['racks'])} racks, {len(site.data['deployments'])} "
          f"deployments, inventory {size / 1e6:.1f} MB; load {os.getloadavg()[0]:.1f}")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    fresh = timed(sovkit_cmd("plan", site.path), env, work / "plan-fresh.txt")
    lines = (work / "plan-fresh.txt").read_text().splitlines()
    assert fresh.rc == 0 and lines[-1].startswith(f"Plan: {4 * n} to create"), lines[-3:]
    print(f"  no state ({4 * n:,} changes, summary output): {fresh.wall:.1f}s wall, {fresh.cpu:.1f}s cpu, "
          f"peak RSS {fresh.max_rss_kb / 1024:.0f} MiB")
    detail = timed(sovkit_cmd("plan", site.path, "--detail"), env, work / "plan-detail.txt")
    lines = (work / "plan-detail.txt").read_text().splitlines()
    assert detail.rc == 0 and lines[-1].startswith(f"Plan: {4 * n} to create"), lines[-3:]
    print(f"  no state, --detail (every change listed):  {detail.wall:.1f}s wall, {detail.cpu:.1f}s cpu, "
          f"peak RSS {detail.max_rss_kb / 1024:.0f} MiB")
    as_json = timed(sovkit_cmd("plan", site.path, "--json"), env, work / "plan-fresh.json")
    assert as_json.rc == 0 and json.loads((work / "plan-fresh.json").read_text())["plan"]["summary"]["create"] == 4 * n
    print(f"  no state, --json:                          {as_json.wall:.1f}s wall, {as_json.cpu:.1f}s cpu, "
          f"peak RSS {as_json.max_rss_kb / 1024:.0f} MiB")
    state_size = converge_state(site)
    same = timed(sovkit_cmd("plan", site.path, "--detailed-exitcode"), env, work / "plan-same.txt")
    assert same.rc == 0, (work / "plan-same.txt").read_text()[-500:]
    print(f"  converged state ({state_size / 1e6:.1f} MB, no changes): {same.wall:.1f}s wall, {same.cpu:.1f}s cpu, "
          f"peak RSS {same.max_rss_kb / 1024:.0f} MiB")
    validate = timed(sovkit_cmd("validate", site.path), env, work / "validate.txt")
    print(f"  for scale, `sovkit validate` alone: {validate.wall:.1f}s wall, {validate.cpu:.1f}s cpu; "
          f"plan / validate (cpu): {fresh.cpu / validate.cpu:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--plan-hosts", type=int, default=10_000)
    p.add_argument("--local", action="store_true", help="local-connection hosts instead of SSH test hosts")
    p.add_argument("--skip-apply", action="store_true")
    p.add_argument("--skip-plan", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sovkit-apply-bench-"))
    try:
        if not args.skip_apply:
            bench_apply(args, work)
        if not args.skip_plan:
            bench_plan(args, work)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
