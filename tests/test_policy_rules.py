"""For every rule id: an inventory that violates it, and `sovkit check` names that rule (data-driven)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sovkit.inventory import load_inventory
from sovkit.policy.input import build_input
from sovkit.signing.artifacts import sign_artifacts
from sovkit.signing.keys import LocalSigner
from sovkit.state.models import FirmwareRecord, HostRecord, RuntimeRecord, State
from sovkit.state.store import LocalStateStore
from tests.conftest import INVENTORIES, ROOT, CliResult
from tests.sitefactory import Site, make_site
from tests.test_policy_records import RECORDS_RULES
from tests.test_serving_policy import SERVING_RULES

Mutation = Callable[[Site], None]


def _set(section: str, key: str, value: Any, index: int = 0) -> Mutation:
    def mutate(site: Site) -> None:
        site.data[section][index][key] = value
    return mutate


def _drop(section: str, key: str, index: int = 0) -> Mutation:
    def mutate(site: Site) -> None:
        site.data[section][index].pop(key)
    return mutate


def _residency(**changes: Any) -> Mutation:
    def mutate(site: Site) -> None:
        site.data["residency"].update(changes)
    return mutate


def _all(*mutations: Mutation) -> Mutation:
    def mutate(site: Site) -> None:
        for m in mutations:
            m(site)
    return mutate


def _mirror(jurisdiction: str = "KR-11") -> Mutation:
    def mutate(site: Site) -> None:
        site.data["artifact_store"] = {"kind": "oci", "url": "https://mirror.demo.internal", "repository": "demo",
                                       "jurisdiction": jurisdiction}
    return mutate


def _rogue_signature(section: str, index: int = 0) -> Mutation:
    """Replace the signature file with one by a key that is not in the trust roots."""
    def mutate(site: Site) -> None:
        item = site.data[section][index]
        files = {"firmware": lambda: [item["image"]], "runtimes": lambda: item["artifacts"],
                 "models": lambda: item["files"]}[section]()
        env = sign_artifacts({f["path"]: f["sha256"] for f in files}, LocalSigner.generate(), section,
                             item["name"], item["version"])
        (site.store / item["signature"]).write_text(env.to_json())
    return mutate


def _egress(url: str) -> Mutation:
    def mutate(site: Site) -> None:
        site.data["endpoints"].append({"name": "out", "url": url, "jurisdiction": "KR", "direction": "egress"})
    return mutate


def _vendor_acme(site: Site) -> None:
    key = site.root / "keys" / "acme.pub"
    key.write_bytes((site.root / "keys" / "vendor-rebellions.pub").read_bytes())
    site.data["trust_roots"]["vendors"].append({"name": "acme", "public_key": "keys/acme.pub"})
    site.data["firmware"][0]["vendor"] = "acme"


def _state(host: HostRecord) -> Mutation:
    def mutate(site: Site) -> None:
        LocalStateStore(site.root / ".sovkit").write(State(site="demo", hosts={"npu-node-1": host}))
    return mutate


def _newer_firmware_installed(site: Site) -> None:
    _state(HostRecord(firmware={"rebellions-atom-max": FirmwareRecord(
        kind="rebellions-atom-max", version="1.10.0", image_sha256="0" * 64)}))(site)


def _newer_runtime_installed(site: Site) -> None:
    _state(HostRecord(runtimes={"simnpu-serve": RuntimeRecord(version="1.0.10", package="simnpu-serve")}))(site)


def _unknown_tdp(site: Site) -> None:
    slot = site.data["hosts"][0]["accelerators"][0]
    slot.update(kind="rebellions-atom", firmware=None)


def _budget_of_peak(ratio: float) -> Mutation:
    """A rack budget at ``ratio`` of the rack's peak power by phase (as the policy input computes it)."""
    def mutate(site: Site) -> None:
        rack = build_input(load_inventory(site.save()))["rack_shapes"][0]
        site.data["racks"][0]["power_budget_w"] = round(rack["peak_w"] * ratio)
    return mutate


def _targets(**targets: float) -> Mutation:
    def mutate(site: Site) -> None:
        for d in site.data["deployments"]:
            d["targets"] = targets
    return mutate


