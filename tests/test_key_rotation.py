"""Key rotation and revocation: the keyring, signing times in the log, trust roots judged by time."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sovkit import api
from sovkit.attest import log as alog
from sovkit.errors import VerificationError
from sovkit.signing import dsse
from sovkit.signing import keyring as kr
from sovkit.signing.artifacts import sign_artifacts
from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.signing.statement import Statement, Subject
from tests.conftest import CliResult
from tests.sitefactory import DEMO, PUBLISHER, Site

OLD = LocalSigner.from_seed(b"rotation old operator key")
NEW = LocalSigner.from_seed(b"rotation new operator key")
STRANGER = LocalSigner.from_seed(b"rotation stranger")
JAN, FEB, MAR = "2025-01-10T00:00:00Z", "2025-02-10T00:00:00Z", "2025-03-10T00:00:00Z"


def _st(i: int) -> Statement:
    return Statement(subject=[Subject(name=f"f{i}", digest={"sha256": f"{i:064x}"})],
                     predicateType="https://example.test/p/v1", predicate={"i": i})


class Rig:
    """A state directory with a log of three entries signed by OLD in January, February and March."""

    def __init__(self, tmp: Path) -> None:
        self.state_dir = tmp / ".sovkit"
        self.log = self.state_dir / "attestations"
        for i, at in enumerate((JAN, FEB, MAR)):
            alog.append(self.log, [_st(i)], OLD, at=at)
        self.keys = tmp / "keys"
        for name, signer in (("old", OLD), ("new", NEW), ("stranger", STRANGER)):
            write_keypair(signer, self.keys / f"{name}.key", None)
        self.keyring = self.state_dir / "keys" / "keyring.json"

    def key(self, name: str, public: bool = False) -> Path:
        return self.keys / f"{name}.key{'.pub' if public else ''}"

    def verify(self, pinned: LocalSigner = OLD, ring: Path | None = None) -> alog.LogVerification:
        keyring = api.load_keyring(path=ring or self.keyring, keys=[pinned.public_key])
        return alog.verify_log(self.log, [pinned.public_key], keyring)

    def envelopes(self) -> list[dict[str, Any]]:
        versions: list[dict[str, Any]] = json.loads(self.keyring.read_text())["versions"]
        return versions


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def _failed(result: alog.LogVerification) -> dict[str, str]:
    return {s.name: s.detail for s in result.steps if s.failed}


def test_rotate_then_verify_old_and_new_entries(rig: Rig, cli: Callable[..., CliResult]) -> None:
    out = cli("keys", "rotate", "--key", rig.key("old"), "--new", rig.key("new", public=True), "--log", rig.state_dir)
    assert out.code == 0, out.text
    assert "version 2" in out.out and rig.keyring.is_file()
    alog.append(rig.log, [_st(10)], NEW)  # the new key appends
    ok = cli("attest", "verify", rig.state_dir, "--key", rig.key("old", public=True), "--keyring", rig.keyring)
    assert ok.code == 0, ok.text
    result = rig.verify()
    assert result.ok, _failed(result)
    assert [e.predicate_type for e in result.entries][3] == alog.KEY_ROTATION_PREDICATE
    assert "keyring version 2" in result.step("signing-time").detail

    # the retired key: refused by append (the state's anchor names the successor) ...
    with pytest.raises(VerificationError, match="may no longer append to this log"):
        alog.append(rig.log, [_st(11)], OLD)
    # ... and by verification, should someone strip the anchor's key id and append anyway
    anchor = alog.anchor_path(rig.log)
    anchor.write_text(json.dumps({k: v for k, v in json.loads(anchor.read_text()).items() if k != "keyid"}))
    alog.append(rig.log, [_st(11)], OLD)
    bad = rig.verify()
    assert _failed(bad).keys() == {"signing-time"}, _failed(bad)
    detail = bad.step("signing-time").detail
    assert "entry 5 (line 6) was signed at" in detail and f"by key {OLD.keyid[:16]}" in detail
    assert "retired" in detail
    refused = cli("attest", "verify", rig.state_dir, "--key", rig.key("old", public=True), "--keyring", rig.keyring)
    assert refused.code == 1 and "each signer was valid when it signed" in refused.err
    # without the keyring the retired key is trusted at any time: the step says keys were not judged by time
    plain = alog.verify_log(rig.log, [OLD.public_key, NEW.public_key])
    assert plain.ok and plain.step("keyring").status == "not-checked"


@pytest.mark.parametrize(("revoked_at", "first_refused"), [("2025-01-20T00:00:00Z", 1),
                                                           ("2025-02-20T00:00:00Z", 2),
                                                           ("2025-01-10T00:00:00Z", 0)])
def test_revocation_refuses_later_signatures_only(rig: Rig, cli: Callable[..., CliResult], revoked_at: str,
                                                  first_refused: int) -> None:
    assert cli("keys", "rotate", "--key", rig.key("old"), "--new", rig.key("new"), "--log", rig.log).code == 0
    out = cli("keys", "revoke", rig.key("old", public=True), "--at", revoked_at, "--reason", "laptop stolen",
              "--key", rig.key("new"), "--log", rig.log, "--json")
    assert out.code == 0, out.text
    assert json.loads(out.out)["keyid"] == OLD.keyid
    result = rig.verify()
    assert _failed(result).keys() == {"signing-time"}, _failed(result)
    detail = result.step("signing-time").detail
    assert detail.startswith(f"entry {first_refused} (line {first_refused + 1}) was signed at")
    assert f"revoked at {revoked_at} (laptop stolen)" in detail
    entries = alog.read_log(rig.log)
    assert entries[-1].predicate_type == alog.KEY_REVOCATION_PREDICATE and entries[-1].predicate["keyid"] == OLD.keyid


def test_revocation_after_every_entry_keeps_them_verifying(rig: Rig) -> None:
    ring = kr.rotate(None, OLD, NEW.public_key, "2025-04-01T00:00:00Z")
    ring = kr.revoke(ring, NEW, OLD.keyid, "2025-03-20T00:00:00Z", "retired for good", "2025-04-02T00:00:00Z")
    kr.write_keyring(rig.keyring, ring.envelopes)
    result = rig.verify()
    assert result.ok, _failed(result)
    with pytest.raises(Exception, match="a key cannot revoke itself"):
        kr.revoke(ring, NEW, NEW.keyid, "2025-05-01T00:00:00Z", "x", "2025-05-01T00:00:00Z")


def _rotated(rig: Rig) -> None:
    api.rotate_key(log_dir=rig.log, keyring_path=rig.keyring, old=OLD, new=NEW.public_key)
    alog.append(rig.log, [_st(10)], NEW)
    assert rig.verify().ok


def test_tampered_keyring_is_refused(rig: Rig) -> None:
    _rotated(rig)
    good = rig.keyring.read_text()
    versions = rig.envelopes()
    sig = bytearray(base64.b64decode(versions[1]["signatures"][0]["sig"]))
    sig[5] ^= 1
    versions[1]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    rig.keyring.write_text(json.dumps({"versions": versions}))
    with pytest.raises(VerificationError, match="version 2 is not signed by a key current in version 1"):
        rig.verify()

    # a keyring extended by the retired key (say, to make itself valid again) is refused
    rig.keyring.write_text(good)
    ring = kr.load_keyring(rig.keyring, [OLD.public_key])
    body = ring.latest.model_copy(update={"version": 3, "previous": ring.digests[-1], "issued": kr.parse_time(
        ring.latest.issued).isoformat(), "keys": [k.model_copy(update={"not_after": None}) for k in ring.latest.keys]})
    forged = dsse.sign(body.to_bytes(), kr.PAYLOAD_TYPE, OLD)
    kr.write_keyring(rig.keyring, [*ring.envelopes, forged])
    with pytest.raises(VerificationError, match="version 3 is not signed by a key current in version 2"):
        rig.verify()

    # rolled back to version 1 (before the rotation the log records)
    rig.keyring.write_text(json.dumps({"versions": json.loads(good)["versions"][:1]}))
    rolled = rig.verify()
    assert "keyring" in _failed(rolled)
    assert ("entry 3 (line 4) records keyring version 2, but the keyring given ends at version 1: it was rolled back"
            in rolled.step("keyring").detail)

    # a keyring no trusted key signed
    rig.keyring.write_text(good)
    with pytest.raises(VerificationError, match="no version is signed by a key you trust"):
        rig.verify(pinned=STRANGER)


def test_malformed_keyring_errors_name_line_or_field(rig: Rig, cli: Callable[..., CliResult]) -> None:
    _rotated(rig)
    path = rig.keyring
    path.write_text('{\n  "versions": [\n    oops\n  ]\n}\n')
    with pytest.raises(VerificationError, match=rf"{path}:3:5: not JSON"):
        rig.verify()
    out = cli("attest", "verify", rig.state_dir, "--key", rig.key("old", public=True), "--keyring", path)
    assert out.code == 1 and f"{path}:3:5: not JSON" in out.err and "Traceback" not in out.err

    path.write_text('{"version": []}')
    with pytest.raises(VerificationError, match=r"not a sovkit keyring \(versions: Field required\)"):
        rig.verify()

    ring = kr.start(OLD, JAN)
    body = json.loads(ring.latest.to_bytes())
    body["keys"][0]["not_after"] = "next tuesday"
    env = dsse.sign(json.dumps(body).encode(), kr.PAYLOAD_TYPE, OLD)
    kr.write_keyring(path, [env])
    with pytest.raises(VerificationError, match=r"version 1: malformed \(keys\.0\.not_after: .*'next tuesday' is "
                                                r"not an ISO 8601 time"):
        rig.verify()


def test_signing_time_back_dated_breaks_chain_or_order(rig: Rig) -> None:
    lines = rig.log.joinpath("log.jsonl").read_bytes().split(b"\n")[:-1]
    obj = json.loads(lines[2])
    obj["signed_at"] = "2024-12-01T00:00:00Z"  # back-date the last entry: it no longer matches the signed head
    lines[2] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    rig.log.joinpath("log.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    result = alog.verify_log(rig.log, [OLD.public_key])
    failed = _failed(result)
    assert "head" in failed and "signing-time" in failed
    back_dated = "entry 2 (line 3) was signed at 2024-12-01T00:00:00Z, before the entry it follows"
    assert back_dated in failed["signing-time"]
    alog.append(rig.log.parent / "other", [_st(0)], OLD, at=FEB)
    with pytest.raises(VerificationError, match=r"cannot sign at 2025-01-10T00:00:00Z: the log.s last entry"):
        alog.append(rig.log.parent / "other", [_st(1)], OLD, at=JAN)


def _site_with_signed_model(tmp: Path, signed_at: str | None) -> Site:
    root = tmp / "site"
    if not root.exists():
        shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("generate.py", "*.in", ".sovkit", "hosts"))
        site = Site(root)
        site.add_model("rot-m", "1.0", {"w.bin": b"weights"})
        site.save()
    site = Site(root)
    m = site.model("rot-m")
    env = sign_artifacts({a["path"]: a["sha256"] for a in m["files"]}, PUBLISHER, "model", "rot-m", "1.0",
                         signed_at=signed_at)
    (site.store / m["signature"]).write_text(env.to_json())
    return site


def _model_signature(site: Site) -> dict[str, Any]:
    doc = api.policy_input(workspace=api.open_workspace(inventory=site.root))
    sig: dict[str, Any] = next(m for m in doc["models"] if m["name"] == "rot-m")["signature"]
    return sig


def test_publisher_revocation_and_window_apply_to_model_signatures(tmp_path: Path) -> None:
    site = _site_with_signed_model(tmp_path, JAN)
    ring = kr.revoke(kr.start(OLD, JAN), OLD, PUBLISHER.keyid, "2025-02-01T00:00:00Z", "publisher key leaked", FEB)
    kr.write_keyring(site.root / "keys" / "keyring.json", ring.envelopes)
    site.data["trust_roots"]["keyring"] = "keys/keyring.json"
    site.save()
    assert _model_signature(site)["verified"] is True  # signed before the revocation

    site = _site_with_signed_model(tmp_path, MAR)
    sig = _model_signature(site)
    assert sig["verified"] is False
    assert "revoked at 2025-02-01T00:00:00Z (publisher key leaked) (signed at 2025-03-10T00:00:00Z)" in sig["reason"]

    site = _site_with_signed_model(tmp_path, None)  # no stated time: judged now, after the revocation
    assert "no signing time stated, judged now" in _model_signature(site)["reason"]

    # the inventory's validity window on the trust root itself
    site = _site_with_signed_model(tmp_path, JAN)
    del site.data["trust_roots"]["keyring"]
    publisher = next(p for p in site.data["trust_roots"]["publishers"] if p["name"] == "sovkit-demo-lab")
    publisher["not_before"] = "2025-01-15T00:00:00Z"
    site.save()
    sig = _model_signature(site)
    assert sig["verified"] is False and "key sovkit-demo-lab is valid only from 2025-01-15" in sig["reason"]

    # a keyring that does not verify fails closed
    publisher.pop("not_before")
    site.data["trust_roots"]["keyring"] = "keys/keyring.json"
    site.save()
    (site.root / "keys" / "keyring.json").write_text('{"versions": []}')
    assert "does not verify" in _model_signature(site)["reason"]


def test_audit_pack_carries_the_keyring_and_verify_judges_signers_with_it(rig: Rig, tmp_path: Path,
                                                                          cli: Callable[..., CliResult]) -> None:
    """After a rotation the pack is signed by the new key; a regulator pinning only the old key verifies it through
    the keyring the pack carries. Without that keyring, or with it tampered, the new key is trusted nowhere."""
    assert cli("keys", "rotate", "--key", rig.key("old"), "--new", rig.key("new"), "--log", rig.log).code == 0
    pack = tmp_path / "pack"
    made = cli("audit", DEMO / "site.yaml", "-o", pack, "--key", rig.key("new"), "--state-dir", rig.state_dir)
    assert made.code == 0, made.text
    assert (pack / "keys/keyring.json").read_bytes() == rig.keyring.read_bytes()
    assert "keys/keyring.json" in (pack / "manifest.json").read_text()

    def steps(target: Path, *extra: str | Path) -> dict[str, dict[str, Any]]:
        r = cli("verify", target, "--key", rig.key("old", public=True), *extra, "--json")
        return {s["name"]: {**s, "code": r.code} for s in json.loads(r.out)["steps"]}

    ok = steps(pack)
    assert ok["keyring"]["status"] == "ok" and "the pack's keyring, version 2" in ok["keyring"]["detail"]
    assert ok["manifest-signature"]["status"] == ok["attestation-log"]["status"] == "ok"
    assert ok["keyring"]["code"] == 0

    bare = tmp_path / "bare"
    shutil.copytree(pack, bare)
    (bare / "keys/keyring.json").unlink()
    no_ring = steps(bare)
    assert no_ring["keyring"]["status"] == "not-checked" and no_ring["manifest-signature"]["status"] == "failed"
    assert no_ring["keyring"]["code"] == 1

    forged = tmp_path / "forged"
    shutil.copytree(pack, forged)
    ring = json.loads((forged / "keys/keyring.json").read_text())
    ring["versions"] = ring["versions"][1:]  # drop the version the pinned key signed
    (forged / "keys/keyring.json").write_text(json.dumps(ring))
    bad = steps(forged)
    assert bad["keyring"]["status"] == "failed" and bad["manifest-signature"]["status"] == "failed"

    # later the new key is handed over and revoked as of a time before the pack was made; `--keyring` (the newer
    # keyring, not the pack's) then judges the pack's signer invalid when it signed
    assert cli("keys", "rotate", "--key", rig.key("new"), "--new", rig.key("stranger"), "--log", rig.log).code == 0
    revoked = cli("keys", "revoke", rig.key("new", public=True), "--at", "2025-04-01T00:00:00Z", "--reason",
                  "lost", "--key", rig.key("stranger"), "--log", rig.log)
    assert revoked.code == 0, revoked.text
    later = steps(pack, "--keyring", rig.keyring)
    assert later["keyring"]["status"] == "ok" and "not the pack's" in later["keyring"]["detail"]
    assert later["manifest-signature"]["status"] == "failed", later["manifest-signature"]
    assert "not valid then" in " ".join(later["manifest-signature"]["problems"])
    assert "revoked at 2025-04-01T00:00:00Z (lost)" in " ".join(later["manifest-signature"]["problems"])
    assert later["keyring"]["code"] == 1
