"""Policy pack over synthetic 1,000- and 10,000-host sites: sovkit's embedded engine against OPA's Go engine.

    python bench/policy_bench.py [--sizes 1000 10000] [--distinct-sizes 10000] [--opa-python /work/opa-venv/bin/python]

One batched evaluation of data.sovkit.main.decision per measurement, each in its own child process, CPU time
(user + sys of the child, from the moment the inventory is loaded / the input is read):
  sovkit: EmbeddedEngine.evaluate on the built policy input (input transfer + evaluation + decision validation)
  opa:    OPA's Go engine (PyPI opa-golib-python-bindings, module opa_bindings, in its own venv — never a sovkit
          dependency) with the same modules, data and input JSON, the same query
Prints CPU seconds, the ratio sovkit/opa (goal <= 3x at 10k) and each engine's growth 10k/1k (goal <= 12x).

The input groups hosts, racks and placements by shape (docs/policy-input.md), so the figures depend on how many
shapes a site has. Two sites: "uniform" (racks of 8 identical hosts, the rack power figures alike) and "distinct",
the worst case: every rack its own power budget and a recorded state in which every host has its own installed
firmware and runtime versions (a site mid-rollout), so every rack, host and placement is a shape of its own (the
serving placements, which carry no recorded versions, still group by deployment).
``--v1-pack REF`` also times the pack of git revision REF (before input v2) on the v1 per-host document
(sovkit.policy.input.build_flat_input) of the same sites, sovkit's engine only: what the shapes changed.
OPA's venv: python3 -m venv /work/opa-venv && /work/opa-venv/bin/pip install --no-deps --ignore-requires-python
opa-golib-python-bindings
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_site(directory: Path, hosts: int, distinct: bool = False) -> Path:
    """A mirror-store site (no artifact files needed) with ``hosts`` hosts, 8 per rack, 10 deployments
    (``distinct``: each rack its own power budget)."""
    demo = yaml.safe_load((ROOT / "inventories/demo/site.yaml").read_text())
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    for key in ("publisher.pub", "vendor-rebellions.pub"):
        (directory / "keys" / key).write_bytes((ROOT / "inventories/demo/keys" / key).read_bytes())
    racks = (hosts + 7) // 8
    demo["artifact_store"] = {"kind": "oci", "url": "https://mirror.bench.internal", "repository": "bench",
                              "jurisdiction": "KR-11"}
    demo["racks"] = [{"name": f"r{i:05d}", "power_budget_w": 8000 + (i if distinct else 0)} for i in range(racks)]
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


def distinct_state(site: Path) -> Any:
    """Every host with its own installed firmware and runtime versions, all older than the pinned ones (no
    downgrade findings): each host and placement a shape of its own."""
    from sovkit.inventory.loader import load_inventory
    from sovkit.state.models import HostRecord, State

    inv = load_inventory(site)
    hosts = {}
    for i, h in enumerate(inv.site.hosts):
        hosts[h.name] = HostRecord.model_validate({
            "firmware": {s.kind: {"kind": s.kind, "version": f"1.0.{i}", "image_sha256": ""} for s in h.accelerators},
            "runtimes": {"simnpu-serve": {"version": f"0.{i}.0", "package": "simnpu-serve"}}})
    return State(site=inv.site.metadata.name, hosts=hosts)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


_OPA_CHILD = """
import json, resource, sys
from pathlib import Path
from opa_bindings import OpaEngine
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
d = Path(sys.argv[1])
modules = json.loads((d / "modules.json").read_text())
data = json.loads((d / "data.json").read_text())
start = cpu()
doc = json.loads((d / "input.json").read_text())
eng = OpaEngine()
for name, source in sorted(modules.items()):
    eng.add_policy(name, source)
eng.add_data(data)
value = eng.eval_query("x := data.sovkit.main.decision", input=doc)[0]["x"]
seconds = cpu() - start
ids = sorted(f["id"] + " " + f["resource"] for f in value["deny"] + value["warn"])
print(json.dumps({"seconds": seconds, "allowed": value["allowed"], "findings": len(ids), "ids": ids}))
"""


def v1_pack(ref: str) -> Any:
    """The pack's modules and data at git revision ``ref`` (tests left out)."""
    from sovkit.policy.pack import PolicyPack

    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True,
                              check=True).stdout

    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", ref, "policies/"], capture_output=True,
                           text=True, check=True).stdout.split()
    modules = {Path(n).name: show(n) for n in names if n.endswith(".rego") and not n.endswith("_test.rego")}
    return PolicyPack(modules=modules, data=json.loads(show("policies/data.json")))


