"""`sovkit serving plan` with the real predictor on a small site: output, --json, --write, clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from sovkit.catalog import load_catalog
from sovkit.inventory import load_inventory
from sovkit.inventory.serving import placements
from tests.conftest import CliResult
from tests.sitefactory import Site, make_site

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--model", "demo-ko-chat", "--ttft-ms", "500", "--tpot-ms", "50", "--rate", "2", "--isl", "1024",
        "--osl", "256"]


def planned_site(tmp: Path) -> Site:
    """The demo site with four ATOM-Max per host (three free beside the demo's TP 1 pools) and a Llama-3.1-8B config."""
    s = make_site(tmp)
    for h in s.data["hosts"]:
        h["accelerators"][0]["count"] = 4
    shutil.copy(ROOT / "sovkit/catalog/models/llama-3.1-8b.json", s.root / "llama-config.json")
    s.model("demo-ko-chat")["config"] = "llama-config.json"
    s.save()
    return s


def test_plan_json_and_write(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    s = planned_site(tmp_path)
    r = cli("serving", "plan", s.path, *ARGS, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    plan = out["plan"]
    for key in ("mode", "ttft_ms", "tpot_ms", "pools", "goodput_rps", "output_tokens_per_j", "racks",
                "alternatives", "power_w"):
        assert key in plan
    assert plan["ttft_ms"] <= 500 and plan["tpot_ms"] <= 50
    assert all(rack["peak_w"] <= rack["budget_w"] for rack in plan["racks"])
    assert 1 <= len(plan["alternatives"]) <= 5 and all(a["why_lost"] for a in plan["alternatives"])
    used = {(h, d) for pool in plan["pools"] for h in pool["hosts"] for d in pool["devices"]}
    demo_own = {(hp.host, d) for hp in placements(load_inventory(s.path).site, load_catalog()).hosts
                for d in hp.devices}
    assert demo_own == {("npu-node-1", 0), ("npu-node-2", 0)} and used.isdisjoint(demo_own)

    before = s.path.read_text()
    w = cli("serving", "plan", s.path, *ARGS, "--write", s.path)
    assert w.code == 0, w.err
    assert "written into" in w.out and "+- name: demo-ko-chat" in w.out
    after = s.path.read_text()
    assert after.startswith(before.split("deployments:")[0])  # everything before the lists is untouched
    inv = load_inventory(s.path)
    assert len(inv.site.deployments) > 2
    assert placements(inv.site, load_catalog()).conflicts == ()
    assert cli("validate", s.path).code == 0


def test_bad_model_name_is_one_clear_error(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    s = planned_site(tmp_path)
    args = [a if a != "demo-ko-chat" else "demo-ko-chta" for a in ARGS]
    r = cli("serving", "plan", s.path, *args)
    assert r.code == 1
    assert "model 'demo-ko-chta' is not in the inventory" in r.err and "did you mean 'demo-ko-chat'?" in r.err
    assert "Traceback" not in r.err + r.out


def test_hostile_name_stem_is_refused_and_the_file_untouched(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    s = planned_site(tmp_path)
    before = s.path.read_bytes()
    r = cli("serving", "plan", s.path, *ARGS, "--name", 'x{{ lookup("pipe","id") }}', "--write", s.path)
    assert r.code == 1
    assert "is not a usable name stem" in r.err and "internal error" not in r.err, r.err
    assert "Traceback" not in r.err + r.out
    assert s.path.read_bytes() == before


def test_unreachable_targets_name_the_constraint(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    s = planned_site(tmp_path)
    r = cli("serving", "plan", s.path, *[a if a != "50" else "0.5" for a in ARGS])
    assert r.code == 1 and "binding constraint latency" in r.err and "TPOT" in r.err
    assert "Traceback" not in r.err + r.out
