"""`sovkit plan` output: per-host `+ ~ -` lines with a summary, `--json`, and `--detailed-exitcode` 0/2/1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sovkit.components.host import desired_site
from sovkit.inventory import load_inventory
from sovkit.state.models import HostRecord, State
from sovkit.state.store import LocalStateStore
from tests.conftest import CliResult, run_cli
from tests.sitefactory import KIND, Site, big_site, make_site

Cli = Callable[..., CliResult]


def _converged(site: Site) -> dict[str, HostRecord]:
    """What a successful apply of ``site`` records."""
    out = {}
    for name, want in desired_site(load_inventory(site.path)).items():
        out[name] = HostRecord.model_validate({
            "firmware": {k: {"kind": k, "version": f.version, "image_sha256": f.image.sha256,
                             "devices": {str(i): {"kind": k, "firmware": f.version} for i in range(f.count)}}
                         for k, f in want.firmware.items()},
            "runtimes": {n: {"version": r.version, "package": r.package, "prefix": r.prefix,
                             "artifacts": {a.store_path: a.sha256 for a in r.artifacts}}
                         for n, r in want.runtimes.items()},
            "models": {n: {"version": m.version, "files": {f.name: f.sha256 for f in m.files},
                           "path": f"{m.path}/{m.version}"} for n, m in want.models.items()},
            "serving": {n: {"role": s.role, "model": s.model, "model_version": s.model_version, "runtime": s.runtime,
                            "runtime_version": s.runtime_version, "config_sha256": s.config_sha256, "port": s.port}
                        for n, s in want.serving.items()},
        })
    return out


def _record(site: Site, hosts: dict[str, HostRecord]) -> State:
    return LocalStateStore(site.root / ".sovkit").write(State(site="demo", hosts=hosts))


@pytest.fixture
def mixed(tmp_path: Path) -> Site:
    """npu-node-1 recorded with old firmware and a model no longer deployed; npu-node-2 never applied."""
    site = make_site(tmp_path)
    hosts = _converged(site)
    node1 = hosts["npu-node-1"]
    node1.firmware[KIND].version = "1.0.0"
    node1.models["old-model"] = node1.models["demo-ko-chat"].model_copy(update={"version": "0.1"})
    del hosts["npu-node-2"]
    _record(site, hosts)
    return site


def test_human_output_groups_changes_per_host_with_markers_and_a_summary(mixed: Site, cli: Cli) -> None:
    r = cli("plan", mixed.path)
    assert r.code == 0, r.text
    lines = r.out.splitlines()
    start = lines.index("Site demo:")
    assert lines[start + 1:start + 9] == [
        "  npu-node-1",
        "    ~ firmware rebellions-atom-max: upgrade 1.0.0 → 1.2.0",
        "    - model old-model: no longer deployed on this host",
        "  npu-node-2",
        "    + firmware rebellions-atom-max: flash 1.2.0 on 2 device(s)",
        "    + runtime simnpu-serve: install simnpu-serve 1.0.0",
        "    + model demo-ko-chat: install demo-ko-chat 1.0 (3 files) and activate",
        f"    + serving chat-decode: decode server for demo-ko-chat 1.0 on port {mixed.data['deployments'][1]['port']}",
    ]
    assert "Plan: 4 to create, 1 to update, 1 to delete." in lines
    assert "Policy: allowed" in r.out


def test_converged_site_says_no_changes(tmp_path: Path, cli: Cli) -> None:
    site = make_site(tmp_path)
    _record(site, _converged(site))
    r = cli("plan", site.path)
    assert r.code == 0, r.text
    assert "No changes. The hosts match the inventory." in r.out
    assert "Site demo:" not in r.out and "npu-node" not in r.out


def test_json_output(mixed: Site, cli: Cli) -> None:
    r = cli("plan", mixed.path, "--json")
    assert r.code == 0, r.text
    doc = json.loads(r.out)
    assert set(doc) == {"plan", "decision", "bindings", "saved", "drift", "unreachable", "warnings"}
    plan = doc["plan"]
    assert plan["site"] == "demo"
    assert plan["summary"] == {"create": 4, "update": 1, "delete": 1}
    assert plan["unchanged"] == 4  # npu-node-1: runtime, model, the prefill server and the router
    got = [(c["host"], c["action"], c["component"], c["name"]) for c in plan["changes"]]
    assert got == [
        ("npu-node-1", "update", "firmware", KIND), ("npu-node-1", "delete", "model", "old-model"),
        ("npu-node-2", "create", "firmware", KIND), ("npu-node-2", "create", "runtime", "simnpu-serve"),
        ("npu-node-2", "create", "model", "demo-ko-chat"), ("npu-node-2", "create", "serving", "chat-decode"),
    ]
    fw = plan["changes"][0]
    assert (fw["before"]["version"], fw["after"]["version"]) == ("1.0.0", "1.2.0")
    assert fw["reason"] == "upgrade 1.0.0 → 1.2.0"
    state = json.loads((mixed.root / ".sovkit" / "state.json").read_text())
    assert doc["bindings"]["state_serial"] == state["serial"] and doc["bindings"]["state_lineage"] == state["lineage"]
    assert doc["bindings"]["inventory_digest"] == load_inventory(mixed.path).digest
    assert doc["decision"]["allowed"] is True
    assert doc["saved"] is None and doc["drift"] is None


@pytest.mark.parametrize(("prepare", "expected"), [
    ("mixed", 2),
    ("converged", 0),
    ("broken-inventory", 1),
    ("corrupt-state", 1),
])
def test_detailed_exitcode(tmp_path: Path, cli: Cli, prepare: str, expected: int) -> None:
    site = make_site(tmp_path)
    hosts = _converged(site)
    if prepare == "mixed":
        hosts["npu-node-1"].firmware[KIND].version = "1.0.0"
    _record(site, hosts)
    if prepare == "broken-inventory":
        site.host("npu-node-2")["accelerators"][0]["firmware"] = "no-such-firmware"
        site.save()
    elif prepare == "corrupt-state":
        state = site.root / ".sovkit" / "state.json"
        state.write_text(state.read_text()[:50])
    r = cli("plan", site.path, "--detailed-exitcode")
    assert r.code == expected, r.text
    assert "Traceback" not in r.text
    if expected == 1:
        assert r.err.startswith("error:"), r.err
        assert ("no-such-firmware" if prepare == "broken-inventory" else "state.json.backup") in r.err
        assert "Plan:" not in r.out
    else:
        assert ("Plan: 0 to create, 1 to update" if expected == 2 else "No changes") in r.out


def test_detailed_exitcode_with_json(mixed: Site, cli: Cli) -> None:
    r = cli("plan", mixed.path, "--json", "--detailed-exitcode")
    assert r.code == 2
    doc: dict[str, Any] = json.loads(r.out)
    assert doc["plan"]["summary"]["create"] == 4


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """60 hosts in 3 racks of 20, none applied: 240 changes, over the summary threshold (the bench's site, smaller)."""
    return big_site(tmp_path_factory.mktemp("big"), 60)


def test_big_plan_prints_a_summary_per_rack_and_the_first_changes(big: Site, cli: Cli) -> None:
    r = cli("plan", big.path)
    assert r.code == 0, r.text
    lines = r.out.splitlines()
    start = lines.index("Site demo:")
    assert lines[start + 1:start + 6] == [
        "  240 change(s) on 60 host(s) in 3 rack(s): 240 to create.",
        "  Per rack:",
        "    rack rack-0000: 80 change(s) on 20 host(s) (80 to create)",
        "    rack rack-0001: 80 change(s) on 20 host(s) (80 to create)",
        "    rack rack-0002: 80 change(s) on 20 host(s) (80 to create)",
    ]
    assert lines[start + 6] == "  First 10 change(s):"
    assert lines[start + 7:start + 9] == ["    node-00000",
                                          "      + firmware rebellions-atom-max: flash 1.2.0 on 2 device(s)"]
    assert sum(1 for line in lines if line.lstrip().startswith(("+ ", "~ ", "- "))) == 10
    assert "  … and 230 more: `sovkit plan --detail` shows every change, grouped per rack." in lines
    assert "node-00059" not in r.out
    assert lines[-1] == "Plan: 240 to create, 0 to update, 0 to delete."


def test_big_plan_with_detail_lists_every_change_grouped_per_rack(big: Site, cli: Cli) -> None:
    r = cli("plan", big.path, "--detail")
    assert r.code == 0, r.text
    lines = r.out.splitlines()
    start = lines.index("Site demo:")
    assert lines[start + 1:start + 4] == [
        "  rack rack-0000: 80 change(s) on 20 host(s) (80 to create)",
        "    node-00000",
        "      + firmware rebellions-atom-max: flash 1.2.0 on 2 device(s)",
    ]
    racks = [line for line in lines if line.startswith("  rack ")]
    assert [line.split(":")[0] for line in racks] == ["  rack rack-0000", "  rack rack-0001", "  rack rack-0002"]
    assert sum(1 for line in lines if line.lstrip().startswith(("+ ", "~ ", "- "))) == 240
    # each host sits under its own rack: node-00020 is the first host after rack-0001's line
    assert lines[lines.index(racks[1]) + 1] == "    node-00020"
    assert "--detail" not in r.out and lines[-1] == "Plan: 240 to create, 0 to update, 0 to delete."


def test_small_plan_with_detail_groups_the_same_changes_per_rack(mixed: Site, cli: Cli) -> None:
    full = [line.strip() for line in cli("plan", mixed.path).out.splitlines() if line.startswith("    ")]
    r = cli("plan", mixed.path, "--detail")
    assert r.code == 0, r.text
    detail = [line.strip() for line in r.out.splitlines() if line.startswith("      ")]
    assert detail == full and len(full) == 6
    assert any(line.startswith("  rack ") for line in r.out.splitlines())


def test_big_plan_json_is_not_summarised(big: Site, cli: Cli) -> None:
    r = cli("plan", big.path, "--json")
    assert r.code == 0, r.text
    assert len(json.loads(r.out)["plan"]["changes"]) == 240


def test_apply_shows_a_big_plan_as_the_same_summary_before_asking(big: Site) -> None:
    """`apply` of an inventory asks about the plan it shows: a summary per rack, not 240 change lines."""
    declined = run_cli("apply", big.path, input="n\n")
    assert declined.code == 1 and "Apply cancelled; nothing was changed." in declined.text, declined.text
    assert "  240 change(s) on 60 host(s) in 3 rack(s): 240 to create." in declined.out.splitlines()
    assert "node-00059" not in declined.out
    assert sum(1 for line in declined.out.splitlines() if line.lstrip().startswith(("+ ", "~ ", "- "))) == 10
    assert not (big.root / ".sovkit" / "state.json").exists()  # nothing applied, nothing recorded
    detailed = run_cli("apply", big.path, "--detail", input="n\n")
    assert detailed.code == 1, detailed.text
    assert sum(1 for line in detailed.out.splitlines() if line.lstrip().startswith(("+ ", "~ ", "- "))) == 240
    assert "    node-00059" in detailed.out.splitlines()


def test_a_big_batch_is_named_by_its_first_hosts_and_counted() -> None:
    from sovkit.cli.plan_cmds import _hosts_named

    assert _hosts_named(["a", "b"]) == "a, b"
    assert _hosts_named([f"n{i}" for i in range(2500)]) == "n0, n1, n2, n3, n4 and 2495 more (2500 hosts)"
