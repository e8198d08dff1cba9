"""Policy pack over a 10,000-host synthetic site, in one batched evaluation.

    python bench/policy_bench.py [--hosts 10000] [--repeat 3]

Each measurement runs in its own child process (so peak RSS is its own):
  sovkit: build the policy input from the loaded inventory + EmbeddedEngine.evaluate (validation included)
  bare:   regopy alone — same modules, same data, same input JSON, one query of data.sovkit.main.decision
Prints seconds (best of --repeat), peak RSS, and the ratio sovkit/bare (goal <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_site(directory: Path, hosts: int) -> Path:
    """A mirror-store site (no artifact files needed) with ``hosts`` hosts, 8 per rack, 10 deployments."""
    demo = yaml.safe_load((ROOT / "inventories/demo/site.yaml").read_text())
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    for key in ("publisher.pub", "vendor-rebellions.pub"):
        (directory / "keys" / key).write_bytes((ROOT / "inventories/demo/keys" / key).read_bytes())
    racks = (hosts + 7) // 8
    demo["artifact_store"] = {"kind": "oci", "url": "https://mirror.bench.internal", "repository": "bench",
                              "jurisdiction": "KR-11"}
    demo["racks"] = [{"name": f"r{i:05d}", "power_budget_w": 8000} for i in range(racks)]
    demo["hosts"] = [{"name": f"h{i:05d}", "rack": f"r{i // 8:05d}", "address": f"10.{i // 65536}.{i // 256 % 256}."
                      f"{i % 256}", "arch": "aarch64", "cpu": "arm-neoverse-v2",
                      "accelerators": [{"kind": "rebellions-atom-max", "count": 2, "firmware": "atom-max-fw-1.3.0"}]}
                     for i in range(hosts)]
    names = [h["name"] for h in demo["hosts"]]
    chunk = max(1, hosts // 10)
    demo["deployments"] = [{"name": f"chat-{j}", "model": "demo-ko-chat", "runtime": "simnpu-serve",
                            "hosts": names[j * chunk:(j + 1) * chunk], "tensor_parallel": 2, "port": 8100 + j}
                           for j in range(10) if names[j * chunk:(j + 1) * chunk]]
    demo["serving_groups"] = []  # the demo's group names its own deployments, which this site replaces
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(demo, sort_keys=False))
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, site: Path, input_file: Path) -> None:
    from sovkit.inventory.loader import load_inventory
    from sovkit.policy.pack import load_pack

    pack = load_pack()
    if mode == "sovkit":
        from sovkit.policy.embedded import EmbeddedEngine
        from sovkit.policy.input import build_input

        inv = load_inventory(site)
        base = _peak_mb()
        started = time.perf_counter()
        decision = EmbeddedEngine().evaluate(pack, build_input(inv))
        elapsed = time.perf_counter() - started
        result = {"allowed": decision.allowed, "findings": len(decision.findings)}
    else:
        import regopy

        doc = input_file.read_text()
        base = _peak_mb()
        started = time.perf_counter()
        rego = regopy.Interpreter()
        for name, source in sorted(pack.modules.items()):
            rego.add_module(name, source)
        rego.add_data_json(json.dumps(pack.data))
        rego.set_input_term(doc)
        out = rego.query("x := data.sovkit.main.decision")
        value = out[0].bindings["x"]
        elapsed = time.perf_counter() - started
        result = {"allowed": value["allowed"], "findings": len(value["deny"]) + len(value["warn"])}
    print(json.dumps({"seconds": elapsed, "peak_mb": _peak_mb(), "base_mb": base, **result}))


def measure(mode: str, site: Path, input_file: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(site), str(input_file)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    from sovkit.inventory.loader import load_inventory
    from sovkit.policy.input import build_input

    with tempfile.TemporaryDirectory() as tmp:
        site = make_site(Path(tmp), args.hosts)
        started = time.perf_counter()
        inv = load_inventory(site)
        load_s = time.perf_counter() - started
        input_file = Path(tmp) / "input.json"
        input_file.write_text(json.dumps(build_input(inv)))
        input_mb = input_file.stat().st_size / 1e6
        runs: dict[str, list[dict[str, float]]] = {"sovkit": [], "bare": []}
        for _ in range(args.repeat):
            for mode in ("bare", "sovkit"):  # interleaved so load changes hit both alike
                runs[mode].append(measure(mode, site, input_file))
    best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
    assert best["sovkit"]["allowed"] == best["bare"]["allowed"]
    print(f"hosts: {args.hosts}  racks: {(args.hosts + 7) // 8}  input JSON: {input_mb:.1f} MB")
    print(f"inventory load (validate + cross-refs, not timed below): {load_s:.2f} s")
    for mode in ("bare", "sovkit"):
        b = best[mode]
        print(f"{mode:>6}: {b['seconds']:.2f} s (best of {args.repeat}), peak RSS {b['peak_mb']:.0f} MB "
              f"(+{b['peak_mb'] - b['base_mb']:.0f} MB during evaluation), allowed={b['allowed']}, "
              f"findings={b['findings']:.0f}")
    print(f"ratio sovkit/bare: {best['sovkit']['seconds'] / best['bare']['seconds']:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
