"""The restructured pack decides exactly as the pack before it (tests/fixtures/policy-baseline/) on mutated sites.

The pack was rewritten for 10,000 hosts (arrays instead of sets, indexed waivers, hosts and placements grouped by
shape in input v2); this evaluates the frozen baseline pack on the v1 per-host input
(sovkit.policy.input.build_flat_input, the form the baseline reads) and the current pack on the same document
grouped by shape (shape_input), each with the embedded engine, under seeded random mutations (wrong
jurisdictions, unsigned or unpinned models, port and device clashes, power overruns, firmware and runtime
downgrades, memory overruns, waivers active, expired, stale), and asserts identical deny, warn and waived
findings. Besides the demo site: multi-rack sites of identical racks and of mixed builds with odd hosts, mutated
whole racks and deployments at a time (many hosts per shape) with waivers on single hosts inside a shape.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovkit.inventory.loader import load_inventory
from sovkit.policy.embedded import query_value
from sovkit.policy.engine import DECISION_QUERY, decision_from_raw
from sovkit.policy.input import build_flat_input, build_input, shape_input
from sovkit.policy.pack import load_pack

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tests/fixtures/policy-baseline"
SEEDS = range(12)


def _baseline_modules() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(BASELINE.glob("*.rego"))}


def _mutate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    hosts, racks = d["hosts"], d["racks"]
    for _ in range(rng.randint(3, 8)):
        kind = rng.choice(["jurisdiction", "unsigned", "unpinned", "port", "device", "power", "fw_down", "rt_down",
                           "memory", "tp", "residency", "license", "waiver", "sigfail", "dup_slot"])
        if kind == "jurisdiction" and hosts:
            rng.choice(hosts)["jurisdiction"] = rng.choice(["DE", "US-CA", "KR-26", "JP"])
        elif kind == "unsigned" and d["models"]:
            rng.choice(d["models"])["signature"]["path"] = None
        elif kind == "unpinned":
            section = rng.choice(["models", "firmware", "runtimes"])
            if d[section]:
                rng.choice(d[section])["version"] = rng.choice(["latest", ">=1.2", "1.x", "stable"])
        elif kind in ("port", "device") and hosts:
            h = rng.choice(hosts)["name"]
            d["serving"]["conflicts"].append({"kind": kind, "host": h, "resource": f"hosts/{h}",
                                              "message": f"{kind} clash on {h}"})
        elif kind == "power" and racks:
            r = rng.choice(racks)
            r["peak_w"] = r["power_budget_w"] * rng.choice([0.95, 1.2, 2.0])
        elif kind == "fw_down" and hosts:
            h = rng.choice(hosts)
            h["recorded"] = {"firmware": {s["kind"]: "99.0.0" for s in h["accelerators"]}, "runtimes": {},
                             "models": {}}
        elif kind == "rt_down" and d["placements"]:
            for p in d["placements"]:
                if rng.random() < 0.5:
                    p["recorded_runtime"] = "99.0.0"
        elif kind == "memory" and d["serving"]["placements"]:
            p = rng.choice(d["serving"]["placements"])
            if p["device_memory_gb"] is not None:
                p["device_memory_gb"] = rng.choice([0.001, 0.01, None])
                # the derived size, as sovkit/policy/input.py computes it (the baseline pack reads the gb)
                p["device_memory_bytes"] = None if p["device_memory_gb"] is None else p["device_memory_gb"] * 1e9
        elif kind == "tp" and d["placements"]:
            p = rng.choice(d["placements"])
            p["tensor_parallel"] = 64
            if p["replica_memory_gb"] is not None:  # the derived size, as sovkit/policy/input.py computes it
                p["replica_memory_gb"] = (p["accelerator_memory_gb"] / p["accelerator_count"]) * 64
        elif kind == "residency" and d["data_stores"]:
            rng.choice(d["data_stores"])["jurisdiction"] = "US"
        elif kind == "license" and d["models"]:
            rng.choice(d["models"])["license"] = "proprietary"
        elif kind == "sigfail" and d["firmware"]:
            fw = rng.choice(d["firmware"])
            fw["signature"].update({"path": "x.sig", "checked": True, "verified": False, "reason": "bad"})
        elif kind == "dup_slot" and hosts:
            h = rng.choice(hosts)
            h["accelerators"] = h["accelerators"] * 2
            h["recorded"] = {"firmware": {s["kind"]: "99.0.0" for s in h["accelerators"]}, "runtimes": {},
                             "models": {}}
        elif kind == "waiver":
            rule, res = rng.choice([("RES-009", f"hosts/{hosts[0]['name']}"), ("CAP-002", f"racks/{racks[0]['name']}"),
                                    ("PRV-002", "models/nowhere"), ("SV-005", f"hosts/{hosts[-1]['name']}")])
            d["waivers"].append({"rule": rule, "resource": res, "reason": "review 7",
                                 "expires": rng.choice(["2020-01-01", "2099-01-01", d["evaluated_on"]])})
    return d


@pytest.fixture(scope="module")
def base_input() -> dict[str, Any]:
    return build_flat_input(load_inventory(ROOT / "inventories/demo/site.yaml"))


def _findings(modules: dict[str, str], data: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, Any]]:
    raw = query_value(modules, data, doc, DECISION_QUERY)
    return [f.as_dict() for f in decision_from_raw(raw, "embedded", "-").findings]


@pytest.mark.parametrize("seed", SEEDS)
def test_restructured_pack_decides_as_the_baseline(base_input: dict[str, Any], seed: int) -> None:
    pack = load_pack()
    baseline_data = json.loads((BASELINE / "data.json").read_text())
    doc = _mutate(base_input, random.Random(seed))
    old = _findings(_baseline_modules(), baseline_data, doc)
    new = _findings(pack.modules, pack.data, shape_input(doc))
    assert new == old
    assert old, "each mutated site yields findings, so the comparison compares something"


def test_the_mutations_reach_the_rewritten_rules(base_input: dict[str, Any]) -> None:
    """Across the seeds the rules rewritten as arrays (and the waiver index) all fire in both packs."""
    pack = load_pack()
    ids: set[str] = set()
    for seed in SEEDS:
        ids |= {f["id"] for f in _findings(pack.modules, pack.data,
                                            shape_input(_mutate(base_input, random.Random(seed))))}
    assert {"RES-009", "FW-005", "RT-005", "CAP-001", "CAP-002", "SV-004", "SV-005", "PRV-007"} <= ids


# --- multi-rack sites: many hosts per shape -------------------------------------------------------------------

RACK = 8


def _rack_site(directory: Path, mixed: bool) -> Path:
    """The demo site (its artifacts, so signatures verify) with 6 racks of 8 hosts and 6 deployments.

    ``mixed``: racks of two builds (2 or 4 NPUs), one rack labelled in another country, and odd hosts (one NPU,
    another firmware, a region label); otherwise every host alike.
    """
    shutil.copytree(ROOT / "inventories/demo", directory, ignore=shutil.ignore_patterns(".sovkit", "hosts"))
    site = yaml.safe_load((directory / "site.yaml").read_text())
    site["racks"] = [{"name": f"rack-{r}", "power_budget_w": 9000 if r != 5 else 3500} for r in range(6)]
    hosts = []
    for i in range(6 * RACK):
        rack = i // RACK
        count = 4 if mixed and rack in (3, 4) else 2
        host: dict[str, Any] = {
            "name": f"node-{i:03d}", "rack": f"rack-{rack}", "address": f"10.0.{rack}.{i % RACK + 1}",
            "arch": "aarch64", "cpu": "arm-neoverse-v2", "connection": "local", "root": f"hosts/node-{i:03d}",
            "accelerators": [{"kind": "rebellions-atom-max", "count": count, "firmware": "atom-max-fw-1.2.0"}]}
        if mixed and rack == 2:
            host["labels"] = {"jurisdiction": "JP"}
        if mixed and i == 9:
            host["accelerators"][0]["count"] = 1
        if mixed and i == 17:
            host["accelerators"][0]["firmware"] = "atom-max-fw-1.3.0"
        if mixed and i == 30:
            host["labels"] = {"jurisdiction": "KR-26"}
        hosts.append(host)
    site["hosts"] = hosts
    names = [h["name"] for h in hosts]
    template = next(d for d in site["deployments"] if d["name"] == "chat-decode")
    site["deployments"] = [
        {**{k: v for k, v in template.items() if k not in ("devices", "targets")}, "name": f"chat-{j}",
         "role": "both", "hosts": names[j * RACK:(j + 1) * RACK], "port": 8100 + j,
         "tensor_parallel": 2, "max_batch": [1, 64, 5782, 1, 8, 1][j]}
        for j in range(6)]
    site["serving_groups"] = []
    (directory / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return directory / "site.yaml"


@pytest.fixture(scope="module", params=["uniform", "mixed"])
def rack_input(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = _rack_site(tmp_path_factory.mktemp(request.param) / "site", request.param == "mixed")
    return build_flat_input(load_inventory(path))


RACK_SEEDS = range(6)
_evaluated: dict[tuple[str, int], list[dict[str, Any]]] = {}


def _rack_findings(doc: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The current pack's findings on the shaped, mutated rack site (kept: two tests read them)."""
    key = (doc["inventory_digest"], seed)
    if key not in _evaluated:
        pack = load_pack()
        _evaluated[key] = _findings(pack.modules, pack.data, shape_input(_mutate_racks(doc, random.Random(seed))))
    return _evaluated[key]


