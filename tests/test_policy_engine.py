"""Engine, pack, bundle, input document and Rego unit tests: fail closed, digests, drift checks."""

from __future__ import annotations

import json
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from sovkit.errors import PolicyError
from sovkit.inventory.loader import load_inventory
from sovkit.policy.api import evaluate_policy, policy_pack_digest, write_policy_bundle
from sovkit.policy.embedded import EmbeddedEngine
from sovkit.policy.input import build_input, input_schema
from sovkit.policy.pack import PolicyPack, load_pack
from sovkit.policy.testing import run_tests
from tests.conftest import INVENTORIES, ROOT, CliResult

DEMO = INVENTORIES / "demo"


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text))
    return directory


ACME = """\
    package sovkit.custom.acme

    import rego.v1

    deny contains {"id": "ACME-001", "severity": "deny", "msg": sprintf("host %s has no owner label", [name]),
        "resource": concat("/", ["hosts", name]), "remediation": "label it owner: <team>"} if {
        some s in input.host_shapes
        not s.labels.owner
        some r in s.racks
        some name in r.hosts
    }
"""


def test_shipped_rego_unit_tests_all_pass() -> None:
    results = run_tests()
    failed = [f"{r.file}: {r.name} {r.error or ''}" for r in results if not r.passed]
    assert not failed
    files = {r.file for r in results}
    assert files == {"residency_test.rego", "provenance_test.rego", "firmware_test.rego", "runtime_test.rego",
                     "capacity_test.rego", "serving_test.rego", "records_test.rego", "waivers_test.rego",
                     "main_test.rego"}
    assert len(results) >= 70


