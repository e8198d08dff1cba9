"""Records rules (policies/records.rego) end to end: for each id, sites that violate it and one that passes.

Each case starts from the demo site (a Korean site whose one log sink holds the decision and inference logs for
365 days, with its technical documentation and site-wide output labelling recorded) and edits its YAML as data;
the real embedded engine evaluates the real policy input. A violating site must be denied with that id (and no
other records id); a passing site must be allowed with no records finding at all.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sovkit.errors import InventoryError
from sovkit.inventory import load_inventory
from sovkit.policy.api import PolicyDecision, evaluate_policy
from sovkit.policy.input import build_input
from tests.conftest import INVENTORIES, CliResult
from tests.sitefactory import Site, make_site

Mutation = Callable[[Site], None]

RECORDS_IDS = {"LOG-001", "LOG-002", "LOG-003", "LOG-004", "DOC-001", "GEN-001", "GEN-002"}


def _sink(**changes: Any) -> Mutation:
    def mutate(site: Site) -> None:
        site.data["log_sinks"][0].update(changes)
    return mutate


def _add_sink(name: str, days: int, **flags: bool) -> Mutation:
    def mutate(site: Site) -> None:
        site.data["log_sinks"].append({"name": name, "url": f"file:///var/log/{name}", "jurisdiction": "KR",
                                       "retention_days": days, **flags})
    return mutate


def _records(**changes: Any) -> Mutation:
    def mutate(site: Site) -> None:
        site.data["records"].update(changes)
    return mutate


def _drop_records(*keys: str) -> Mutation:
    def mutate(site: Site) -> None:
        for key in keys:
            site.data["records"].pop(key)
    return mutate


def _all(*mutations: Mutation) -> Mutation:
    def mutate(site: Site) -> None:
        for m in mutations:
            m(site)
    return mutate


_LABEL = {"methods": ["visible-label", "machine-readable"], "reference": "CR-31 answer banner and C2PA manifest"}


def _on_deployments(site: Site) -> None:
    for d in site.data["deployments"]:
        d["output_labelling"] = _LABEL


def _on_group(site: Site) -> None:
    site.data["serving_groups"][0]["output_labelling"] = _LABEL


def _not_generative(site: Site) -> None:
    site.model("demo-ko-chat")["generative"] = False


_UNLABELLED = _drop_records("generated_output_labelling")
_FOREIGN = _records(operator_domestic_address=False)

# rule id -> (violating mutations, with the resource each is reported on; a passing mutation that meets the rule
# in another way than the demo does)
RECORDS_RULES: dict[str, tuple[list[tuple[Mutation, str]], Mutation]] = {
    "LOG-001": ([(_all(_sink(decision_log=False), _add_sink("other", 30)), "site/demo"),
                 (_sink(decision_log=False), "site/demo")],
                _all(_sink(decision_log=False), _add_sink("decisions", 183, decision_log=True))),
    "LOG-002": ([(_all(_sink(retention_days=182, inference_log=False),
                       _add_sink("inference", 183, inference_log=True)), "log_sinks/audit-log"),
                 (_all(_records(min_log_retention_days=400), _sink(inference_log=False),
                       _add_sink("inference", 400, inference_log=True)), "log_sinks/audit-log")],
                _all(_records(min_log_retention_days=730), _sink(retention_days=730))),
    "LOG-003": ([(_sink(inference_log=False), "site/demo")],
                _all(_sink(inference_log=False), _add_sink("inference", 200, inference_log=True))),
    "LOG-004": ([(_all(_sink(inference_log=False), _add_sink("inference", 90, inference_log=True)),
                  "log_sinks/inference"),
                 (_all(_records(min_log_retention_days=30), _sink(inference_log=False),
                       _add_sink("inference", 90, inference_log=True)), "log_sinks/inference")],
                _all(_sink(inference_log=False), _add_sink("inference", 183, inference_log=True))),
    "DOC-001": ([(_drop_records("technical_documentation"), "records/technical_documentation"),
                 (_all(lambda site: site.data.pop("records"), _on_group), "records/technical_documentation"),
                 (lambda site: site.data["records"]["technical_documentation"].update(retention_years=9),
                  "records/technical_documentation"),
                 (_records(min_documentation_retention_years=12), "records/technical_documentation")],
                _all(_records(min_documentation_retention_years=12),
                     lambda site: site.data["records"]["technical_documentation"].update(retention_years=12))),
    "GEN-001": ([(_UNLABELLED, "deployments/chat-prefill"),
                 (_all(_UNLABELLED, lambda site: site.data["deployments"][1].update(output_labelling=_LABEL)),
                  "deployments/chat-prefill")],
                _all(_UNLABELLED, _on_group)),
    "GEN-002": ([(_FOREIGN, "records/domestic_representative")],
                _all(_FOREIGN, _records(domestic_representative={"name": "Example Korea Agent LLC",
                                                                 "contact": "agent@example.kr, Seoul"}))),
}

#: more passing sites: labelling on every deployment, or a model that generates nothing
_MORE_PASSING: dict[str, Mutation] = {
    "GEN-001 labelled per deployment": _all(_UNLABELLED, _on_deployments),
    "GEN-001 not a generative model": _all(_UNLABELLED, _not_generative),
}


def _decide(site: Site) -> PolicyDecision:
    return evaluate_policy(load_inventory(site.save()), None, None, None)


def _records_findings(decision: PolicyDecision) -> list[dict[str, Any]]:
    return [f for f in decision.findings if f["id"] in RECORDS_IDS]


_VIOLATING = [(rule, i) for rule, (bad, _) in sorted(RECORDS_RULES.items()) for i in range(len(bad))]


@pytest.mark.parametrize(("rule", "case"), _VIOLATING, ids=[f"{r}-{i}" for r, i in _VIOLATING])
def test_violating_site_is_denied_with_the_rule(rule: str, case: int, tmp_path: Path) -> None:
    mutate, resource = RECORDS_RULES[rule][0][case]
    site = make_site(tmp_path)
    mutate(site)
    decision = _decide(site)
    found = _records_findings(decision)
    assert {f["id"] for f in found} == {rule}, found
    assert decision.allowed is False
    hits = [f for f in found if f["id"] == rule]
    assert resource in {f["resource"] for f in hits}
    for f in hits:
        assert set(f) == {"id", "severity", "msg", "resource", "remediation"} and f["severity"] == "deny"
        assert f["msg"] and f["remediation"]


_PASSING = {**{f"{rule} passing": good for rule, (_, good) in RECORDS_RULES.items()}, **_MORE_PASSING}


@pytest.mark.parametrize("name", sorted(_PASSING))
def test_passing_site_is_allowed(name: str, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    _PASSING[name](site)
    decision = _decide(site)
    assert _records_findings(decision) == []
    assert decision.allowed is True, decision.findings


def test_the_minimum_is_in_the_message_and_the_remediation(tmp_path: Path) -> None:
    """The site's own minimum replaces the pack's floor when higher; the fix names the exact value."""
    site = make_site(tmp_path)
    _all(_records(min_log_retention_days=400), _sink(retention_days=365))(site)
    found = {f["id"]: f for f in _records_findings(_decide(site))}
    assert set(found) == {"LOG-002", "LOG-004"}
    assert "365 day(s), fewer than the minimum 400" in found["LOG-002"]["msg"]
    assert "retention_days: 400" in found["LOG-004"]["remediation"]


def test_a_waiver_covers_each_records_rule(tmp_path: Path) -> None:
    """Waivers match the new ids like any other: one site breaking every rule, every finding waived, allowed."""
    site = make_site(tmp_path)
    _all(_sink(decision_log=False, inference_log=False), _add_sink("short", 30, decision_log=True,
                                                                   inference_log=True),
         _drop_records("technical_documentation", "generated_output_labelling"), _FOREIGN)(site)
    found = _records_findings(_decide(site))
    assert {f["id"] for f in found} == {"LOG-002", "LOG-004", "DOC-001", "GEN-001", "GEN-002"}
    expires = (datetime.now(UTC).date() + timedelta(days=120)).isoformat()
    site.data["waivers"] = [{"rule": f["id"], "resource": f["resource"], "reason": "records migration CR-40",
                             "expires": expires} for f in found]
    decision = _decide(site)
    assert decision.allowed is True, decision.findings
    waived = {(f["id"], f["resource"]) for f in decision.findings if f.get("waived")}
    assert waived == {(f["id"], f["resource"]) for f in found}


def test_korean_rules_do_not_apply_outside_korea(tmp_path: Path) -> None:
    """eu-sovereign (DE) has no output labelling; marked foreign without a representative it still passes."""
    root = tmp_path / "eu"
    shutil.copytree(INVENTORIES / "eu-sovereign", root)
    site = Site(root)
    site.data["records"]["operator_domestic_address"] = False
    decision = _decide(site)
    assert _records_findings(decision) == [] and decision.allowed is True
    site.data["jurisdiction"] = {"country": "KR", "region": None}  # the same site in Korea: both rules deny
    site.data["residency"]["allowed_jurisdictions"] = ["KR", "DE", "FR"]
    site.data["residency"]["transfers"].append({"name": "to-de", "destination": "DE", "basis": "consent",
                                                "reference": "test"})
    found = _records_findings(_decide(site))
    assert {f["id"] for f in found} == {"GEN-001", "GEN-002"}
    assert {f["resource"] for f in found if f["id"] == "GEN-001"} == {
        "deployments/assist-prefill", "deployments/assist-decode", "deployments/assist-batch"}


def test_input_says_where_each_labelling_is_declared(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.data["deployments"][1]["output_labelling"] = _LABEL
    doc = build_input(load_inventory(site.save()))
    assert {x["deployment"]: x["declared_on"] for x in doc["output_labelling"]} == {
        "chat-prefill": "site", "chat-decode": "deployment"}
    _all(_UNLABELLED, _on_group)(site)
    doc = build_input(load_inventory(site.save()))
    assert {x["deployment"]: x["declared_on"] for x in doc["output_labelling"]} == {
        "chat-prefill": "serving_group", "chat-decode": "deployment"}
    assert doc["records"]["technical_documentation"]["retention_years"] == 10
    assert doc["log_sinks"][0]["inference_log"] is True


@pytest.mark.parametrize(("edit", "expect"), [
    (_records(domestic_representative={"name": "Agent"}), "contact"),
    (_records(technical_documentaton={"location": "x", "jurisdiction": "KR", "retention_years": 10}),
     "technical_documentaton"),
    (_records(generated_output_labelling={"methods": [], "reference": "r"}), "methods"),
    (_sink(inference_logs=True), "inference_logs"),
])
def test_records_fields_are_strict(edit: Mutation, expect: str, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    edit(site)
    with pytest.raises(InventoryError) as err:
        load_inventory(site.save())
    assert any(expect in line for line in err.value.details()), err.value.details()


def test_check_cli_denies_and_names_the_rule(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    _FOREIGN(site)
    r = cli("check", site.save(), "--json")
    assert r.code == 3, r.text
    decision = json.loads(r.out)
    assert [f["id"] for f in decision["findings"]] == ["GEN-002"]
    assert "records.domestic_representative" in decision["findings"][0]["remediation"]