def _mutate_racks(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Whole racks and deployments at a time (findings on many hosts of one shape), then a waiver on single
    hosts inside such a shape, and the single-host mutations of the demo."""
    d = _mutate(doc, rng)
    hosts = d["hosts"]
    racks = sorted({h["rack"] for h in hosts})
    inside: list[tuple[str, str]] = []  # (rule, resource) of one host or rack inside a shape that fails whole
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(["fw_down", "rt_down", "jurisdiction", "memory", "tp", "unknown_memory", "power"])
        rack = rng.choice(racks)
        members = [h for h in hosts if h["rack"] == rack]
        names = {h["name"] for h in members}
        if kind == "power":  # every rack of the site over (or near) its budget
            ratio = rng.choice([0.95, 1.5])
            for r in d["racks"]:
                r["peak_w"] = r["power_budget_w"] * ratio
            inside.append(("CAP-001" if ratio > 1 else "CAP-002", f"racks/{rack}"))
        elif kind == "fw_down":
            for h in members:
                h["recorded"] = {"firmware": {s["kind"]: "1.5.0" for s in h["accelerators"]}, "runtimes": {},
                                 "models": {}}
            inside.append(("FW-005", f"hosts/{rng.choice(members)['name']}"))
        elif kind == "jurisdiction":
            for h in members:
                h["jurisdiction"] = "DE"
            inside.append(("RES-009", f"hosts/{rng.choice(members)['name']}"))
        elif kind == "rt_down":
            for p in d["placements"]:
                if p["host"] in names:
                    p["recorded_runtime"] = "99.0.0"
            inside.append(("RT-005", f"hosts/{rng.choice(members)['name']}"))
        elif kind == "memory":
            for p in d["serving"]["placements"]:
                if p["host"] in names:
                    p["device_memory_gb"] = 1e-6
                    p["device_memory_bytes"] = 1e-6 * 1e9
        elif kind == "tp":
            for p in d["placements"]:
                if p["host"] in names:
                    p["tensor_parallel"] = 8
                    if p["replica_memory_gb"] is not None:
                        p["replica_memory_gb"] = (p["accelerator_memory_gb"] / p["accelerator_count"]) * 8
        elif kind == "unknown_memory":
            for p in d["placements"]:
                if p["host"] in names:
                    p["accelerator_memory_gb"] = p["replica_memory_gb"] = None
    for rule, resource in inside:  # a single host (rack) inside a shape that fails as a whole
        if rng.random() < 0.6:
            d["waivers"].append({"rule": rule, "resource": resource, "reason": "one host under review",
                                 "expires": "2099-01-01"})
    for _ in range(rng.randint(1, 3)):  # and anywhere: waivers that match, expired or stale
        h = rng.choice(hosts)["name"]
        rule = rng.choice(["FW-005", "RES-009", "RT-005", "CAP-005", "SV-006", "CAP-001", "CAP-002"])
        resource = f"hosts/{h}" if rule in ("FW-005", "RES-009", "RT-005") else \
            f"racks/{rng.choice(racks)}" if rule in ("CAP-001", "CAP-002") else \
            f"deployments/{rng.choice(d['deployments'])['name']}"
        d["waivers"].append({"rule": rule, "resource": resource, "reason": "one host under review",
                             "expires": rng.choice(["2099-01-01", "2020-01-01"])})
    return d


@pytest.mark.parametrize("seed", RACK_SEEDS)
def test_racks_of_one_shape_decide_as_the_baseline(rack_input: dict[str, Any], seed: int) -> None:
    """Grouped by shape, the pack names every host of a shape and waives single hosts inside it as before."""
    baseline_data = json.loads((BASELINE / "data.json").read_text())
    doc = _mutate_racks(rack_input, random.Random(seed))
    assert len(shape_input(doc)["host_shapes"]) <= len(doc["hosts"]) // 4, "the site is racks of few shapes"
    old = _findings(_baseline_modules(), baseline_data, doc)
    assert _rack_findings(rack_input, seed) == old
    assert old


def test_rack_mutations_reach_whole_shapes_and_single_host_waivers(rack_input: dict[str, Any]) -> None:
    """Across the seeds, per-host rules fire on whole shapes, and some host is waived while its shape's other
    hosts are still found (the waiver covers that host alone)."""
    split = set()
    ids: set[str] = set()
    for seed in RACK_SEEDS:
        found = _rack_findings(rack_input, seed)
        ids |= {f["id"] for f in found}
        for rule, shape in (("FW-005", RACK), ("RES-009", RACK), ("RT-005", RACK), ("CAP-001", 5), ("CAP-002", 5)):
            if {f["id"] for f in found if "waived" in f} & {rule} and \
                    len([f for f in found if f["id"] == rule and "waived" not in f]) >= shape - 1:
                split.add(rule)
    assert {"FW-005", "RES-009", "RT-005", "CAP-001", "CAP-002", "CAP-004", "CAP-005", "SV-006"} <= ids
    assert split, "a waiver on one host inside a shape leaves the shape's other hosts found"


def test_the_shaped_input_holds_every_host_and_placement(rack_input: dict[str, Any]) -> None:
    """Expanding the v2 shapes gives back the v1 per-host entries, no more, no less."""
    shaped = shape_input(rack_input)
    assert len(shaped["rack_shapes"]) < len(rack_input["racks"])
    hosts = [{**{k: v for k, v in s.items() if k != "racks"}, "rack": r["name"], "name": h}
             for s in shaped["host_shapes"] for r in s["racks"] for h in r["hosts"]]
    racks = [{**{k: v for k, v in s.items() if k != "racks"}, "name": r}
             for s in shaped["rack_shapes"] for r in s["racks"]]
    placed = [{**{k: v for k, v in s.items() if k != "hosts"}, "host": h}
              for s in shaped["placement_shapes"] for h in s["hosts"]]
    serving = [{**{k: v for k, v in s.items() if k != "hosts"}, "host": h}
               for s in shaped["serving"]["placement_shapes"] for h in s["hosts"]]

    def key(x: dict[str, Any]) -> str:
        return json.dumps(x, sort_keys=True)

    assert sorted(map(key, hosts)) == sorted(map(key, rack_input["hosts"]))
    assert sorted(map(key, racks)) == sorted(map(key, rack_input["racks"]))
    assert sorted(map(key, placed)) == sorted(map(key, rack_input["placements"]))
    assert sorted(map(key, serving)) == sorted(map(key, rack_input["serving"]["placements"]))
    assert shaped["apiVersion"] == "sovkit.dev/policy-input/v2"
    assert {k: v for k, v in shaped.items() if k not in ("rack_shapes", "host_shapes", "placement_shapes",
                                                           "serving", "apiVersion")} == \
        {k: v for k, v in rack_input.items() if k not in ("racks", "hosts", "placements", "serving", "apiVersion")}


def test_build_input_is_the_flat_input_grouped() -> None:
    inv = load_inventory(ROOT / "inventories/demo/site.yaml")
    assert build_input(inv) == shape_input(build_flat_input(inv))


@pytest.mark.parametrize("doc", [
    {"s": "ünï 한국어", "strings": ["KR-11", "ünï"], "i": -(2**63), "j": 2**63 - 1, "f": 0.1, "g": 1e300,
     "b": [True, False, None], "o": {}, "a": [], "nested": [{"k": [1, {"x": "y"}]}]},
    {"plain": "KR-11 ünï", "quoted": 'say "hi"', "slash": "a\\b /", "control": "a\tb\nc", "nul": "a\x00b",
     "strings": ['say "hi"', "a\\b", "ünï\u2028"]},
    {"big": 2**70, "list": ["x", "y"]},  # the builder hands this document to the JSON path
])
def test_the_input_reaches_rego_unchanged(doc: dict[str, Any]) -> None:
    """The engine's direct input builder (sovkit/policy/embedded.py) gives Rego the document it was given."""
    assert query_value({}, {}, doc, "input") == json.loads(json.dumps(doc))
    # strings as builtins see them: sprintf of a list prints them quoted and escaped, as rego-cpp's own parse does
    shown = 'sprintf("%v %v", [input, object.get(input, "strings", [])])'
    assert query_value({}, {}, doc, shown) == query_value({}, {}, doc, shown, direct_input=False)
