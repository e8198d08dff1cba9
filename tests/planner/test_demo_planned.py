"""The demo's serving group is the planner's placement: it breaks when the planner or the demo drifts apart."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from sovkit.api import plan_serving
from sovkit.inventory import load_inventory
from sovkit.inventory.models import Deployment, ServingGroup
from sovkit.planner.placement import ServingPlanOutput
from tests.conftest import INVENTORIES

DEMO = INVENTORIES / "demo"
DEMO_OWN = {"port", "readiness_timeout_s"}  # the demo's fixed ports (8100-8112) and its readiness timeout


def _without_serving(tmp: Path) -> Path:
    """A copy of the demo site with its deployments and serving groups removed (the planner's input)."""
    root = tmp / "site"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("generate.py", "*.in", ".sovkit", "hosts"))
    data = yaml.safe_load((root / "site.yaml").read_text())
    del data["deployments"], data["serving_groups"]
    (root / "site.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "site.yaml"


def _plan(tmp: Path) -> ServingPlanOutput:
    """The command the comment above the demo's deployments names, through the library."""
    return plan_serving(inventory=load_inventory(_without_serving(tmp)), model="demo-ko-chat", ttft_ms=50,
                        tpot_ms=10, rate=1, isl=2048, osl=2048, link="loopback", name="chat", mode="disaggregated")


def test_demo_deployments_are_the_planners_placement(tmp_path: Path) -> None:
    out = _plan(tmp_path)
    placed = yaml.safe_load(out.placement_yaml)
    demo = load_inventory(DEMO / "site.yaml").site

    planned = [Deployment.model_validate(d) for d in placed["deployments"]]
    assert [d.name for d in demo.deployments] == [d.name for d in planned] == ["chat-prefill", "chat-decode"]
    for mine, theirs in zip(demo.deployments, planned, strict=True):
        assert mine.model_dump(exclude=DEMO_OWN) == theirs.model_dump(exclude=DEMO_OWN), mine.name
    # the planner pins what it chose: the demo spells out the same fields, it does not lean on defaults
    for d, raw in zip(demo.deployments, placed["deployments"], strict=True):
        assert set(raw) - DEMO_OWN <= d.model_fields_set, d.name
    assert [d.port for d in demo.deployments] == [8101, 8102]

    groups = [ServingGroup.model_validate(g) for g in placed["serving_groups"]]
    assert len(demo.serving_groups) == len(groups) == 1
    mine_g, theirs_g = demo.serving_groups[0], groups[0]
    assert mine_g.model_dump(exclude={"kv_transfer": {"port"}, "router": {"port"}}) == \
        theirs_g.model_dump(exclude={"kv_transfer": {"port"}, "router": {"port"}})
    assert (mine_g.kv_transfer.port, mine_g.router.port) == (8112, 8100)


def test_the_planned_demo_meets_its_targets(tmp_path: Path) -> None:
    """The planner's own prediction for the placement meets the targets the demo carries (what SV-008 checks)."""
    plan = _plan(tmp_path).plan
    assert plan.mode == "disaggregated"
    assert plan.ttft_ms <= 50 and plan.tpot_ms <= 10
    assert all(rack.peak_w <= rack.budget_w for rack in plan.racks)
