"""OSCAL in the audit pack: the control mapping, trestle-valid documents that agree with the report, tampering.

One pack (eu-sovereign with an offshore log sink: RES-004 denies) is written once for the module, the way
tests/test_audit_pack.py writes its packs; each tamper test works on a copy.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from trestle.common.const import VAL_MODE_ALL
from trestle.core.validator_factory import validator_factory
from trestle.oscal import assessment_results as ar
from trestle.oscal import component as cd

from sovkit.audit import oscal
from sovkit.audit.manifest import make_manifest, write_signed_manifest
from sovkit.audit.model import AuditReport
from sovkit.policy.pack import load_pack
from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.signing.manifest import MANIFEST
from tests.conftest import INVENTORIES, ROOT, CliResult, run_cli
from tests.sitefactory import Site

Cli = Callable[..., CliResult]
# The rule ids issue 15 adds (policies/records.rego, another branch): mapped before they land.
RECORDS = {"LOG-001", "LOG-002", "LOG-003", "LOG-004", "DOC-001", "GEN-001", "GEN-002"}
AR, CD = oscal.ASSESSMENT_RESULTS, oscal.COMPONENT_DEFINITION


# --- the mapping -----------------------------------------------------------------------------------------------


def test_every_rule_of_the_pack_is_mapped_and_nothing_else() -> None:
    rego = set(oscal.rule_ids(load_pack().modules))
    assert {"RES-001", "PRV-003", "SV-009", "WVR-003"} <= rego, "rule ids are read from the Rego files"
    mapping = oscal.load_mapping()
    assert rego - set(mapping.rules) == set(), "every rule in policies/*.rego needs a control mapping"
    assert set(mapping.rules) == rego, "the mapping names rules that do not exist"
    assert rego >= RECORDS, "the records rules (policies/records.rego) are mapped too"


def test_uncovered_controls_are_exactly_the_unmapped_ones_and_each_says_why() -> None:
    mapping = oscal.load_mapping()
    every = {c.id for cat in mapping.catalogs for c in cat.controls}
    mapped = {c for m in mapping.rules.values() for c in m.controls}
    assert {u.control for u in mapping.uncovered} == every - mapped
    assert {c.id.split("-")[0] for cat in mapping.catalogs for c in cat.controls} >= {
        "euaiact", "gdpr", "kr", "iso42001", "itu"}
    assert {"euaiact-art12", "euaiact-art19", "gdpr-art46", "kr-pipa-art28-8", "kr-aiba-art36"} <= mapped


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["rules"]["RES-001"].update(extra=1), "Extra inputs are not permitted"),
    (lambda d: d["rules"]["RES-001"].update(controls=["nope-1"]), "rules map to controls no catalog lists"),
    (lambda d: d["uncovered"].pop(0), "neither mapped nor listed as uncovered"),
    (lambda d: d["uncovered"].append({"control": "gdpr-art44", "reason": "x"}), "both mapped and listed"),
])
def test_mapping_model_refuses_a_bad_mapping(tmp_path: Path, edit: Callable[[dict[str, object]], None],
                                             message: str) -> None:
    data = yaml.safe_load(oscal.shipped_mapping_path().read_text())
    edit(data)
    with pytest.raises(ValidationError, match=message):
        oscal.ControlMapping.model_validate(data)


def test_docs_carry_the_mapping_table() -> None:
    doc = (ROOT / "docs/regulators.md").read_text()
    assert oscal.mapping_table(oscal.load_mapping()) in doc, "regenerate it with oscal.mapping_table()"


# --- a pack ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """eu-sovereign plus a log sink in SG: RES-004 denies the site; the rest passes or warns."""
    root = tmp_path_factory.mktemp("oscal")
    site_dir = root / "site"
    shutil.copytree(INVENTORIES / "eu-sovereign", site_dir)
    site = Site(site_dir)
    site.data["log_sinks"].append({"name": "offshore", "url": "https://logs.example.sg", "jurisdiction": "SG",
                                   "retention_days": 30})
    site.save()
    key = root / "operator.key"
    pub = write_keypair(LocalSigner.generate(), key, None)
    out = root / "pack"
    r = run_cli("audit", site_dir, "-o", out, "--key", key, "--state-dir", root / "state")
    assert r.code == 0, r.text
    return out, key, pub


def _copy(pack: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    return copy


def _steps(r: CliResult) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in json.loads(r.out)["steps"]}


def test_oscal_files_are_signed_and_trestle_validates_them(pack: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, _, _ = pack
    listed = {e["path"] for e in json.loads((out / MANIFEST).read_text())["files"]}
    assert {AR, CD, oscal.MAPPING_COPY} <= listed
    validator = validator_factory.get(argparse.Namespace(mode=VAL_MODE_ALL))
    for rel, model in ((AR, ar.AssessmentResults), (CD, cd.ComponentDefinition)):
        doc = model.oscal_read(out / rel)
        assert doc is not None and validator.model_is_valid(doc, True, None), rel
    # trestle's own command line, exactly as docs/regulators.md gives it
    ws = tmp_path / "trestle"
    ws.mkdir()
    assert subprocess.run(["trestle", "init"], cwd=ws, capture_output=True).returncode == 0
    for rel, folder in ((AR, "assessment-results"), (CD, "component-definitions")):
        (ws / folder / "pack").mkdir()
        shutil.copyfile(out / rel, ws / folder / "pack" / Path(rel).name)
    done = subprocess.run(["trestle", "validate", "-a"], cwd=ws, capture_output=True, text=True)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    for name in ("assessment-results/pack/assessment-results.json", "component-definitions/pack/component-"
                                                                    "definition.json"):
        assert f"VALID: Model {ws}/{name}" in said, said


def test_every_rule_is_an_observation_and_each_denial_a_finding_per_control(pack: tuple[Path, Path, Path]
                                                                             ) -> None:
    out, _, _ = pack
    report = AuditReport.model_validate_json((out / "report.json").read_text())
    doc = ar.AssessmentResults.oscal_read(out / AR)
    assert doc is not None
    (result,) = doc.results
    observed = {next(p.value for p in o.props if p.name == "rule-id"): o for o in result.observations or []}
    with __import__("tarfile").open(out / "policy/bundle.tar.gz") as tar:
        rego = "".join(tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".rego"))  # type: ignore[union-attr]
    assert set(observed) == set(re.findall(r'"([A-Z][A-Z0-9]*-[0-9]{3})"', rego))
    res004 = observed["RES-004"]
    assert {p.value for p in res004.props if p.name == "result"} == {"fail"}
    assert {p.value for p in res004.props if p.name == "resource"} == {"log_sinks/offshore"}
    assert {p.value for p in observed["PRV-003"].props if p.name == "result"} == {"pass"}
    digests = {p.value for e in observed["PRV-003"].relevant_evidence or [] for p in e.props or []
               if p.name == "artifact-digest"}
    pinned = {f"sha256:{f['sha256']}" for m in json.loads((out / "policy/input.json").read_text())["models"]
              for f in m["files"]}
    assert digests == pinned and pinned
    findings = {(f.target.target_id, f.target.status.state.value, next((p.value for p in f.props or []
                                                                         if p.name == "resource"), None))
                for f in result.findings or [] if f.target.status}
    for control in oscal.load_mapping().rules["RES-004"].controls:
        assert (control, "not-satisfied", "log_sinks/offshore") in findings
    assert ("iso42001-a.10.3", "satisfied", None) in findings
    assert report.controls is not None
    status = {c.control: c.status for c in report.controls.controls}
    assert status["gdpr-art44"] == "not-satisfied" and status["iso42001-a.10.3"] == "satisfied"
    # stable: rebuilt from the pack's own report, the same ids and bytes
    again = oscal.assessment_results(report, report.controls, oscal.input_sha256(out / "policy/input.json"))
    assert again.oscal_serialize_json(pretty=True) + "\n" == (out / AR).read_text()
    assert str(result.start).startswith(report.generated_at[:19].replace("T", " ")) or \
        result.start.isoformat().startswith(report.generated_at[:19])


def test_html_report_has_the_control_view(pack: tuple[Path, Path, Path]) -> None:
    html = (pack[0] / "report.html").read_text()
    view = html[html.index('id="control-view"'):html.index('id="uncovered-controls"')]
    assert "Art. 44" in view and "RES-004" in view and "not-satisfied" in view and "log_sinks/offshore" in view
    assert "Human oversight" in html[html.index('id="uncovered-controls"'):]


def _set_result(path: Path, rule: str, value: str) -> None:
    data = json.loads(path.read_text())
    for o in data["assessment-results"]["results"][0]["observations"]:
        if any(p["name"] == "rule-id" and p["value"] == rule for p in o["props"]):
            for p in o["props"]:
                if p["name"] == "result":
                    p["value"] = value
    path.write_text(json.dumps(data, indent=2))


def test_changed_result_without_the_key_is_caught_by_the_digests(pack: tuple[Path, Path, Path], tmp_path: Path,
                                                                 cli: Cli) -> None:
    """An attacker without the operator key edits a result: the signed manifest's digest no longer matches."""
    out, _, pub = pack
    copy = _copy(out, tmp_path)
    _set_result(copy / AR, "RES-004", "pass")
    r = cli("verify", copy, "--key", pub, "--json")
    assert r.code == 1 and "Traceback" not in r.err
    steps = _steps(r)
    assert steps["manifest-signature"]["status"] == "ok"
    assert any(f"{AR}: s" in p for p in steps["file-digests"]["problems"])  # type: ignore[attr-defined]
    assert steps["oscal"]["status"] == "failed"


