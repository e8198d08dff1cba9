"""The restructured pack decides exactly as the pack before it (tests/fixtures/policy-baseline/) on mutated sites.

The pack was rewritten for 10,000 hosts (arrays instead of sets, indexed waivers); this evaluates both packs with
the embedded engine on the demo site's policy input under seeded random mutations (wrong jurisdictions, unsigned
or unpinned models, port and device clashes, power overruns, firmware and runtime downgrades, memory overruns,
waivers active, expired, stale) and asserts identical deny, warn and waived findings.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from sovkit.inventory.loader import load_inventory
from sovkit.policy.embedded import query_value
from sovkit.policy.engine import DECISION_QUERY, decision_from_raw
from sovkit.policy.input import build_input
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
    return build_input(load_inventory(ROOT / "inventories/demo/site.yaml"))


def _findings(modules: dict[str, str], data: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, Any]]:
    raw = query_value(modules, data, doc, DECISION_QUERY)
    return [f.as_dict() for f in decision_from_raw(raw, "embedded", "-").findings]


@pytest.mark.parametrize("seed", SEEDS)
def test_restructured_pack_decides_as_the_baseline(base_input: dict[str, Any], seed: int) -> None:
    pack = load_pack()
    baseline_data = json.loads((BASELINE / "data.json").read_text())
    doc = _mutate(base_input, random.Random(seed))
    old = _findings(_baseline_modules(), baseline_data, doc)
    new = _findings(pack.modules, pack.data, doc)
    assert new == old
    assert old, "each mutated site yields findings, so the comparison compares something"


def test_the_mutations_reach_the_rewritten_rules(base_input: dict[str, Any]) -> None:
    """Across the seeds the rules rewritten as arrays (and the waiver index) all fire in both packs."""
    pack = load_pack()
    ids: set[str] = set()
    for seed in SEEDS:
        ids |= {f["id"] for f in _findings(pack.modules, pack.data, _mutate(base_input, random.Random(seed)))}
    assert {"RES-009", "FW-005", "RT-005", "CAP-001", "CAP-002", "SV-004", "SV-005", "PRV-007"} <= ids


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