def child(input_json: Path, ref: str | None) -> None:
    from sovkit.policy.embedded import EmbeddedEngine
    from sovkit.policy.pack import load_pack

    pack = v1_pack(ref) if ref else load_pack()
    doc = json.loads(input_json.read_text())  # as sovkit.policy.input.build_input returned it to the parent
    started = _cpu()
    decision = EmbeddedEngine().evaluate(pack, doc)
    seconds = _cpu() - started
    ids = sorted(f"{f.id} {f.resource}" for f in decision.findings if f.waived is None)
    print(json.dumps({"seconds": seconds, "peak_mb": _peak_mb(), "allowed": decision.allowed,
                      "findings": len(ids), "ids": ids}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--distinct-sizes", type=int, nargs="*", default=[1000, 10_000])
    parser.add_argument("--opa-python", default="/work/opa-venv/bin/python")
    parser.add_argument("--child")
    parser.add_argument("--child-pack")
    parser.add_argument("--v1-pack", help="git revision whose pack to time on the v1 per-host input too")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.child_pack)
        return
    from sovkit.inventory.loader import load_inventory
    from sovkit.policy.input import build_flat_input, build_input
    from sovkit.policy.pack import load_pack

    pack = load_pack()
    for kind, sizes in (("uniform", args.sizes), ("distinct", args.distinct_sizes)):
        results: dict[int, dict[str, dict[str, object]]] = {}
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                d = Path(tmp)
                site = make_site(d / "site", n, kind == "distinct")
                inv, state = load_inventory(site), distinct_state(site) if kind == "distinct" else None
                doc = build_input(inv, state)
                shapes = f"{len(doc['rack_shapes'])} rack / {len(doc['host_shapes'])} host / " \
                    f"{len(doc['placement_shapes'])} placement shapes"
                (d / "input.json").write_text(json.dumps(doc))
                (d / "modules.json").write_text(json.dumps(pack.modules))
                (d / "data.json").write_text(json.dumps(pack.data))
                (d / "opa_child.py").write_text(_OPA_CHILD)
                own = subprocess.run([sys.executable, __file__, "--child", str(d / "input.json")],
                                     capture_output=True, text=True, check=True)
                opa = subprocess.run([args.opa_python, str(d / "opa_child.py"), str(d)], capture_output=True,
                                     text=True, check=True)
                results[n] = {"sovkit": json.loads(own.stdout.strip().splitlines()[-1]),
                              "opa": json.loads(opa.stdout.strip().splitlines()[-1])}
                if args.v1_pack:
                    (d / "flat.json").write_text(json.dumps(build_flat_input(inv, state)))
                    old = subprocess.run([sys.executable, __file__, "--child", str(d / "flat.json"), "--child-pack",
                                          args.v1_pack], capture_output=True, text=True, check=True)
                    results[n]["v1"] = json.loads(old.stdout.strip().splitlines()[-1])
            r = results[n]
            same = r["sovkit"]["ids"] == r["opa"]["ids"] and r["sovkit"]["allowed"] == r["opa"]["allowed"]
            ratio = float(r["sovkit"]["seconds"]) / float(r["opa"]["seconds"])  # type: ignore[arg-type]
            print(f"{kind:>8} {n:>6} hosts ({shapes}): sovkit {r['sovkit']['seconds']:.2f} s CPU "
                  f"(peak RSS {r['sovkit']['peak_mb']:.0f} MB), opa {r['opa']['seconds']:.2f} s CPU, ratio sovkit/opa "
                  f"{ratio:.1f}x (goal <= 3x); findings {r['sovkit']['findings']} / {r['opa']['findings']}, "
                  f"same: {same}", flush=True)
            if "v1" in r:
                v1 = r["v1"]
                print(f"{kind:>8} {n:>6} hosts, pack {args.v1_pack} on the v1 per-host input: sovkit "
                      f"{v1['seconds']:.2f} s CPU (peak RSS {v1['peak_mb']:.0f} MB), same findings: "
                      f"{v1['ids'] == r['sovkit']['ids']}",
                      flush=True)
        if len(sizes) >= 2:
            lo, hi = sizes[0], sizes[-1]
            for eng in ("sovkit", "opa"):
                growth = float(results[hi][eng]["seconds"]) / float(results[lo][eng]["seconds"])  # type: ignore[arg-type]
                print(f"{kind:>8} {eng} growth {hi}/{lo} hosts: {growth:.1f}x (goal for sovkit <= 12x)")


if __name__ == "__main__":
    main()