def _huge_weights(site: Site) -> None:
    _mirror()(site)
    site.data["models"][0]["files"][1]["size"] = 400_000_000_000


def _waiver(days: int, rule: str = "RES-003", resource: str = "telemetry/metrics") -> Mutation:
    def mutate(site: Site) -> None:
        expires = (datetime.now(UTC).date() + timedelta(days=days)).isoformat()
        site.data["waivers"] = [{"rule": rule, "resource": resource, "reason": "migration ticket CR-17",
                                 "expires": expires}]
    return mutate


_US_TELEMETRY = _set("telemetry", "jurisdiction", "US")

# rule id -> (severity, how to violate it starting from the passing demo site)
VIOLATIONS: dict[str, tuple[str, Mutation]] = {
    "RES-001": ("deny", _set("data_stores", "jurisdiction", "US")),
    "RES-002": ("deny", _set("backups", "jurisdiction", "JP")),
    "RES-003": ("deny", _US_TELEMETRY),
    "RES-004": ("deny", _set("log_sinks", "jurisdiction", "US")),
    "RES-005": ("deny", _set("model_registries", "jurisdiction", "US")),
    "RES-006": ("deny", _set("endpoints", "jurisdiction", "US")),
    "RES-007": ("deny", _mirror("US")),
    "RES-008": ("deny", _residency(allowed_jurisdictions=["KR-26"])),
    "RES-009": ("deny", _set("hosts", "labels", {"jurisdiction": "JP"})),
    "RES-010": ("deny", _egress("https://updates.vendor.example")),
    "RES-011": ("deny", _all(_residency(air_gapped=False), _egress("https://telemetry.vendor.example/v1"))),
    "RES-012": ("deny", _all(_residency(allowed_jurisdictions=["KR", "JP"]),
                             _set("data_stores", "jurisdiction", "JP"))),
    "PRV-001": ("deny", _set("models", "version", "latest")),
    "PRV-002": ("deny", _drop("models", "signature")),
    "PRV-003": ("deny", _rogue_signature("models")),
    "PRV-004": ("deny", _set("models", "license", "proprietary-eula")),
    "PRV-005": ("deny", _drop("models", "card")),
    "PRV-006": ("warn", _set("models", "signature_format", "model-signing")),
    "PRV-007": ("deny", _set("models", "license", "proprietary-eula")),
    "PRV-008": ("warn", _set("models", "base_models", [{"name": "qwen2.5-7b", "publisher": "alibaba",
                                                       "origin": "CN", "license": "apache-2.0"}])),
    "FW-001": ("deny", _set("firmware", "version", "latest")),
    "FW-002": ("deny", _vendor_acme),
    "FW-003": ("deny", _drop("firmware", "signature")),
    "FW-004": ("deny", _rogue_signature("firmware")),
    "FW-005": ("deny", _newer_firmware_installed),
    "FW-006": ("warn", _mirror()),
    "RT-001": ("deny", _set("runtimes", "version", "latest")),  # ">=1.0" is now refused at validation
    "RT-002": ("deny", _drop("runtimes", "vendor")),
    "RT-003": ("deny", _drop("runtimes", "signature")),
    "RT-004": ("deny", _rogue_signature("runtimes")),
    "RT-005": ("deny", _newer_runtime_installed),
    "RT-006": ("warn", _mirror()),
    "CAP-001": ("deny", _budget_of_peak(0.9)),
    "CAP-002": ("warn", _budget_of_peak(1.05)),
    "CAP-003": ("deny", _huge_weights),
    "CAP-004": ("deny", _all(_set("deployments", "tensor_parallel", 4), _drop("deployments", "devices"))),
    "CAP-005": ("warn", _unknown_tdp),
    "SV-008": ("warn", _targets(ttft_ms=1e-6, tpot_ms=1e-6)),
    "SV-009": ("warn", _all(lambda site: site.model("demo-ko-chat").pop("config"), _targets(tpot_ms=50))),
    "WVR-001": ("deny", _all(_US_TELEMETRY, _waiver(-1))),
    "WVR-002": ("warn", _waiver(90, "RES-001", "data_stores/nowhere")),
    "WVR-003": ("warn", _all(_US_TELEMETRY, _waiver(10))),
}


