"""Benchmark `sovkit validate` on synthetic inventories of 1,000 and 10,000 hosts.

Prints seconds per 1,000 hosts, the 10k/1k time ratio (goal: near-linear, <= 11) and peak RSS,
measured in one run. `sovkit validate` runs as its own process (what an operator runs); its CPU
time (user + system, from wait4) is used rather than wall time, which other load on a shared
machine distorts; the start-up and import cost, measured on a 10-host site, is subtracted before
the ratio. The loader is also timed in-process for a start-up-free ratio.

    python bench/validate_bench.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HOSTS_PER_RACK = 16


def synthetic_site(n_hosts: int) -> dict[str, object]:
    """A realistic large site: racks of 16 Arm hosts with NPUs, prefill/decode deployments over all hosts."""
    racks = [{"name": f"r{r:04d}", "power_budget_w": 40000, "location": f"hall {r // 50}"}
             for r in range((n_hosts + HOSTS_PER_RACK - 1) // HOSTS_PER_RACK)]
    hosts = []
    for i in range(n_hosts):
        decode = i % 2 == 1
        hosts.append({
            "name": f"node-{i:05d}", "rack": f"r{i // HOSTS_PER_RACK:04d}",
            "address": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}", "arch": "aarch64",
            "cpu": "arm-neoverse-v3-agi", "ssh": {"user": "sovkit", "port": 22},
            "accelerators": [{"kind": "rebellions-atom-max" if decode else "rebellions-rebel-quad",
                              "count": 8 if decode else 4,
                              "firmware": "atom-max-fw" if decode else "rebel-quad-fw"}],
            "labels": {"row": str(i // 160)},
        })
    digest = "ab" * 32
    return {
        "apiVersion": "sovkit.dev/v1", "kind": "Site",
        "metadata": {"name": f"bench-{n_hosts}", "description": "synthetic benchmark site"},
        "jurisdiction": {"country": "KR", "region": "KR-11"},
        "residency": {"allowed_jurisdictions": ["KR"], "air_gapped": True},
        "trust_roots": {"publishers": [{"name": "pub", "public_key": "keys/pub.pub"}],
                        "vendors": [{"name": "rebellions", "public_key": "keys/vendor.pub"}]},
        "artifact_store": {"kind": "oci", "url": "https://mirror.internal", "repository": "bench",
                           "jurisdiction": "KR-11"},
        "racks": racks,
        "hosts": hosts,
        "firmware": [
            {"name": "atom-max-fw", "vendor": "rebellions", "accelerator": "rebellions-atom-max", "version": "1.9.2",
             "image": {"path": "fw/atom-max.bin", "sha256": digest, "size": 1}},
            {"name": "rebel-quad-fw", "vendor": "rebellions", "accelerator": "rebellions-rebel-quad",
             "version": "2.1.3", "image": {"path": "fw/rebel-quad.bin", "sha256": digest, "size": 1}},
        ],
        "runtimes": [{"name": "vllm-rbln", "family": "vllm-rbln", "version": "0.9.2", "vendor": "rebellions",
                      "package": "vllm-rbln",
                      "artifacts": [{"path": "rt/vllm.tar", "sha256": digest, "size": 1}]}],
        "models": [{"name": "m", "version": "1", "publisher": "pub", "license": "apache-2.0", "origin": "KR",
                    "files": [{"path": "m/model.safetensors", "sha256": digest, "size": 1}]}],
        "deployments": [
            {"name": "prefill", "model": "m", "runtime": "vllm-rbln", "role": "prefill",
             "hosts": [h["name"] for h in hosts[0::2]]},
            {"name": "decode", "model": "m", "runtime": "vllm-rbln", "role": "decode",
             "hosts": [h["name"] for h in hosts[1::2]]},
        ],
        "serving_groups": [{"name": "pd", "prefill": "prefill", "decode": "decode",
                            "kv_transfer": {"connector": "RblnP2pGlooConnector", "link": "ethernet"},
                            "router": {"host": hosts[0]["name"], "port": 8080}}],
    }


def write_site(base: Path, n_hosts: int) -> Path:
    root = base / f"site-{n_hosts}"
    (root / "keys").mkdir(parents=True)
    for key in ("pub.pub", "vendor.pub"):
        (root / "keys" / key).write_text("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
    (root / "site.yaml").write_text(yaml.safe_dump(synthetic_site(n_hosts), sort_keys=False))
    return root


def run_validate(site: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (kB) of one `python -m sovkit validate SITE` process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sovkit", "validate", str(site)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = (proc.stdout.read() if proc.stdout else b"") + (proc.stderr.read() if proc.stderr else b"")
    if proc.returncode != 0:
        raise SystemExit(f"validate failed on {site}:\n{out.decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def best(site: Path, repeat: int) -> tuple[float, float, int]:
    """Fastest wall and CPU time over ``repeat`` runs, and the largest peak RSS."""
    runs = [run_validate(site) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)


def in_process(sites: list[Path], repeat: int) -> list[float]:
    """CPU seconds of load_inventory per site (after a warm-up that loads the catalog and ISO lists)."""
    sys.path.insert(0, str(ROOT))
    from sovkit.inventory import load_inventory

    load_inventory(sites[0])
    out = []
    for site in sites:
        times = []
        for _ in range(repeat):
            start = time.process_time()
            load_inventory(site)
            times.append(time.process_time() - start)
        out.append(min(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sovkit-bench-") as tmp:
        base = Path(tmp)
        sites = {n: write_site(base, n) for n in (10, 1_000, 10_000)}
        sizes = {n: (sites[n] / "site.yaml").stat().st_size for n in sites}
        w10, c10, rss_10 = best(sites[10], args.repeat)
        w1k, c1k, rss_1k = best(sites[1_000], args.repeat)
        w10k, c10k, rss_10k = best(sites[10_000], args.repeat)
        lib10, lib1k, lib10k = in_process([sites[10], sites[1_000], sites[10_000]], args.repeat)

    net1k, net10k = max(c1k - c10, 1e-9), max(c10k - c10, 1e-9)
    print("sovkit validate on synthetic sites (16 hosts/rack, 1 accelerator slot per host, 2 deployments)")
    print(f"  load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (CPU time is used for ratios)")
    print(f"  inventory size: 1k hosts {sizes[1_000] / 1e6:.2f} MB, 10k hosts {sizes[10_000] / 1e6:.2f} MB")
    print(f"  10 hosts (start-up + imports): {w10:.2f} s wall, {c10:.2f} s CPU, peak RSS {rss_10 / 1024:.0f} MB")
    print(f"  1,000 hosts:  {w1k:.2f} s wall, {c1k:.2f} s CPU, peak RSS {rss_1k / 1024:.0f} MB")
    print(f"  10,000 hosts: {w10k:.2f} s wall, {c10k:.2f} s CPU, peak RSS {rss_10k / 1024:.0f} MB")
    print(f"  CPU seconds per 1,000 hosts (start-up subtracted): {net1k:.2f} at 1k, {net10k / 10:.2f} at 10k")
    print(f"  10k/1k ratio, CLI CPU time, start-up subtracted: {net10k / net1k:.2f}  (goal <= 11)")
    print(f"  10k/1k ratio, load_inventory in-process CPU time: {lib10k / lib1k:.2f}  "
          f"({lib1k:.3f} s vs {lib10k:.3f} s; 10 hosts {lib10:.3f} s)")

if __name__ == "__main__":
    main()
