"""Rollout controls: --limit, --batch-size, --canary, --max-fail-percent, --forks.

The batching and stopping rules are data-driven cases over the pure Rollout value and over the apply path with
the shipped scripted executor (hosts failing on demand); one test runs real Ansible on local hosts: a canary
that fails stops the apply before any other host is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovkit import api
from sovkit.attest.log import read_log
from sovkit.attest.predicates import PROVISION_PREDICATE
from sovkit.errors import PlanError
from sovkit.fakes import ScriptedExecutor, failed, unreachable
from sovkit.plan.rollout import Rollout, rollout_from_options
from sovkit.signing.keys import LocalSigner
from tests.conftest import run_cli
from tests.sitefactory import make_site

OPERATOR = LocalSigner.from_seed(b"rollout operator")
HOSTS = [f"n{i}" for i in range(1, 7)]


# --- the pure value -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rollout", "ties", "batches"), [
    (Rollout(), [], [HOSTS]),
    (Rollout(batch_size="2"), [], [["n1", "n2"], ["n3", "n4"], ["n5", "n6"]]),
    (Rollout(batch_size="50%"), [], [["n1", "n2", "n3"], ["n4", "n5", "n6"]]),
    (Rollout(batch_size="10%"), [], [[h] for h in HOSTS]),  # at least one host per batch
    (Rollout(canary=1), [], [["n1"], ["n2", "n3", "n4", "n5", "n6"]]),
    (Rollout(canary=1, batch_size="2"), [], [["n1"], ["n2", "n3"], ["n4", "n5"], ["n6"]]),
    # a serving group's hosts stay in one batch, placed where its first host falls
    (Rollout(batch_size="2"), [{"n2", "n5"}], [["n1", "n2", "n5"], ["n3", "n4"], ["n6"]]),
    (Rollout(canary=1), [{"n1", "n6"}], [["n1", "n6"], ["n2", "n3", "n4", "n5"]]),
])
def test_batches(rollout: Rollout, ties: list[set[str]], batches: list[list[str]]) -> None:
    assert rollout.batches(HOSTS, ties) == batches


@pytest.mark.parametrize(("limit", "selected"), [
    ("n1", {"n1"}),
    ("n1,n3", {"n1", "n3"}),
    ("n*,!n2", {"n1", "n3", "n4", "n5", "n6"}),
    ("!n6", {"n1", "n2", "n3", "n4", "n5"}),
    ("rack:r2", {"n4", "n5", "n6"}),
    ("rack:r*,!rack:r1", {"n4", "n5", "n6"}),
])
def test_limit_selects(limit: str, selected: set[str]) -> None:
    racks = {h: "r1" if int(h[1]) <= 3 else "r2" for h in HOSTS}
    assert Rollout(limit=limit).select(HOSTS, racks) == selected


def test_limit_matching_nothing_is_an_error() -> None:
    with pytest.raises(PlanError, match="'n9' matches no host"):
        Rollout(limit="n1,n9").select(HOSTS, {})


@pytest.mark.parametrize(("options", "message"), [
    ({"batch_size": "0"}, "--batch-size '0' is not valid"),
    ({"batch_size": "101%"}, "--batch-size '101%' is not valid"),
    ({"canary": 0}, "--canary 0 is not valid"),
    ({"max_fail_percent": 101}, "--max-fail-percent 101 is not valid"),
    ({"forks": 0}, "--forks 0 is not valid"),
    ({"limit": "n1;rm -rf /"}, "--limit 'n1;rm -rf /' is not valid"),
    ({"limit": "{{ lookup('pipe','id') }}"}, "is not valid"),
])
def test_bad_options_are_one_clear_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match="is not valid") as err:
        rollout_from_options(**options)
    assert message in err.value.message


@pytest.mark.parametrize(("rollout", "batch", "failed_in_batch", "failed", "stop"), [
    (Rollout(canary=1), 0, ["n1"], 1, "the canary failed on n1"),
    (Rollout(canary=1), 1, ["n2"], 1, None),  # after the canary, failures alone do not stop
    (Rollout(max_fail_percent=30), 0, ["n1", "n2"], 2, "2 of 6 hosts failed (33%), more than --max-fail-percent 30"),
    (Rollout(max_fail_percent=34), 0, ["n1", "n2"], 2, None),  # at the threshold: go on (Ansible: "exceeded")
    (Rollout(max_fail_percent=0), 2, ["n4"], 1, "1 of 6 hosts failed (17%), more than --max-fail-percent 0"),
    (Rollout(), 0, HOSTS, 6, None),  # no controls: every batch runs whatever fails
])
def test_stop_reason(rollout: Rollout, batch: int, failed_in_batch: list[str], failed: int, stop: str | None) -> None:
    assert rollout.stop_reason(batch, failed_in_batch, failed, 6) == stop


# --- the apply path (scripted hosts) ------------------------------------------------------------------------------

def _site(tmp: Path, n: int = 4) -> Path:
    """A demo copy with ``n`` local hosts and no serving (so no host is tied to another)."""
    hosts = [{"name": f"n{i}", "rack": "demo-rack", "address": "127.0.0.1", "arch": "aarch64",
              "cpu": "arm-neoverse-v2", "service_manager": "supervisor", "connection": "local",
              "root": f"hosts/n{i}", "accelerators": [{"kind": "rebellions-atom-max", "count": 2,
                                                       "firmware": "atom-max-fw-1.2.0"}]}
             for i in range(1, n + 1)]
    site = make_site(tmp, hosts=hosts)
    site.data["deployments"], site.data["serving_groups"] = [], []
    site.data["racks"][0]["power_budget_w"] = 20000
    return site.save()


def _apply(site: Path, rollout: Rollout, executor: ScriptedExecutor) -> api.ApplyReport:
    ws = api.open_workspace(inventory=site, executor=executor)
    ws.signer = OPERATOR
    result = api.make_plan(workspace=ws, rollout=rollout)
    return api.apply_plan(workspace=ws, plan=result.plan, decision=result.decision, expected=result.bindings)


@pytest.mark.parametrize(("rollout", "failing", "runs", "skipped", "stopped"), [
    # canary 1: the first host fails -> nobody else is touched
    (Rollout(canary=1), {"n1"}, [["n1"]], {"n2", "n3", "n4"}, "the canary failed on n1"),
    # canary passes, a later failure does not stop the rest
    (Rollout(canary=1, batch_size="1"), {"n3"}, [["n1"], ["n2"], ["n3"], ["n4"]], set(), None),
    # 1 of 4 failed = 25% > 20 -> stop after that batch
    (Rollout(batch_size="2", max_fail_percent=20), {"n2"}, [["n1", "n2"]], {"n3", "n4"}, "more than"),
    # 25% is not more than 25 -> go on
    (Rollout(batch_size="2", max_fail_percent=25), {"n2"}, [["n1", "n2"], ["n3", "n4"]], set(), None),
    # no controls: one run, everything attempted
    (Rollout(), {"n1", "n2"}, [["n1", "n2", "n3", "n4"]], set(), None),
])
def test_apply_batches_and_stops(tmp_path: Path, rollout: Rollout, failing: set[str], runs: list[list[str]],
                                 skipped: set[str], stopped: str | None) -> None:
    site = _site(tmp_path)
    executor = ScriptedExecutor()
    for host in failing:
        executor.script("apply.yml", host, failed("sovkit firmware | flash", f"{host} broke"))
    report = _apply(site, rollout, executor)
    assert [[t.name for t in r.targets] for r in executor.runs if r.playbook == "apply.yml"] == runs
    assert set(report.skipped) == skipped
    assert (report.stopped is None) == (stopped is None)
    if stopped:
        assert report.stopped is not None and stopped in report.stopped
    assert not report.ok if (failing or skipped) else report.ok
    # the skipped hosts are attested as not started, with the reason; the others name their batch
    entries = _attested(site)
    for host in skipped:
        assert entries[host]["outcome"] == "not-started" and "not attempted" in entries[host]["error"]
    if not rollout.default:
        assert all(p["rollout"] == json.loads(rollout.model_dump_json()) for p in entries.values())
    if len(report.batches) > 1:  # each host's statement names the batch that ran it
        assert {h: entries[h]["batch"] for h in report.batches[-1]} == {h: len(report.batches)
                                                                          for h in report.batches[-1]}


def _attested(site: Path) -> dict[str, dict[str, Any]]:
    return {e.predicate["host"]: e.predicate for e in read_log(site.parent / ".sovkit" / "attestations")
            if e.predicate_type == PROVISION_PREDICATE}


def test_forks_reach_the_executor(tmp_path: Path) -> None:
    executor = ScriptedExecutor()
    _apply(_site(tmp_path, 2), Rollout(forks=3, batch_size="1"), executor)
    assert [r.forks for r in executor.runs if r.playbook == "apply.yml"] == [3, 3]


def test_unreachable_canary_stops_too(tmp_path: Path) -> None:
    executor = ScriptedExecutor().script("apply.yml", "n1", unreachable("Gathering Facts", "ssh: no route"))
    report = _apply(_site(tmp_path, 3), Rollout(canary=1), executor)
    assert set(report.skipped) == {"n2", "n3"} and report.stopped is not None


def test_limit_keeps_only_those_hosts_and_counts_the_rest(tmp_path: Path) -> None:
    site = _site(tmp_path, 3)
    ws = api.open_workspace(inventory=site, executor=ScriptedExecutor())
    full = api.make_plan(workspace=ws).plan
    limited = api.make_plan(workspace=ws, rollout=Rollout(limit="n2")).plan
    assert {c.host for c in limited.changes} == {"n2"}
    assert limited.held_back == len(full.changes) - len(limited.changes) > 0
    assert limited.rollout.limit == "n2"


def test_limit_refuses_to_split_a_serving_group(tmp_path: Path) -> None:
    site = make_site(tmp_path)  # the demo: chat-prefill on npu-node-1, chat-decode on npu-node-2, one group
    ws = api.open_workspace(inventory=site.path, executor=ScriptedExecutor())
    with pytest.raises(PlanError, match="splits a serving group") as err:
        api.make_plan(workspace=ws, rollout=Rollout(limit="npu-node-1"))
    assert "add npu-node-2 to the limit" in (err.value.hint or "")


# --- the CLI: saved plans carry the rollout; real Ansible stops at a failed canary --------------------------------

def test_saved_plan_carries_the_rollout_and_refuses_new_options(tmp_path: Path) -> None:
    site = _site(tmp_path, 2)
    plan_file = tmp_path / "plan.json"
    r = run_cli("plan", site, "--limit", "n1", "--canary", "1", "-o", plan_file)
    assert r.code == 0, r.text
    assert "Rollout: limit n1, canary 1." in r.out and "left for a later apply" in r.out
    shown = run_cli("plan", site, "--limit", "n1", "--json")
    view = json.loads(shown.out)["plan"]
    assert view["rollout"]["limit"] == "n1" and view["held_back"] > 0
    again = run_cli("apply", plan_file, "--batch-size", "1", "--plan-key",
                    site.parent / ".sovkit" / "keys" / "operator.key.pub")
    assert again.code == 1 and "carries its own rollout controls" in again.err and "Traceback" not in again.err
    bad = run_cli("plan", site, "--limit", "nope")
    assert bad.code == 1 and "'nope' matches no host" in bad.err and "Traceback" not in bad.err


@pytest.mark.slow
def test_real_canary_failure_touches_no_other_host(tmp_path: Path) -> None:
    """n1 cannot run Python (its interpreter does not exist): the canary fails; n2 and n3 are never touched."""
    site_path = _site(tmp_path, 3)
    data = yaml.safe_load(site_path.read_text())
    data["hosts"][0]["python_interpreter"] = "/nonexistent/python3"
    site_path.write_text(yaml.safe_dump(data, sort_keys=False))
    r = run_cli("apply", site_path, "--auto-approve", "--canary", "1", "--batch-size", "1", "--forks", "2")
    assert r.code == 1, r.text
    assert "stopped after batch 1 of 3: the canary failed on n1" in r.err
    assert "n2" in r.err and "not attempted" in r.err
    state_file = site_path.parent / ".sovkit" / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"hosts": {}}
    assert not state["hosts"].get("n2", {}).get("firmware") and not state["hosts"].get("n3", {}).get("firmware")
    for host in ("n2", "n3"):  # nothing was written on them
        assert not (site_path.parent / "hosts" / host / "opt").exists()
    attested = _attested(site_path)
    assert attested["n2"]["outcome"] == "not-started" and attested["n1"]["outcome"] in ("failed", "unreachable")
    assert attested["n1"]["rollout"]["canary"] == 1  # the plan's controls are attested
    # the limit leaves the broken n1 (and n3) alone: n2 alone is applied, for real, and the site says what is left
    r = run_cli("apply", site_path, "--auto-approve", "--limit", "n2")
    assert r.code == 0, r.text
    assert "left for a later apply" in r.out
    state = json.loads(state_file.read_text())
    assert state["hosts"]["n2"]["firmware"] and not state["hosts"].get("n3", {}).get("firmware")
    assert "n1" not in state["hosts"] or not state["hosts"]["n1"].get("firmware")
