"""The audit pack's policy decision re-evaluated from the pack alone, offline; one serving type for state and audit.

Issue 11 point 6: `sovkit policy input <pack>/inventory` could not rebuild the input (no trust-root keys,
no artifact store), so nothing in the pack let a regulator re-check the decision. The pack now carries
the exact input document and the keys; `sovkit verify` re-evaluates it with the pack's own bundle.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sovkit.policy.engine import DECISION_QUERY
from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.signing.manifest import MANIFEST
from tests.conftest import INVENTORIES, ROOT, run_cli
from tests.sitefactory import Site
from tests.test_audit_pack import run_cli_offline


def _keypair(directory: Path) -> tuple[Path, Path]:
    key = directory / "operator.key"
    return key, write_keypair(LocalSigner.generate(), key, None)


@pytest.fixture(scope="module")
def denied_pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """eu-sovereign with a log sink outside the allowed jurisdictions: a denied decision with several findings."""
    tmp = tmp_path_factory.mktemp("recheck")
    root = tmp / "site"
    shutil.copytree(INVENTORIES / "eu-sovereign", root)
    site = Site(root)
    site.data["log_sinks"].append({"name": "offshore", "url": "https://logs.example.sg", "jurisdiction": "SG",
                                   "retention_days": 30})
    site.save()
    key, pub = _keypair(tmp)
    r = run_cli("audit", site.path, "-o", tmp / "built", "--key", key, "--state-dir", tmp / "state")
    assert r.code == 0 and "policy: DENIED" in r.out, r.text
    # the regulator's copy: the site, its state and its artifact store are gone
    pack = tmp / "received"
    shutil.copytree(tmp / "built", pack)
    shutil.rmtree(tmp / "built")
    shutil.rmtree(root)
    return pack, pub


def _steps(out: str) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in json.loads(out)["steps"]}


def test_pack_holds_the_input_and_the_keys_under_its_signed_manifest(denied_pack: tuple[Path, Path]) -> None:
    pack, _ = denied_pack
    listed = {e["path"] for e in json.loads((pack / MANIFEST).read_text())["files"]}
    assert {"policy/input.json", "inventory/keys/mistral-ai.pub", "inventory/keys/nvidia.pub",
            "inventory/keys/furiosa.pub"} <= listed
    report = json.loads((pack / "report.json").read_text())
    assert report["policy"]["input"] == "policy/input.json"
    doc = json.loads((pack / "policy/input.json").read_text())
    assert doc["apiVersion"] == "sovkit.dev/policy-input/v2"
    assert any(s["name"] == "offshore" for s in doc["log_sinks"])
    roots = {(t["section"], t["name"]): t for t in report["policy"]["trust_roots"]}
    assert roots[("vendors", "nvidia")]["path"] == "inventory/keys/nvidia.pub"
    assert len(roots[("vendors", "nvidia")]["keyid"]) == 64


def test_decision_re_evaluates_offline_from_the_pack_alone(denied_pack: tuple[Path, Path]) -> None:
    """No network, no site, no state: the pack's input and bundle give the decision the report records."""
    pack, pub = denied_pack
    report = json.loads((pack / "report.json").read_text())
    assert report["policy"]["allowed"] is False
    r = run_cli_offline(["verify", str(pack), "--key", str(pub), "--json"])
    steps = _steps(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    step = steps["policy-decision"]
    assert step["status"] == "ok", step
    denials = sum(1 for f in report["policy"]["findings"] if f["severity"] == "deny" and not f["waived"])
    assert f": denied, {denials} denial(s), {len(report['policy']['findings'])} finding(s), as report.json " \
           "records" in str(step["detail"])
    assert steps["trust-roots"]["status"] == "ok", steps["trust-roots"]
    # the same through the library on the two files alone, in a process with no network
    script = ("import json, sys; from pathlib import Path; from sovkit.policy.api import evaluate_bundle; "
              "p = Path(sys.argv[1]); d = evaluate_bundle(p / 'policy/bundle.tar.gz', "
              "json.loads((p / 'policy/input.json').read_bytes())); print(json.dumps(d.summary()))")
    lib = subprocess.run(["unshare", "-n", sys.executable, "-c", script, str(pack)], capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT)}, timeout=300, check=False)
    assert lib.returncode == 0, lib.stderr
    again = json.loads(lib.stdout)
    assert again["allowed"] is False and again["pack_digest"] == report["policy"]["pack_digest"]
    assert sorted((f["id"], f["resource"]) for f in again["findings"]) == \
        sorted((f["id"], f["resource"]) for f in report["policy"]["findings"])


