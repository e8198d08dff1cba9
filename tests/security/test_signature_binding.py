"""Finding 5: a signature binds the artifact's kind, name and version, not only its file digests.

The attack: keep the publisher's genuine signature and files, change the label the inventory gives
them (a model's version to "9.9", a runtime's name, a firmware's version). Before the fix every
check compared digests only, so the relabelled artifact showed "signature verified" and the
attestations stated a version the publisher never signed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovkit.inventory.loader import load_inventory
from sovkit.policy.input import build_input
from sovkit.signing.artifacts import Claim, sign_artifacts, verify_artifact_signature
from sovkit.signing.keys import LocalSigner
from tests.conftest import run_cli
from tests.sitefactory import PUBLISHER, Site, make_site

WAIVE_MODEL = [("PRV-003", "models/demo-ko-chat"), ("PRV-007", "deployments/chat-prefill"),
               ("PRV-007", "deployments/chat-decode")]


def _signatures(site: Site) -> dict[str, dict[str, object]]:
    doc = build_input(load_inventory(site.path))
    out: dict[str, dict[str, object]] = {}
    for section, kind in (("firmware", "firmware"), ("runtimes", "runtime"), ("models", "model")):
        for item in doc[section]:
            out[f"{kind}:{item['name']}"] = item["signature"]
    return out


def test_genuine_labels_verify(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    sigs = _signatures(site)
    assert sigs and all(s["verified"] for s in sigs.values()), sigs


@pytest.mark.parametrize(("section", "name", "field", "value", "label"), [
    ("models", "demo-ko-chat", "version", "9.9", "model:demo-ko-chat"),
    ("runtimes", "simnpu-serve", "version", "2.0.0", "runtime:simnpu-serve"),
    ("runtimes", "simnpu-serve", "name", "other-serve", "runtime:other-serve"),
    ("firmware", "atom-max-fw-1.2.0", "version", "1.3.0", "firmware:atom-max-fw-1.2.0"),
])
def test_relabelled_artifact_is_not_verified(tmp_path: Path, section: str, name: str, field: str, value: str,
                                             label: str) -> None:
    site = make_site(tmp_path)
    item = next(i for i in site.data[section] if i["name"] == name)
    item[field] = value
    if field == "name":  # keep the references valid: only the signature may object
        for d in site.data["deployments"]:
            if d.get("runtime") == name:
                d["runtime"] = value
    site.save()
    sig = _signatures(site)[label]
    assert sig["checked"] is True
    assert sig["verified"] is False
    assert f"the inventory claims {label.split(':')[0]}" in str(sig["reason"])
    assert value in str(sig["reason"])


def test_relabelled_model_version_check_and_apply_refuse(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.model("demo-ko-chat")["version"] = "9.9"
    site.save()
    r = run_cli("check", site.path, "--json")
    assert r.code == 3
    prv003 = [f for f in json.loads(r.out)["findings"] if f["id"] == "PRV-003"]
    assert len(prv003) == 1
    assert ("signed for model demo-ko-chat version 1.0, the inventory claims model demo-ko-chat version 9.9"
            in prv003[0]["msg"])
    # waive the policy findings: preflight still refuses the relabelled model (defence in depth)
    site.data["waivers"] = [{"rule": rule, "resource": res, "reason": "test: reach preflight",
                             "expires": "2099-01-01"} for rule, res in WAIVE_MODEL]
    site.save()
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1, r.text
    assert ("model:demo-ko-chat@9.9: signature by sovkit-demo-lab does not verify (signed for model demo-ko-chat "
            "version 1.0, the inventory claims model demo-ko-chat version 9.9)") in r.err
    for host in ("npu-node-1", "npu-node-2"):
        assert not (site.host_root(host) / "opt/sovkit/models").exists()


def test_kind_is_bound_too(tmp_path: Path) -> None:
    """A publisher's signature over a model cannot be presented as a runtime of the same name and version."""
    f = tmp_path / "a.sig"
    f.write_text(sign_artifacts({"x.bin": "0" * 64}, PUBLISHER, "model", "x", "1").to_json())
    key = PUBLISHER.public_key
    ok = verify_artifact_signature(f, {"x.bin": "0" * 64}, key, "p", Claim("model", "x", "1"))
    assert ok.verified, ok.reason
    bad = verify_artifact_signature(f, {"x.bin": "0" * 64}, key, "p", Claim("runtime", "x", "1"))
    assert not bad.verified
    assert bad.reason == "signed for model x version 1, the inventory claims runtime x version 1"
    other = LocalSigner.generate()
    assert not verify_artifact_signature(f, {"x.bin": "0" * 64}, other.public_key, "p",
                                         Claim("model", "x", "1")).verified