def test_changed_result_resigned_with_the_operator_key_is_caught_by_the_oscal_step(
        pack: tuple[Path, Path, Path], tmp_path: Path, cli: Cli) -> None:
    """The manifest re-signed with the operator's own key (an insider, or a bug): only the oscal step can tell."""
    out, key, pub = pack
    copy = _copy(out, tmp_path)
    _set_result(copy / AR, "RES-004", "pass")
    manifest = json.loads((copy / MANIFEST).read_text())
    write_signed_manifest(copy, make_manifest(copy, manifest["site"], manifest["created"]), LocalSigner.load(key, None))
    r = cli("verify", copy, "--key", pub, "--json")
    assert r.code == 1
    steps = _steps(r)
    for ok in ("manifest-signature", "file-set", "file-digests", "report", "policy-decision"):
        assert steps[ok]["status"] == "ok", (ok, steps[ok])
    assert steps["oscal"]["status"] == "failed"
    assert f"{AR}: rule RES-004 observed as pass, report.json's findings give fail" in steps["oscal"]["problems"]


def test_dropped_finding_and_unknown_rule_in_the_component_definition_are_named(
        pack: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from sovkit.audit.verify import verify_audit_pack
    from sovkit.signing.keys import PublicKey

    out, _, pub = pack
    copy = _copy(out, tmp_path)
    data = json.loads((copy / AR).read_text())
    findings = data["assessment-results"]["results"][0]["findings"]
    data["assessment-results"]["results"][0]["findings"] = [
        f for f in findings if not (f["target"]["target-id"] == "gdpr-art44"
                                    and f["target"]["status"]["state"] == "not-satisfied")]
    (copy / AR).write_text(json.dumps(data))
    comp = json.loads((copy / CD).read_text())
    comp["component-definition"]["components"][0]["props"].append({"name": "Rule_Id", "value": "XYZ-999"})
    (copy / CD).write_text(json.dumps(comp))
    step = next(s for s in verify_audit_pack(copy, [PublicKey.load(pub)]).steps if s.name == "oscal")
    assert step.status == "failed"
    assert f"{AR}: missing finding gdpr-art44 not-satisfied (RES-004 on log_sinks/offshore)" in step.problems
    assert any(p.startswith(f"{CD}: rules ['XYZ-999']") for p in step.problems), step.problems


def test_a_document_trestle_refuses_is_refused(pack: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, _, _ = pack
    copy = _copy(out, tmp_path)
    data = json.loads((copy / AR).read_text())
    data["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = "mostly-fine"
    (copy / AR).write_text(json.dumps(data))
    _, problems = oscal.trestle_problems(copy / AR, ar.AssessmentResults)
    assert problems and problems[0].startswith(f"{AR}: not a valid OSCAL AssessmentResults"), problems