def test_an_input_that_would_change_the_decision_is_caught(denied_pack: tuple[Path, Path], tmp_path: Path) -> None:
    """Drop the offending log sink from the stored input: the re-evaluation allows, the report denies."""
    pack, pub = denied_pack
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    doc = json.loads((copy / "policy/input.json").read_text())
    doc["log_sinks"] = [s for s in doc["log_sinks"] if s["name"] != "offshore"]
    (copy / "policy/input.json").write_text(json.dumps(doc, indent=2))
    r = run_cli("verify", copy, "--key", pub, "--json")
    assert r.code == 1
    steps = _steps(r.out)
    assert steps["file-digests"]["status"] == "failed"
    problems = steps["policy-decision"]["problems"]
    assert "re-evaluation: allowed, report.json says denied" in problems, problems  # type: ignore[operator]


def test_a_swapped_trust_root_key_is_caught(denied_pack: tuple[Path, Path], tmp_path: Path) -> None:
    pack, pub = denied_pack
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    (copy / "inventory/keys/nvidia.pub").write_bytes(LocalSigner.generate().public_key.pem())
    steps = _steps(run_cli("verify", copy, "--key", pub, "--json").out)
    (problem,) = steps["trust-roots"]["problems"]  # type: ignore[misc]
    assert problem.startswith("inventory/keys/nvidia.pub: keyid ") and "differs from the report's" in problem


def test_documented_opa_command_names_files_the_pack_has(denied_pack: tuple[Path, Path]) -> None:
    """docs/audit.md's `opa eval` re-check: its paths exist in a pack and it queries the engine's decision."""
    pack, _ = denied_pack
    docs = (ROOT / "docs/audit.md").read_text()
    (command,) = re.findall(r"^opa eval .*$", docs, re.MULTILINE)
    paths = re.findall(r"pack/([\w./-]+)", command)
    assert paths == ["policy/bundle.tar.gz", "policy/input.json"], command
    for path in paths:
        assert (pack / path).is_file(), path
    assert f"'{DECISION_QUERY}'" in command
    assert "--bundle pack/policy/bundle.tar.gz" in command and "--input pack/policy/input.json" in command
    assert "sovkit verify pack/ --key" in docs


def test_a_field_added_to_the_state_serving_record_reaches_the_audit(tmp_path: Path) -> None:
    """One type: add a field to state's ServingRecord (in a copy of the package) and `sovkit audit` still works."""
    copy = tmp_path / "src"
    for name in ("sovkit", "policies", "templates"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    models = copy / "sovkit/state/models.py"
    source = models.read_text()
    marker = "class ServingRecord(_M):\n"
    assert marker in source
    models.write_text(source.replace(marker, marker + "    replicas: int = 1\n", 1))
    state = tmp_path / "state"
    state.mkdir()
    serving = {"role": "both", "model": "demo-ko-chat", "model_version": "1.0", "runtime": "simnpu-serve",
               "runtime_version": "1.0.0", "config_sha256": "0" * 64, "port": 8000, "replicas": 3}
    (state / "state.json").write_text(json.dumps({
        "version": 1, "lineage": "5f0c7c7e-5b5e-4a8e-9d53-0c1d2a3b4c5d", "serial": 1, "site": "demo",
        "hosts": {"npu-node-1": {"serving": {"chat": serving}}}}))
    key, _ = _keypair(tmp_path)
    r = run_cli("audit", INVENTORIES / "demo", "-o", tmp_path / "pack", "--key", key, "--state-dir", state,
                env={"PYTHONPATH": str(copy)}, cwd=tmp_path)  # `-m` puts the cwd first on sys.path
    assert r.code == 0, r.text
    (host,) = json.loads((tmp_path / "pack/report.json").read_text())["installed"]
    defaults = {"endpoint": "", "status": "installed", "served_version": None, "ttft_ms": None, "checked_at": "",
                "detail": "", "rundir": ""}  # the fields a state written before they existed reads back with
    assert host["serving"] == [{**defaults, **serving, "name": "chat"}]


def test_the_bundle_is_not_evaluated_from_an_untrusted_pack(denied_pack: tuple[Path, Path], tmp_path: Path) -> None:
    pack, _ = denied_pack
    _, stranger = _keypair(tmp_path)
    steps = _steps(run_cli("verify", pack, "--key", stranger, "--json").out)
    assert steps["manifest-signature"]["status"] == "failed"
    assert steps["policy-decision"]["status"] == "not-checked"
    assert steps["policy-decision"]["detail"] == "not evaluated: the manifest is not trusted"
