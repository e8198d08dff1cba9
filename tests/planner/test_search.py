"""The plan search on small sites whose optimum is computed by hand, with a hand-set fake Predictor.

FakePredictor (tests/planner/planfake.py): prefill = 0.1 ms/token/TP, decode step = 10/TP + 0.5·batch ms,
phase power per device prefill 300 W, decode 200 W, idle 50 W (added over idle: 250 W, 150 W); CPUs 250 W.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sovkit.catalog import load_catalog
from sovkit.errors import PlannerError
from sovkit.inventory import load_inventory
from sovkit.inventory.models import Site
from sovkit.inventory.serving import placements
from sovkit.planner.placement import build_placement, insert_items, write_placement
from sovkit.planner.search import LengthBin, PlanRequest, ServingPlan, plan_serving
from tests.planner.planfake import SHAPE, Chip, FakePredictor, site, spec
from tests.sitefactory import make_site

ATOM = "rebellions-atom-max"
H100 = "nvidia-h100-sxm"
CAT = load_catalog()


def plan(s: Site, isl: int, osl: int, ttft: float, tpot: float, rate: float, chips: dict[str, Chip] | None = None,
         weights_gb: float = 10.0, prices: dict[str, float] | None = None) -> ServingPlan:
    chips = chips or {ATOM: Chip()}
    req = PlanRequest(model=s.models[0].name, ttft_ms=ttft, tpot_ms=tpot, rate=rate, bins=(LengthBin(isl, osl),),
                      prices=prices or {})
    return plan_serving(s, CAT, s.models[0], SHAPE, req, FakePredictor(chips, weights_gb),
                        {k: spec(k, c) for k, c in chips.items()})


def shape_of(p: ServingPlan) -> list[tuple[str, int, int, list[str], list[int]]]:
    return [(x.role, x.instances, x.tensor_parallel, x.hosts, x.devices) for x in p.pools]


EIGHT = [(f"n{i}", "r1", ATOM, 1) for i in range(8)]


def test_colocated_wins_for_short_prompts() -> None:
    # isl 128 at 1 req/s: one co-located instance; prefill takes u = 12.8 ms/s of it; the decode batch needed
    # is 2 (2·1000·0.9872/11 >= 128 tokens/s), TPOT = 11/0.9872 = 11.14 ms; the prompt shares one 11 ms step:
    # TTFT = 12.8 + 11 = 23.8 ms (at ρ = 0.0238 < 10 % nobody waits at p90). Power +250 W vs +400 W (1P+1D).
    p = plan(site(EIGHT, {"r1": 100_000}), 128, 128, ttft=200, tpot=50, rate=1)
    assert p.mode == "colocated"
    assert shape_of(p) == [("both", 1, 1, ["n0"], [0])]
    assert p.ttft_ms == pytest.approx(23.8)
    assert p.tpot_ms == pytest.approx(11 / 0.9872, abs=0.01)
    assert p.added_power_w == 250
    first = p.alternatives[0]
    assert first.feasible and first.summary.startswith("disaggregated")
    assert first.why_lost == "adds 150 W more at peak (400 W vs 250 W over idle)"


def test_disaggregated_wins_for_long_prompts_and_tight_tpot() -> None:
    # isl 8000: prefill 800 ms. Two prefill servers (M/D/2, λ = 1/s, a = 0.8): C(2, 0.8) = 0.22857,
    # Wq = C·S/(2·0.6)/2 = 76.19 ms, p90 = (Wq/C)·ln(C/0.1) = 275.56 ms; KV 8000·128 KiB over 25 GB/s = 41.94 ms;
    # TTFT = 800 + 275.56 + 41.94 = 1117.5 ms. Decode: largest batch with 10 + 0.5b <= 14 is 8, one instance
    # carries 8/14 ms = 571 tokens/s >= 200. Power 2·250 + 150 = 650 W. Co-located needs 4 instances
    # (u = 0.2 so a step of 10.5 ms becomes 13.1 ms; 3 instances give 14.3 ms): 1000 W.
    p = plan(site(EIGHT, {"r1": 100_000}), 8000, 200, ttft=3000, tpot=14, rate=1)
    assert p.mode == "disaggregated"
    assert shape_of(p) == [("prefill", 2, 1, ["n0", "n1"], [0]), ("decode", 1, 1, ["n2"], [0])]
    assert p.ttft_ms == pytest.approx(1117.5, abs=0.1)
    assert p.kv_transfer_ms == pytest.approx(41.943, abs=0.01)
    assert p.tpot_ms == 14.0 and p.pools[1].max_batch == 8
    assert p.added_power_w == 650
    assert [a.why_lost for a in p.alternatives] == ["adds 350 W more at peak (1000 W vs 650 W over idle)"]
    assert p.racks[0].before_w == 8 * 300 and p.racks[0].peak_w == 8 * 300 + 650


def test_latency_bound_names_latency() -> None:
    with pytest.raises(PlannerError, match=r"binding constraint latency: prefill alone takes 800\.0 ms"):
        plan(site(EIGHT, {"r1": 100_000}), 8000, 200, ttft=300, tpot=14, rate=1)


def test_memory_bound_names_memory() -> None:
    with pytest.raises(PlannerError, match=r"binding constraint memory: weights and the KV cache .* 1 x 64 GB"):
        plan(site(EIGHT, {"r1": 100_000}), 128, 128, ttft=200, tpot=50, rate=1, weights_gb=100)


def test_power_bound_names_power_with_numbers() -> None:
    # baseline 8·(250 W CPU + 50 W idle) = 2400 W; a co-located instance adds 250 W: 2650 W > 2500 W
    with pytest.raises(PlannerError, match=r"binding constraint power: .*rack r1 would peak at 2650 W against its "
                                           "2500 W budget"):
        plan(site(EIGHT, {"r1": 2500}), 128, 128, ttft=200, tpot=50, rate=1)


def test_power_moves_the_plan_to_another_rack() -> None:
    hosts = [("a0", "full", ATOM, 1), ("b0", "spare", ATOM, 1)]
    p = plan(site(hosts, {"full": 300, "spare": 1000}), 128, 128, ttft=200, tpot=50, rate=1)
    assert shape_of(p) == [("both", 1, 1, ["b0"], [0])]
    assert [(r.rack, r.peak_w, r.ok) for r in p.racks] == [("spare", 300 + 250, True)]


def test_higher_tp_is_chosen_when_one_device_is_too_small() -> None:
    # weights 100 GB need two 64 GB devices: TP 2 on the 2-device hosts
    hosts = [(f"n{i}", "r1", ATOM, 2) for i in range(4)]
    p = plan(site(hosts, {"r1": 100_000}), 128, 128, ttft=200, tpot=50, rate=1, weights_gb=100)
    assert shape_of(p) == [("both", 1, 2, ["n0"], [0, 1])]


def test_power_cap_slows_prefill_and_is_respected() -> None:
    # H100 hosts capped at 150 W: prefill runs 300/150 = 2x slower and the instance draws at most 150 W
    hosts = [(f"g{i}", "r1", H100, 1) for i in range(8)]
    chips = {H100: Chip()}
    free = plan(site(hosts, {"r1": 100_000}), 1000, 100, ttft=400, tpot=50, rate=1, chips=chips)
    capped = plan(site(hosts, {"r1": 100_000}, caps={f"g{i}": 150 for i in range(8)}), 1000, 100, ttft=400,
                  tpot=50, rate=1, chips=chips)
    assert free.pools[0].prefill_ms == 100.0 and capped.pools[0].prefill_ms == 200.0
    assert all(pool.power_per_instance_w <= 150 * pool.tensor_parallel for pool in capped.pools)
    assert capped.pools[0].power_cap_w == 150
    assert capped.ttft_ms > free.ttft_ms


def test_cheaper_kind_wins_by_power_and_by_price() -> None:
    hosts = [("a0", "r1", ATOM, 1), ("a1", "r1", ATOM, 1), ("g0", "r1", H100, 1), ("g1", "r1", H100, 1)]
    chips = {ATOM: Chip(), H100: Chip(prefill_w=700, decode_w=380, idle_w=75)}
    s = site(hosts, {"r1": 100_000})
    by_power = plan(s, 128, 128, ttft=200, tpot=50, rate=1, chips=chips)
    assert shape_of(by_power) == [("both", 1, 1, ["a0"], [0])]
    assert any(a.summary == f"co-located: both 1 x {H100} TP 1" and a.why_lost.startswith("adds 375 W more")
               for a in by_power.alternatives)
    by_cost = plan(s, 128, 128, ttft=200, tpot=50, rate=1, chips=chips, prices={ATOM: 3.0, H100: 1.0})
    assert shape_of(by_cost) == [("both", 1, 1, ["g0"], [0])] and by_cost.cost_per_hour == 1.0
    assert len(by_cost.alternatives) <= 5
    assert all(a.why_lost for a in by_cost.alternatives)


def test_claimed_devices_are_not_planned_on_and_ports_do_not_clash() -> None:
    # the demo's deployments, set to TP 2 here, claim both devices of npu-node-1 and npu-node-2
    hosts = [("npu-node-1", "r1", ATOM, 2), ("npu-node-2", "r1", ATOM, 2), ("n3", "r1", ATOM, 2)]
    data = site(hosts, {"r1": 100_000}, keep_deployments=True).model_dump(mode="json", by_alias=True,
                                                                          exclude_unset=True)
    for d in data["deployments"]:
        d.update(tensor_parallel=2, devices=[0, 1])
    s = Site.model_validate(data)
    p = plan(s, 8000, 200, ttft=3000, tpot=14, rate=0.5)
    assert {h for pool in p.pools for h in pool.hosts} == {"n3"}  # one pool per host: only n3 is free
    placed = build_placement(s, CAT, p)
    data = s.model_dump(mode="json", by_alias=True)
    data["deployments"] += placed.deployments
    data["serving_groups"] += placed.serving_groups
    assert placements(Site.model_validate(data), CAT).conflicts == ()


def test_too_few_free_hosts_names_capacity() -> None:
    with pytest.raises(PlannerError, match="binding constraint capacity"):
        plan(site(EIGHT[:2], {"r1": 100_000}), 8000, 200, ttft=3000, tpot=14, rate=3)


def test_insert_items_keeps_comments_and_handles_flow_and_absent_lists() -> None:
    item = [{"name": "x", "hosts": ["h"]}]
    text = "a: 1  # keep\ndeployments:\n  # first\n  - name: old\n    hosts: [h]\n\n# trailing\nother: 2\n"
    out = insert_items(text, "deployments", item)
    assert "# keep" in out and "# first" in out and "# trailing" in out
    assert yaml.safe_load(out)["deployments"] == [{"name": "old", "hosts": ["h"]}, *item]
    assert yaml.safe_load(out)["other"] == 2
    assert yaml.safe_load(insert_items("deployments: []  # none yet\n", "deployments", item)) == {
        "deployments": item}
    assert yaml.safe_load(insert_items("a: 1", "serving_groups", item)) == {"a": 1, "serving_groups": item}
    indentless = "deployments:\n- name: old\nb: 2\n"
    assert yaml.safe_load(insert_items(indentless, "deployments", item))["deployments"][1] == item[0]
    with pytest.raises(PlannerError, match="flow style"):
        insert_items("deployments: [{name: a}]\n", "deployments", item)


def test_write_placement_into_a_real_site_file(tmp_path: Path) -> None:
    demo = make_site(tmp_path)
    for h in demo.data["hosts"]:
        h["accelerators"][0]["count"] = 4  # three free devices per host beside the demo's TP 1 pools
    demo.save()
    demo.path.write_text("# operator's comment kept\n" + demo.path.read_text())
    inv = load_inventory(demo.path)
    p = plan(inv.site, 8000, 200, ttft=3000, tpot=14, rate=0.5)
    written = write_placement(inv, CAT, build_placement(inv.site, CAT, p, "planned"), demo.path)
    text = demo.path.read_text()
    assert text.startswith("# operator's comment kept\n")
    again = load_inventory(demo.path)
    names = [d.name for d in again.site.deployments]
    assert names[:2] == ["chat-prefill", "chat-decode"] and len(names) > 2
    assert placements(again.site, CAT).conflicts == ()
    assert "+- name: planned-prefill" in written.diff and "+- name: planned\n" in written.diff
    with pytest.raises(PlannerError, match="not a file of this inventory"):
        write_placement(inv, CAT, build_placement(inv.site, CAT, p), tmp_path / "elsewhere.yaml")
