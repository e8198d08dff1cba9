"""`sovkit audit` / `sovkit verify`: packs for example sites and for a really applied site; tampering is caught.

The applied site is the demo site on local-connection hosts (real Ansible, simulated NPUs), applied once
for the module, then one model file is changed behind sovkit's back and `sovkit refresh` records the drift.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from sovkit.audit.model import REPORT_SCHEMA
from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.signing.manifest import ENVELOPE, MANIFEST
from tests.conftest import INVENTORIES, ROOT, CliResult, run_cli
from tests.sitefactory import Site, make_site

EXAMPLES = ["demo", "eu-sovereign", "kr-telco"]
Cli = Callable[..., CliResult]


def _keypair(directory: Path, name: str = "auditor.key") -> tuple[Path, Path]:
    key = directory / name
    return key, write_keypair(LocalSigner.generate(), key, None)


def _steps(r: CliResult) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in json.loads(r.out)["steps"]}


# --- example inventories, no state ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_packs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("examples")
    key, pub = _keypair(root)
    packs = {}
    for name in EXAMPLES:
        out = root / f"pack-{name}"
        r = run_cli("audit", INVENTORIES / name, "-o", out, "--key", key, "--state-dir", root / f"state-{name}")
        assert r.code == 0, r.text
        assert "audit pack for" in r.out and "files signed" in r.out
        packs[name] = (out, pub)
    return packs


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_pack_has_every_part_and_verifies(example_packs: dict[str, tuple[Path, Path]], example: str,
                                                  cli: Cli) -> None:
    pack, pub = example_packs[example]
    files = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file()}
    report = json.loads((pack / "report.json").read_text())
    boms = {f"bom/{m['model']}.cdx.json" for m in report["model_boms"]}
    inv = yaml.safe_load((INVENTORIES / example / "site.yaml").read_text())
    keys = {f"inventory/{k['public_key']}" for section in inv["trust_roots"].values() for k in section}
    assert files == {"report.html", "report.json", "policy/bundle.tar.gz", "policy/input.json", "inventory/site.yaml",
                     "policy/controls.yaml", "oscal/assessment-results.json", "oscal/component-definition.json",
                     MANIFEST, ENVELOPE} | boms | keys
    assert report["schema"] == REPORT_SCHEMA
    assert report["installed"] == [] and report["attestations"] == [] and report["drift"] is None
    assert report["overview"]["state_lineage"] == ""
    flows = {(f["category"], f["name"]) for f in report["data_flows"]}
    for section, category in (("data_stores", "data-store"), ("backups", "backup"), ("endpoints", "endpoint"),
                              ("telemetry", "telemetry"), ("log_sinks", "log-sink"),
                              ("model_registries", "model-registry")):
        for item in inv.get(section, []):
            assert (category, item["name"]) in flows, (category, item["name"])
    manifest = json.loads((pack / MANIFEST).read_text())
    assert {e["path"] for e in manifest["files"]} == files - {MANIFEST, ENVELOPE}
    r = cli("verify", pack, "--key", pub)
    assert r.code == 0, r.text
    for step in ("manifest-signature", "file-set", "file-digests", "report", "oscal", "ml-bom", "policy-decision",
                 "trust-roots", "attestation-log"):
        assert f"✓ {step}" in r.out
    assert "audit pack verifies" in r.out


def test_residency_of_each_flow_follows_the_allowed_jurisdictions(example_packs: dict[str, tuple[Path, Path]]
                                                                  ) -> None:
    report = json.loads((example_packs["eu-sovereign"][0] / "report.json").read_text())
    allowed = set(report["overview"]["allowed_jurisdictions"])
    for f in report["data_flows"]:
        inside = f["jurisdiction"] in allowed or f["jurisdiction"].split("-")[0] in allowed
        assert (f["residency"] == "inside") == inside, f


def test_outside_flow_is_reported_and_denied(tmp_path: Path) -> None:
    root = tmp_path / "site"
    shutil.copytree(INVENTORIES / "eu-sovereign", root)
    site = Site(root)
    site.data["log_sinks"].append({"name": "offshore", "url": "https://logs.example.sg", "jurisdiction": "SG",
                                   "retention_days": 30})
    site.save()
    key, _ = _keypair(tmp_path)
    r = run_cli("audit", site.path, "-o", tmp_path / "pack", "--key", key, "--state-dir", tmp_path / "state")
    assert r.code == 0, r.text  # a denied site still gets its audit pack: the denial is the finding
    assert "policy: DENIED" in r.out
    report = json.loads((tmp_path / "pack/report.json").read_text())
    flows = {f["name"]: f for f in report["data_flows"]}
    assert flows["offshore"]["residency"] == "outside" and flows["offshore"]["jurisdiction"] == "SG"
    html = (tmp_path / "pack/report.html").read_text()
    assert "OUTSIDE" in html and "https://logs.example.sg" in html and "DENIED" in html
    policy = report["policy"]
    assert policy["allowed"] is False, "a log sink outside the allowed jurisdictions must be denied"
    denied = [f for f in policy["findings"] if f["severity"] == "deny" and not f["waived"]]
    assert any("offshore" in f["resource"] or "offshore" in f["msg"] for f in denied), denied


def test_flow_to_a_transfer_destination_names_its_legal_basis(tmp_path: Path) -> None:
    from sovkit.audit.collect import data_flows
    from sovkit.inventory import load_inventory

    root = tmp_path / "site"
    shutil.copytree(INVENTORIES / "eu-sovereign", root)
    site = Site(root)
    site.data["telemetry"].append({"name": "vendor-apm", "url": "https://apm.example.com", "jurisdiction": "US"})
    site.data["residency"]["transfers"].append({"name": "us-apm", "destination": "US", "basis": "scc",
                                                "reference": "SCC 2021/914 module 2"})
    site.save()
    flows = {f.name: f for f in data_flows(load_inventory(site.path))}
    assert flows["vendor-apm"].residency == "transfer"
    assert flows["vendor-apm"].transfer_basis == "scc (SCC 2021/914 module 2)"
    assert flows["registry"].residency == "inside"


def test_waived_findings_are_reported_with_their_waiver(tmp_path: Path) -> None:
    root = tmp_path / "site"
    shutil.copytree(INVENTORIES / "kr-telco", root)
    site = Site(root)
    site.data["waivers"] = [{"rule": "PRV-008", "resource": "models/ax-4-light",
                             "reason": "base model reviewed: MSIT review 2026-031", "expires": "2099-12-31"}]
    site.save()
    key, _ = _keypair(tmp_path)
    r = run_cli("audit", site.path, "-o", tmp_path / "pack", "--key", key, "--state-dir", tmp_path / "state")
    assert r.code == 0, r.text
    policy = json.loads((tmp_path / "pack/report.json").read_text())["policy"]
    (waived,) = [f for f in policy["findings"] if f["id"] == "PRV-008"]
    assert waived["waived"] is True and waived["waiver_reason"] == "base model reviewed: MSIT review 2026-031"
    assert policy["waivers"] == [{"rule": "PRV-008", "resource": "models/ax-4-light",
                                  "reason": "base model reviewed: MSIT review 2026-031", "expires": "2099-12-31",
                                  "expired": False}]
    html = (tmp_path / "pack/report.html").read_text()
    assert "waived: base model reviewed: MSIT review 2026-031 (until 2099-12-31)" in html


def test_manifest_signature_verifies_with_securesystemslib_and_files_with_sha256sum(
        example_packs: dict[str, tuple[Path, Path]]) -> None:
    """A regulator without sovkit: DSSE via securesystemslib, digests via coreutils sha256sum."""
    pack, pub = example_packs["kr-telco"]
    key = SSlibKey.from_crypto(serialization.load_pem_public_key(pub.read_bytes()))  # type: ignore[arg-type]
    envelope = Envelope.from_dict(json.loads((pack / ENVELOPE).read_text()))
    assert key.keyid in envelope.verify([key], 1)
    assert envelope.payload == (pack / MANIFEST).read_bytes()
    manifest = json.loads(envelope.payload)
    sums = "".join(f"{e['sha256']}  {e['path']}\n" for e in manifest["files"])
    ok = subprocess.run(["sha256sum", "--strict", "-c", "-"], input=sums, text=True, cwd=pack, capture_output=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(": OK") == len(manifest["files"])
    (pack / "report.json").rename(pack / "report.json.bak")
    try:
        bad = subprocess.run(["sha256sum", "-c", "-"], input=sums, text=True, cwd=pack, capture_output=True)
    finally:
        (pack / "report.json.bak").rename(pack / "report.json")
    assert bad.returncode != 0 and "report.json: FAILED open or read" in bad.stdout


def test_verify_needs_no_network(example_packs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """`sovkit verify` in a namespace with no network at all: the regulator's air-gapped laptop."""
    pack, pub = example_packs["demo"]
    ok = run_cli_offline(["verify", str(pack), "--key", str(pub)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit pack verifies" in ok.stdout
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    _flip(copy / "report.html")
    bad = run_cli_offline(["verify", str(copy), "--key", str(pub)])
    assert bad.returncode == 1 and "report.html: sha256" in bad.stdout


def run_cli_offline(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(["unshare", "-n", sys.executable, "-m", "sovkit", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def test_policy_bundle_is_a_gzip_tar_of_the_policy_pack(example_packs: dict[str, tuple[Path, Path]]) -> None:
    pack, _ = example_packs["demo"]
    with tarfile.open(pack / "policy/bundle.tar.gz", "r:gz") as tar:
        names = tar.getnames()
    assert ".manifest" in names and "data.json" in names, names
    assert "sovkit/main.rego" in names and "sovkit/residency.rego" in names, names
    report = json.loads((pack / "report.json").read_text())
    assert report["policy"]["bundle"] == "policy/bundle.tar.gz"
    assert len(report["policy"]["pack_digest"]) == 64


# --- refusals: nothing written ------------------------------------------------------------------------------


def test_refuses_a_non_empty_output_directory(tmp_path: Path, cli: Cli) -> None:
    key, _ = _keypair(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("audit", INVENTORIES / "demo", "-o", out, "--key", key, "--state-dir", tmp_path / "s")
    assert r.code == 1
    assert f"{out} already exists and is not an empty directory" in r.err and "Traceback" not in r.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_missing_signing_key_writes_nothing(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "out"
    r = cli("audit", INVENTORIES / "demo", "-o", out, "--key", tmp_path / "nope.key", "--state-dir", tmp_path / "s")
    assert r.code == 1 and "signing key" in r.err and "nope.key not found" in r.err
    assert not out.exists()


def test_encrypted_key_without_passphrase_writes_nothing(tmp_path: Path, cli: Cli,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOVKIT_KEY_PASSPHRASE", raising=False)
    key = tmp_path / "enc.key"
    write_keypair(LocalSigner.generate(), key, b"secret passphrase")
    out = tmp_path / "out"
    r = cli("audit", INVENTORIES / "demo", "-o", out, "--key", key, "--state-dir", tmp_path / "s")
    assert r.code == 1 and "encrypted and no passphrase" in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.key", "enc.key.pub"]


def test_verify_of_something_that_is_not_a_pack(tmp_path: Path, cli: Cli) -> None:
    _, pub = _keypair(tmp_path)
    r = cli("verify", tmp_path / "missing", "--key", pub)
    assert r.code == 1 and "is not a directory" in r.err
    (tmp_path / "empty").mkdir()
    r = cli("verify", tmp_path / "empty", "--key", pub)
    assert r.code == 1 and "manifest.json is missing from the pack" in r.out
    assert "does not verify (manifest-signature, report)" in r.err


# --- a really applied site -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Site, Path, Path]:
    """Apply the demo site, change a model file on npu-node-2 by hand, refresh, then write the audit pack."""
    site = make_site(tmp_path_factory.mktemp("applied"))
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    tokenizer = site.host_root("npu-node-2") / "opt/sovkit/models/demo-ko-chat/current/tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes() + b" ")
    r = run_cli("refresh", site.path)
    assert r.code == 0, r.text
    pack = site.root.parent / "pack"
    r = run_cli("audit", site.path, "-o", pack)  # default key: <state dir>/keys/operator.key
    assert r.code == 0, r.text
    return site, pack, site.root / ".sovkit/keys/operator.key.pub"


@pytest.mark.slow
def test_applied_pack_reports_installed_components_with_provenance_and_drift(
        applied: tuple[Site, Path, Path], cli: Cli) -> None:
    site, pack, pub = applied
    report = json.loads((pack / "report.json").read_text())
    state = json.loads((site.root / ".sovkit/state.json").read_text())
    assert report["overview"]["state_serial"] == state["serial"] and report["overview"]["state_lineage"]
    assert json.loads((pack / "evidence/state.json").read_text()) == state
    hosts = {h["host"]: h for h in report["installed"]}
    assert set(hosts) == {"npu-node-1", "npu-node-2"}
    for name, h in hosts.items():
        (fw,) = h["firmware"]
        assert fw["version"] == "1.2.0" and set(fw["devices"].values()) == {"1.2.0"}
        assert fw["provenance"]["matches_inventory"] and fw["provenance"]["signer"] == "rebellions"
        (rt,) = h["runtimes"]
        assert rt["version"] == "1.0.0" and rt["provenance"]["matches_inventory"], name
        (model,) = h["models"]
        assert model["name"] == "demo-ko-chat" and model["signature_verified"] is True
    assert hosts["npu-node-1"]["models"][0]["provenance"]["matches_inventory"] is True
    tampered = hosts["npu-node-2"]["models"][0]["provenance"]
    assert tampered["matches_inventory"] is False
    assert tampered["note"] == "recorded file digests differ from the pinned ones"
    (change,) = report["drift"]["changes"]
    assert change["host"] == "npu-node-2" and "tokenizer.json" in change["reason"]
    html = (pack / "report.html").read_text()
    assert "NOT APPROVED" in html and "tokenizer.json" in html and "1 difference(s)" in html
    r = cli("verify", pack, "--key", pub)
    assert r.code == 0, r.text


@pytest.mark.slow
def test_applied_pack_carries_the_attestation_log(applied: tuple[Site, Path, Path]) -> None:
    site, pack, _ = applied
    source = site.root / ".sovkit/attestations"
    assert (source / "log.jsonl").is_file(), "apply recorded no attestations"
    assert (pack / "attestations/log.jsonl").read_bytes() == (source / "log.jsonl").read_bytes()
    assert (pack / "attestations/head.json").read_bytes() == (source / "head.json").read_bytes()
    assert not (pack / "attestations/log.lock").exists()
    lines = (source / "log.jsonl").read_bytes().splitlines()
    report = json.loads((pack / "report.json").read_text())
    timeline = report["attestations"]
    assert [a["index"] for a in timeline] == list(range(len(lines)))
    assert [a["digest"] for a in timeline] == ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in lines]
    hosts = {a["host"] for a in timeline if a["host"]}
    assert {"npu-node-1", "npu-node-2"} <= hosts
    for a, raw in zip(timeline, lines, strict=True):
        statement = json.loads(base64.b64decode(json.loads(raw)["envelope"]["payload"]))
        assert a["predicate_type"] == statement["predicateType"]
        assert a["subjects"] == len(statement["subject"])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(pack: Path) -> None:
    m = json.loads((pack / MANIFEST).read_text())
    m["files"][0]["sha256"] = "0" * 64
    (pack / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _resign_manifest(pack: Path) -> None:
    """Re-sign an edited manifest with an attacker's key: the trusted key must not accept it."""
    from sovkit.audit.manifest import make_manifest, write_signed_manifest

    (pack / "report.html").write_text("<html>forged</html>")
    write_signed_manifest(pack, make_manifest(pack, "demo", "now"), LocalSigner.generate())


def _symlink(pack: Path) -> None:
    target = pack / "report.html"
    data = target.read_bytes()
    (pack / "elsewhere.html").write_bytes(data)
    target.unlink()
    target.symlink_to(pack / "elsewhere.html")


TAMPER = [
    ("flip-report-html", lambda p: _flip(p / "report.html"), "file-digests",
     "report.html: sha256"),
    ("flip-report-json", lambda p: _flip(p / "report.json"), "file-digests", "report.json: sha256"),
    ("flip-ml-bom", lambda p: _flip(p / "bom/demo-ko-chat.cdx.json"), "file-digests",
     "bom/demo-ko-chat.cdx.json: sha256"),
    ("flip-policy-bundle", lambda p: _flip(p / "policy/bundle.tar.gz"), "file-digests",
     "policy/bundle.tar.gz: sha256"),
    ("flip-attestation-log", lambda p: _flip(p / "attestations/log.jsonl"), "file-digests",
     "attestations/log.jsonl: sha256"),
    ("flip-attestation-head", lambda p: _flip(p / "attestations/head.json"), "file-digests",
     "attestations/head.json: sha256"),
    ("flip-state", lambda p: _flip(p / "evidence/state.json"), "file-digests", "evidence/state.json: sha256"),
    ("flip-inventory", lambda p: _flip(p / "inventory/site.yaml"), "file-digests", "inventory/site.yaml: sha256"),
    ("grow-file", lambda p: (p / "report.html").write_bytes((p / "report.html").read_bytes() + b"\n"),
     "file-digests", "report.html: size"),
    ("add-file", lambda p: (p / "bom/extra.cdx.json").write_text("{}"), "file-set",
     "extra file: bom/extra.cdx.json is in the pack but not in the manifest"),
    ("delete-file", lambda p: (p / "report.html").unlink(), "file-set",
     "missing file: report.html is in the manifest but not in the pack"),
    ("symlink-file", _symlink, "file-set", "report.html is not a regular file"),
    ("edit-manifest", _edit_manifest, "manifest-signature",
     "manifest.json was edited after signing: it differs from the signed manifest"),
    ("flip-manifest-signature", lambda p: _flip_signature(p), "manifest-signature",
     "manifest signature: signature does not verify"),
    ("delete-manifest-signature", lambda p: (p / ENVELOPE).unlink(), "manifest-signature",
     "manifest.dsse.json is missing from the pack"),
    ("resigned-by-another-key", _resign_manifest, "manifest-signature",
     "manifest signature: signed by an unknown key"),
]


def _flip_signature(pack: Path) -> None:
    env = json.loads((pack / ENVELOPE).read_text())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[5] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (pack / ENVELOPE).write_text(json.dumps(env))


@pytest.mark.slow
@pytest.mark.parametrize(("mutate", "step", "message"), [t[1:] for t in TAMPER], ids=[t[0] for t in TAMPER])
def test_any_change_to_the_pack_fails_verify_with_its_own_message(
        applied: tuple[Site, Path, Path], tmp_path: Path, cli: Cli,
        mutate: Callable[[Path], None], step: str, message: str) -> None:
    _, pack, pub = applied
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy, symlinks=True)
    assert cli("verify", copy, "--key", pub).code == 0, "the untouched copy must verify"
    mutate(copy)
    r = cli("verify", copy, "--key", pub, "--json")
    assert r.code == 1, r.text
    steps = _steps(r)
    assert steps[step]["status"] == "failed"
    assert any(message in p for p in steps[step]["problems"]), steps[step]  # type: ignore[attr-defined]
    if step != "manifest-signature":
        assert steps["manifest-signature"]["status"] == "ok", "only the changed part may be reported"
    assert "does not verify" in r.err and "Traceback" not in r.err
    human = cli("verify", copy, "--key", pub)
    assert human.code == 1 and message in human.out and f"✗ {step}" in human.out


@pytest.mark.slow
def test_flipped_attestation_also_fails_the_log_check(applied: tuple[Site, Path, Path], tmp_path: Path,
                                                      cli: Cli) -> None:
    _, pack, pub = applied
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    _flip(copy / "attestations/log.jsonl")
    steps = _steps(cli("verify", copy, "--key", pub, "--json"))
    assert steps["attestation-log"]["status"] == "failed" and steps["attestation-log"]["problems"]


@pytest.mark.slow
def test_wrong_key_fails_the_signature_and_the_log(applied: tuple[Site, Path, Path], tmp_path: Path,
                                                   cli: Cli) -> None:
    _, pack, _ = applied
    _, other = _keypair(tmp_path, "other.key")
    r = cli("verify", pack, "--key", other, "--json")
    assert r.code == 1
    steps = _steps(r)
    assert steps["manifest-signature"]["status"] == "failed"
    assert "manifest signature: signed by an unknown key" in steps["manifest-signature"]["problems"][0]  # type: ignore[index]
    assert steps["file-digests"]["status"] == "not-checked"
    assert any("wrong key" in p for p in steps["attestation-log"]["problems"])  # type: ignore[attr-defined]


def test_operator_policies_are_evaluated_and_shipped_in_the_bundle(tmp_path: Path, cli: Cli) -> None:
    extra = tmp_path / "my-policies"
    extra.mkdir()
    rule = """package sovkit.custom.labels

import rego.v1

warn contains {"id": "OPS-001", "severity": "warn", "msg": sprintf("host %s has no owner label", [name]),
    "resource": sprintf("hosts/%s", [name]), "remediation": "add labels.owner"} if {
	some s in input.host_shapes
	not s.labels.owner
	some r in s.racks
	some name in r.hosts
}
"""
    (extra / "labels.rego").write_text(rule)
    key, pub = _keypair(tmp_path)
    out = tmp_path / "pack"
    r = cli("audit", INVENTORIES / "demo", "-o", out, "--key", key, "--policies", extra, "--state-dir",
            tmp_path / "s", "--json")
    assert r.code == 0, r.text
    summary = json.loads(r.out)
    assert summary["site"] == "demo" and summary["policy_allowed"] is True
    assert {f["path"] for f in summary["files"]} >= {"report.html", "report.json", "policy/bundle.tar.gz"}
    report = json.loads((out / "report.json").read_text())
    ops = [f for f in report["policy"]["findings"] if f["id"] == "OPS-001"]
    assert {f["resource"] for f in ops} == {"hosts/npu-node-1", "hosts/npu-node-2"}
    with tarfile.open(out / "policy/bundle.tar.gz", "r:gz") as tar:
        member = tar.extractfile("custom/labels.rego")
        assert member is not None and member.read().decode() == rule
        manifest = json.loads(tar.extractfile(".manifest").read())  # type: ignore[union-attr]
    assert manifest["metadata"]["pack_digest"] == report["policy"]["pack_digest"]
    assert cli("verify", out, "--key", pub).code == 0


def test_a_damaged_attestation_log_stops_the_audit_and_writes_nothing(tmp_path: Path, cli: Cli) -> None:
    state = tmp_path / "state"
    (state / "attestations").mkdir(parents=True)
    (state / "attestations/log.jsonl").write_text('{"index": 0, "previous": null, "envelope": {"payload": "x"\n')
    key, _ = _keypair(tmp_path)
    out = tmp_path / "out"
    r = cli("audit", INVENTORIES / "demo", "-o", out, "--key", key, "--state-dir", state)
    assert r.code == 1 and "log.jsonl:1" in r.err and "Traceback" not in r.err, r.text
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