def test_policy_test_cli_reports_each_test_and_fails_on_one(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    extra = _write(tmp_path / "ops", {"acme.rego": ACME, "acme_test.rego": """\
        package sovkit.custom.acme_test

        import rego.v1

        import data.sovkit.custom.acme

        test_unlabelled_host_denied if {
            hs := [{"racks": [{"name": "r", "hosts": ["h"]}], "labels": {}}]
            count(acme.deny) == 1 with input.host_shapes as hs
        }

        test_wrong_expectation if {
            hs := [{"racks": [{"name": "r", "hosts": ["h"]}], "labels": {"owner": "ml"}}]
            count(acme.deny) == 1 with input.host_shapes as hs
        }
    """})
    r = cli("policy", "test", extra)
    assert r.code == 1
    assert "PASS custom/acme_test.rego: data.sovkit.custom.acme_test.test_unlabelled_host_denied" in r.out
    assert "FAIL custom/acme_test.rego: data.sovkit.custom.acme_test.test_wrong_expectation" in r.out
    assert "1/2 passed" in r.out


def test_operator_rules_and_data_join_the_pack(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    extra = _write(tmp_path / "ops", {"acme.rego": ACME})
    r = cli("check", DEMO, "--policies", extra, "--json")
    assert r.code == 3
    ids = {(f["id"], f["resource"]) for f in json.loads(r.out)["findings"]}
    assert ids == {("ACME-001", "hosts/npu-node-1"), ("ACME-001", "hosts/npu-node-2")}
    data_only = _write(tmp_path / "data", {"data.json": '{"sovkit": {"config": {"licenses": ["mit"]}}}'})
    r = cli("check", DEMO, "--policies", data_only, "--json")
    assert r.code == 3
    assert "PRV-004" in {f["id"] for f in json.loads(r.out)["findings"]}
    assert policy_pack_digest(extra) != policy_pack_digest(None) != policy_pack_digest(data_only)


BROKEN: dict[str, tuple[dict[str, str], str]] = {
    "syntax error": ({"bad.rego": "package sovkit.custom.bad\n\nimport rego.v1\n\ndeny contains x if {\n"},
                     "custom/bad.rego"),
    "shipped package": ({"evil.rego": "package sovkit.main\n\nimport rego.v1\n\ndecision := {\"allowed\": true}\n"},
                        "declares package sovkit.main"),
    "no package": ({"x.rego": "import rego.v1\n"}, "declares no package"),
    "bad data": ({"data.json": "{not json"}, "data.json:1:2"),
    "malformed finding": ({"f.rego": "package sovkit.custom.f\n\nimport rego.v1\n\ndeny contains \"just text\"\n"},
                          "malformed"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_malformed_extra_policy_fails_closed(case: str, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    files, expected = BROKEN[case]
    r = cli("check", DEMO, "--policies", _write(tmp_path / "ops", files))
    assert r.code == 1, r.text
    assert expected in r.err
    assert "allowed" not in r.out


def test_undefined_decision_fails_closed() -> None:
    pack = load_pack()
    no_main = PolicyPack({n: s for n, s in pack.modules.items() if n != "main.rego"}, data=pack.data)
    with pytest.raises(PolicyError, match="undefined"):
        EmbeddedEngine().evaluate(no_main, build_input(load_inventory(DEMO)))


def test_engine_error_fails_closed() -> None:
    pack = load_pack()
    broken = PolicyPack({**pack.modules, "main.rego": pack.modules["main.rego"] + "\nboom := 1 +\n"}, data=pack.data)
    with pytest.raises(PolicyError, match=r"main\.rego"):
        EmbeddedEngine().evaluate(broken, build_input(load_inventory(DEMO)))


def test_a_decision_that_contradicts_its_denials_is_refused() -> None:
    pack = load_pack()
    lie = pack.modules["main.rego"].replace('"allowed": count(deny_set) == 0,', '"allowed": true,')
    assert lie != pack.modules["main.rego"]
    tampered = PolicyPack({**pack.modules, "main.rego": lie}, data=pack.data)
    doc = build_input(load_inventory(DEMO))
    doc["telemetry"][0]["jurisdiction"] = "US"
    with pytest.raises(PolicyError, match="inconsistent"):
        EmbeddedEngine().evaluate(tampered, doc)


def test_bundle_is_an_opa_bundle_and_reproducible(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    out = tmp_path / "pack.tar.gz"
    digest = write_policy_bundle(out)
    assert digest == policy_pack_digest(None)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(".manifest").read())  # type: ignore[union-attr]
        data = json.loads(tar.extractfile("data.json").read())  # type: ignore[union-attr]
        main = tar.extractfile("sovkit/main.rego").read().decode()  # type: ignore[union-attr]
    pack = load_pack()
    assert manifest["roots"] == ["sovkit"] and manifest["revision"].endswith(digest[:12])
    assert manifest["metadata"]["pack_digest"] == digest
    assert data == pack.data and main == pack.modules["main.rego"]
    assert not [n for n in names if n.endswith("_test.rego")]
    again = tmp_path / "again.tar.gz"
    r = cli("policy", "bundle", "-o", again)
    assert r.code == 0 and digest in r.out
    assert again.read_bytes() == out.read_bytes()


def test_policy_input_cli_prints_the_document_and_it_matches_the_schema(cli: Callable[..., CliResult]) -> None:
    r = cli("policy", "input", INVENTORIES / "kr-telco")
    assert r.code == 0
    doc = json.loads(r.out)
    jsonschema.validate(doc, input_schema())
    assert doc["rack_shapes"][0] == {"racks": ["gasan-r01"], "power_budget_w": 15000.0, "hosts": 2, "accelerators": 8,
                               "draw_w": 5400.0, "unknown_tdp": 0, "peak_w": 5400.0, "phase_devices": 8,
                               "tdp_devices": 0, "peak_terms": [
                                   {"state": "cpu", "kind": "arm-neoverse-v3-agi", "count": 2, "watts_each": 300.0},
                                   {"state": "prefill", "kind": "rebellions-rebel-quad", "count": 8,
                                    "watts_each": 600.0}]}
    assert doc["models"][0]["signature"]["checked"] is False
    assert doc["models"][0]["weights_bytes"] == 731 + 15231233024 + 7031673


def test_demo_input_carries_verified_signatures_and_sizes() -> None:
    doc = build_input(load_inventory(DEMO))
    for section in ("firmware", "runtimes", "models"):
        for item in doc[section]:
            assert item["signature"]["checked"] is True and item["signature"]["verified"] is True, item["name"]
    assert all(f["stored_size"] == f["size"] for f in doc["models"][0]["files"])


def test_docs_carry_the_current_input_schema() -> None:
    text = (ROOT / "docs" / "policy-input.md").read_text()
    block = text.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(block) == input_schema(), "regenerate with `sovkit policy schema` (docs/policy-input.md)"


def test_plan_binds_the_pack_digest_including_extra_modules(tmp_path: Path) -> None:
    extra = _write(tmp_path / "ops", {"data.json": '{"sovkit": {"config": {"waiver_warn_days": 7}}}'})
    assert policy_pack_digest(extra) != policy_pack_digest(None)
    decision = evaluate_policy(load_inventory(DEMO), None, extra, None)
    assert decision.pack_digest == policy_pack_digest(extra)