def _documented_rule_ids() -> set[str]:
    text = (ROOT / "policies" / "README.md").read_text()
    return set(re.findall(r"\b([A-Z]{2,3}-\d{3})\b", text))


def _pack_rule_ids() -> set[str]:
    ids: set[str] = set()
    for f in (ROOT / "policies").glob("*.rego"):
        if not f.name.endswith("_test.rego"):
            ids |= set(re.findall(r'"([A-Z]{2,3}-\d{3})"', f.read_text()))
    return ids


def test_every_rule_in_the_pack_has_a_violating_inventory_and_is_documented() -> None:
    """Serving rules (SV-*) have their violating and passing sites in tests/test_serving_policy.py, records rules
    (LOG-*, DOC-*, GEN-*) in tests/test_policy_records.py."""
    assert _pack_rule_ids() == set(VIOLATIONS) | set(SERVING_RULES) | set(RECORDS_RULES)
    assert _documented_rule_ids() == set(VIOLATIONS) | set(SERVING_RULES) | set(RECORDS_RULES)


def _check(cli: Callable[..., CliResult], path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    r = cli("check", path, "--json", *extra)
    assert r.out.strip(), r.err
    return r.code, json.loads(r.out)


@pytest.mark.parametrize("rule", sorted(VIOLATIONS))
def test_check_names_the_violated_rule(rule: str, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    severity, mutate = VIOLATIONS[rule]
    site = make_site(tmp_path)
    mutate(site)
    code, decision = _check(cli, site.save())
    hits = [f for f in decision["findings"] if f["id"] == rule and not f.get("waived")]
    assert hits, f"{rule} not reported: {[f['id'] for f in decision['findings']]}"
    assert {f["severity"] for f in hits} == {severity}
    for f in hits:
        assert set(f) == {"id", "severity", "msg", "resource", "remediation"}
        assert f["msg"] and f["remediation"] and "/" in f["resource"]
    if severity == "deny":
        assert code == 3 and decision["allowed"] is False
    else:
        assert code == 0 and decision["allowed"] is True


@pytest.mark.parametrize("site", ["demo", "kr-telco", "eu-sovereign"])
def test_shipped_sites_pass(site: str, cli: Callable[..., CliResult]) -> None:
    code, decision = _check(cli, INVENTORIES / site)
    assert code == 0, decision
    assert decision["allowed"] is True
    assert not [f for f in decision["findings"] if f["severity"] == "deny"]
    assert decision["engine"] == "embedded" and len(decision["pack_digest"]) == 64


def test_waived_finding_is_allowed_and_stays_visible(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    _all(_US_TELEMETRY, _waiver(200))(site)
    code, decision = _check(cli, site.save())
    assert code == 0 and decision["allowed"] is True
    waived = [f for f in decision["findings"] if f.get("waived")]
    assert [(f["id"], f["resource"], f["severity"]) for f in waived] == [("RES-003", "telemetry/metrics", "deny")]
    assert waived[0]["waived"]["reason"] == "migration ticket CR-17"
    r = cli("check", site.path)
    assert r.code == 0
    assert "waived" in r.out and "RES-003" in r.out and "migration ticket CR-17" in r.out


def test_human_output_groups_findings_and_exit_3(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    _all(_US_TELEMETRY, _budget_of_peak(1.05))(site)
    r = cli("check", site.save())
    assert r.code == 3
    deny_at, warn_at = r.out.index("RES-003"), r.out.index("CAP-002")
    assert deny_at < warn_at, "deny rows come before warn rows"
    assert "DENIED" in r.out and "1 deny, 1 warn, 0 waived" in r.out
    assert "policy denies this inventory" in r.err


def test_recorded_state_is_part_of_the_input(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    _newer_firmware_installed(site)
    r = cli("policy", "input", site.save())
    assert r.code == 0
    doc = json.loads(r.out)
    host = next(s for s in doc["host_shapes"] if any("npu-node-1" in r["hosts"] for r in s["racks"]))
    assert host["recorded"]["firmware"] == {"rebellions-atom-max": "1.10.0"}
    assert doc["state"]["serial"] == 1
