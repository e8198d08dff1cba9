"""Signed policy bundles in OPA's bundle-signing format, and bundles that do not verify refused (fail closed).

The signature is checked with PyJWT (an independent JWT implementation) and the file digests are recomputed
here from the bundle's bytes, not with sovkit's code. No OPA binary is available on this machine, so OPA itself
does not check the bundles in this suite.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from sovkit.policy.bundle_signing import file_hash
from sovkit.signing.keys import LocalSigner, ecdsa_der_to_raw, ecdsa_raw_to_der, write_keypair
from tests.conftest import INVENTORIES, CliResult

Cli = Callable[..., CliResult]
SIGS = ".signatures.json"


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _write(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _token(files: dict[str, bytes]) -> str:
    doc = json.loads(files[SIGS])
    assert list(doc) == ["signatures"] and len(doc["signatures"]) == 1
    token: str = doc["signatures"][0]
    return token


def _opa_hash(name: str, data: bytes) -> str:
    """OPA's digest, computed independently: raw bytes for modules; for .manifest and data.json the sorted,
    compact JSON text (what OPA's hash walk writes for documents without U+2028/2029 whose numbers are already
    in Python's shortest form, as json.dumps wrote them)."""
    if name in (".manifest", "data.json"):
        text = json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    """An ECDSA P-256 key (signs bundles), a second one (not trusted) and an Ed25519 key; unencrypted files."""
    out: dict[str, Any] = {}
    for name, alg in (("op", "ecdsa-p256"), ("other", "ecdsa-p256"), ("ed", "ed25519")):
        signer = LocalSigner.generate(alg)  # type: ignore[arg-type]
        write_keypair(signer, tmp_path / f"{name}.key", None)
        out[name] = signer
        out[f"{name}.key"] = tmp_path / f"{name}.key"
        out[f"{name}.pub"] = tmp_path / f"{name}.key.pub"
    return out


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The demo site with a licence outside the allowlist (PRV-004/007 deny): a tampered data.json that adds it
    to the allowlist would turn the decision to allowed."""
    root = tmp_path / "site"
    shutil.copytree(INVENTORIES / "demo", root, ignore=shutil.ignore_patterns(".sovkit", "hosts", "generate.py",
                                                                               "*.in"))
    data = yaml.safe_load((root / "site.yaml").read_text())
    for model in data["models"]:
        model["license"] = "proprietary-eula"
    (root / "site.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "site.yaml"


@pytest.fixture
def signed(tmp_path: Path, keys: dict[str, Any], cli: Cli) -> Path:
    out = tmp_path / "pack.tar.gz"
    r = cli("policy", "bundle", "-o", out, "--sign", keys["op.key"], "--json")
    assert r.code == 0, r.text
    assert json.loads(r.out)["signed_by"] == keys["op"].keyid
    return out


def test_signature_is_an_es256_jwt_over_opa_file_digests(signed: Path, keys: dict[str, Any]) -> None:
    files = _members(signed)
    token = _token(files)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == keys["op"].keyid
    payload = jwt.decode(token, keys["op.pub"].read_bytes(), algorithms=["ES256"])  # PyJWT verifies r||s
    assert payload["keyid"] == keys["op"].keyid and "scope" not in payload
    listed = {f["name"]: f for f in payload["files"]}
    assert set(listed) == set(files) - {SIGS}, "every file but .signatures.json is signed, nothing else"
    assert {".manifest", "data.json", "sovkit/main.rego"} <= set(listed)
    for name, data in files.items():
        if name != SIGS:
            assert listed[name]["algorithm"] == "SHA-256"
            assert listed[name]["hash"] == _opa_hash(name, data), name
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, keys["other.pub"].read_bytes(), algorithms=["ES256"])


def test_structured_files_hash_like_opa_hash_walk() -> None:
    """Known answer from OPA's hash.go: keys sorted, no HTML escaping, U+2028 escaped, number text kept."""
    raw = '{"b": 1.0, "a": "<&>\u2028\\u0001", "c": [1e3, true, null, {"y": "\\"", "x": -0}]}'.encode()
    expected = '{"a":"<&>\\u2028\\u0001","b":1.0,"c":[1e3,true,null,{"x":-0,"y":"\\""}]}'
    assert file_hash("data.json", raw) == hashlib.sha256(expected.encode()).hexdigest()
    assert file_hash("x/.manifest", raw) == file_hash("data.json", b"\xef\xbb\xbf" + raw)  # BOM stripped
    assert file_hash("x/y.rego", raw) == hashlib.sha256(raw).hexdigest()


def test_der_and_raw_ecdsa_signatures_convert_both_ways(keys: dict[str, Any]) -> None:
    der = keys["op"].sign(b"data")
    raw = ecdsa_der_to_raw(der)
    assert len(raw) == 64 and ecdsa_raw_to_der(raw) == der
    assert keys["op"].public_key.verify(ecdsa_raw_to_der(raw), b"data")


def _check(cli: Cli, site: Path, *extra: str | Path) -> tuple[int, dict[str, Any]]:
    r = cli("check", site, "--json", *extra)
    assert r.out.strip(), r.text
    return r.code, json.loads(r.out)


def test_signed_bundle_decides_like_the_unsigned_pack(signed: Path, site: Path, keys: dict[str, Any],
                                                       cli: Cli) -> None:
    code, plain = _check(cli, site)
    assert code == 3 and [f["id"] for f in plain["findings"] if f["severity"] == "deny"] == ["PRV-004", "PRV-007",
                                                                                            "PRV-007"]
    assert _check(cli, site, "--policy-bundle", signed, "--bundle-key", keys["op.pub"]) == (3, plain)
    # trust from the inventory instead of --bundle-key
    data = yaml.safe_load(site.read_text())
    shutil.copy(keys["op.pub"], site.parent / "keys" / "policy.pub")
    data["trust_roots"]["policy_bundles"] = [{"name": "policy-team", "public_key": "keys/policy.pub"}]
    site.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _check(cli, site, "--policy-bundle", signed) == (3, plain)


def _edit_data(files: dict[str, bytes]) -> None:
    """The attack: allow the site's licence (its decision would turn to allowed)."""
    data = json.loads(files["data.json"])
    data["sovkit"]["config"]["licenses"].append("proprietary-eula")
    files["data.json"] = json.dumps(data).encode()


def _swap_hash(files: dict[str, bytes]) -> None:
    """Change data.json and put its new digest in the payload, keeping the old signature."""
    _edit_data(files)
    head, payload, sig = _token(files).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    for f in claims["files"]:
        if f["name"] == "data.json":
            f["hash"] = _opa_hash("data.json", files["data.json"])
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    files[SIGS] = json.dumps({"signatures": [f"{head}.{forged}.{sig}"]}).encode()


def _flip_signature(files: dict[str, bytes]) -> None:
    head, payload, sig = _token(files).split(".")
    sig = ("A" if sig[5] != "A" else "B").join((sig[:5], sig[6:]))
    files[SIGS] = json.dumps({"signatures": [f"{head}.{payload}.{sig}"]}).encode()


def _other_key_claims_trusted_kid(keys: dict[str, Any]) -> Callable[[dict[str, bytes]], None]:
    def edit(files: dict[str, bytes]) -> None:
        claims = jwt.decode(_token(files), options={"verify_signature": False})
        pem = keys["other.key"].read_bytes()
        token = jwt.encode(claims, pem, algorithm="ES256", headers={"kid": keys["op"].keyid})
        files[SIGS] = json.dumps({"signatures": [token]}).encode()
    return edit


def _remove(files: dict[str, bytes]) -> None:
    del files["sovkit/waivers.rego"]


def _add(files: dict[str, bytes]) -> None:
    files["custom/extra.rego"] = b"package sovkit.custom.extra\n"


def _change_module(files: dict[str, bytes]) -> None:
    files["sovkit/main.rego"] += b"\n# changed\n"


def _two_jwts(files: dict[str, bytes]) -> None:
    token = _token(files)
    files[SIGS] = json.dumps({"signatures": [token, token]}).encode()


def _unsigned(files: dict[str, bytes]) -> None:
    del files[SIGS]


TAMPER: dict[str, tuple[Callable[..., Any], str]] = {
    "file changed": (lambda k: _edit_data, "data.json: digest mismatch"),
    "module changed": (lambda k: _change_module, "sovkit/main.rego: digest mismatch"),
    "file added": (lambda k: _add, "custom/extra.rego: not covered by the signature"),
    "file removed": (lambda k: _remove, "sovkit/waivers.rego: signed but missing"),
    "signature broken": (lambda k: _flip_signature, "does not verify with key"),
    "payload re-hashed": (lambda k: _swap_hash, "does not verify with key"),
    "other key, trusted kid": (_other_key_claims_trusted_kid, "does not verify with key"),
    "two signatures": (lambda k: _two_jwts, "exactly one JWT"),
    "signature stripped": (lambda k: _unsigned, "is not signed (no .signatures.json)"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_bundle_is_refused_and_nothing_is_evaluated(case: str, signed: Path, site: Path,
                                                             keys: dict[str, Any], tmp_path: Path,
                                                             cli: Cli) -> None:
    make_edit, message = TAMPER[case]
    files = _members(signed)
    make_edit(keys)(files)
    bad = _write(tmp_path / "bad.tar.gz", files)
    r = cli("check", site, "--json", "--policy-bundle", bad, "--bundle-key", keys["op.pub"])
    assert r.code == 1, r.text
    assert r.out == "", "no decision is printed for a bundle that does not verify"
    assert message in r.err and str(bad) in r.err, r.err


def test_wrong_key_and_missing_key_are_refused(signed: Path, site: Path, keys: dict[str, Any], cli: Cli) -> None:
    r = cli("check", site, "--policy-bundle", signed, "--bundle-key", keys["other.pub"])
    assert r.code == 1 and "not a trusted bundle key" in r.err and r.out == ""
    r = cli("check", site, "--policy-bundle", signed)
    assert r.code == 1 and "is signed but no key to verify it is configured" in r.err
    assert "--bundle-key" in r.err  # the hint says how


def test_a_standard_es256_jwt_over_the_files_is_accepted(signed: Path, site: Path, keys: dict[str, Any],
                                                          tmp_path: Path, cli: Cli) -> None:
    """A token made by PyJWT (not sovkit) with the trusted key verifies: the check is the JWT standard's."""
    files = _members(signed)
    claims = jwt.decode(_token(files), options={"verify_signature": False})
    token = jwt.encode(claims, keys["op.key"].read_bytes(), algorithm="ES256", headers={"kid": keys["op"].keyid})
    files[SIGS] = json.dumps({"signatures": [token]}).encode()
    other = _write(tmp_path / "pyjwt.tar.gz", files)
    assert _check(cli, site, "--policy-bundle", other, "--bundle-key", keys["op.pub"])[0] == 3


def test_refused_bundle_plans_and_applies_nothing(signed: Path, site: Path, keys: dict[str, Any],
                                                  tmp_path: Path, cli: Cli) -> None:
    files = _members(signed)
    _edit_data(files)
    bad = _write(tmp_path / "bad.tar.gz", files)
    plan = tmp_path / "plan.json"
    key = ("--key", keys["op.key"])
    r = cli("plan", site, "-o", plan, *key, "--policy-bundle", bad, "--bundle-key", keys["op.pub"])
    assert r.code == 1 and "data.json: digest mismatch" in r.err and not plan.exists()
    r = cli("apply", site, "--auto-approve", *key, "--policy-bundle", bad, "--bundle-key", keys["op.pub"])
    assert r.code == 1 and "data.json: digest mismatch" in r.err
    assert not (site.parent / ".sovkit" / "state.json").exists()


def test_ed25519_key_cannot_sign_a_bundle(keys: dict[str, Any], tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "ed.tar.gz"
    r = cli("policy", "bundle", "-o", out, "--sign", keys["ed.key"])
    assert r.code == 1 and "Ed25519" in r.err and "ecdsa-p256" in r.err
    assert not out.exists()


def test_unsigned_bundle_still_loads_without_a_key(site: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "plain.tar.gz"
    assert cli("policy", "bundle", "-o", out).code == 0
    assert SIGS not in _members(out)
    code, plain = _check(cli, site)
    assert _check(cli, site, "--policy-bundle", out) == (code, plain)


def test_rules_written_for_input_v1_are_refused_not_silently_passed(site: Path, tmp_path: Path, cli: Cli) -> None:
    """Input v2 groups hosts by shape: a custom rule (or an older sovkit's bundle) reading input.hosts would find
    nothing and pass everything, so it is refused before anything is evaluated, naming the file and line."""
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "owner.rego").write_text(
        "package sovkit.custom.owner\n\nimport rego.v1\n\n# v1 read input.hosts here; a comment is fine\n"
        "deny contains {\"id\": \"OWN-1\"} if {\n\tsome h in input.hosts\n\tnot h.labels.owner\n}\n")
    r = cli("check", site, "--policies", custom)
    assert r.code == 1 and "reads policy input v1 keys" in r.err and f"{custom}/owner.rego:7" in r.err, r.text
    assert "Traceback" not in r.text and "owner.rego:5" not in r.err

    # a bundle as an older sovkit built it: its own (v1) rules read input.hosts
    out = tmp_path / "plain.tar.gz"
    assert cli("policy", "bundle", "-o", out).code == 0
    files = _members(out)
    files["sovkit/capacity.rego"] += b"\n_v1_hosts := [h | some h in input.hosts]\n"
    old = _write(tmp_path / "v1.tar.gz", files)
    refused = cli("check", site, "--policy-bundle", old)
    assert refused.code == 1 and "policy bundle" in refused.err and "shape: capacity.rego:" in refused.err, \
        refused.text
    assert "built again with `sovkit policy bundle`" in refused.err
