"""Signing keys in a PKCS#11 token (SoftHSM2): generated in the token, usable wherever a key file is (plan,
attestation log, audit pack, air-gap bundle), verified by sovkit and by securesystemslib from the exported
public key; a wrong PIN, a missing token or module is one clear error and nothing is written."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope as SslEnvelope
from securesystemslib.exceptions import VerificationError as SslVerificationError
from securesystemslib.signer import SSlibKey

from sovkit.errors import SigningKeyError
from sovkit.signing.keys import PublicKey, ecdsa_der_to_raw, ecdsa_raw_to_der
from tests.conftest import CliResult, run_cli
from tests.sitefactory import make_site
from tests.softhsm import SoftHsm, make_softhsm

TOKEN = "sovkit ops"  # a blank in the label: the URIs percent-encode it
PIN = "4711-user"


@dataclass(frozen=True)
class Hsm:
    softhsm: SoftHsm
    operator: str  # ECDSA P-256 key URI
    operator_pub: Path
    bundler: str  # Ed25519 key URI
    bundler_pub: Path
    made: dict[str, dict[str, object]]

    def env(self, pin: str | None = PIN, **extra: str) -> dict[str, str]:
        env = {**self.softhsm.env, "SOVKIT_PKCS11_PIN": pin or "", **extra}
        return env

    def cli(self, *args: str | Path, pin: str | None = PIN, cwd: Path | None = None, **extra: str) -> CliResult:
        return run_cli(*args, env=self.env(pin, **extra), cwd=cwd, input="")  # stdin not a terminal: no prompt


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Hsm:
    root = tmp_path_factory.mktemp("softhsm")
    softhsm = make_softhsm(root)
    softhsm.init_token(TOKEN, PIN)
    operator, bundler = softhsm.uri(TOKEN, "operator"), softhsm.uri(TOKEN, "bundle signer")
    env = {**softhsm.env, "SOVKIT_PKCS11_PIN": PIN}
    made = {}
    r = run_cli("keys", "generate", "--pkcs11", operator, "--algorithm", "ecdsa-p256", "-o", root / "operator.pub",
                "--json", env=env, input="")
    assert r.code == 0, r.text
    made["operator"] = json.loads(r.out)
    r = run_cli("keys", "generate", "--pkcs11", bundler, "--json", env=env, cwd=root, input="")  # default -o
    assert r.code == 0, r.text
    made["bundler"] = json.loads(r.out)
    return Hsm(softhsm, operator, root / "operator.pub", bundler, root / "bundle signer.pub", made)


def _sslib_key(pub: Path) -> SSlibKey:
    """securesystemslib's own key from the exported PEM (no sovkit code involved)."""
    return SSlibKey.from_crypto(serialization.load_pem_public_key(pub.read_bytes()))  # type: ignore[arg-type]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its digest (to show a refused command wrote nothing)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_creates_a_non_extractable_key_whose_id_is_the_securesystemslib_one(hsm: Hsm) -> None:
    op, bn = hsm.made["operator"], hsm.made["bundler"]
    assert (op["algorithm"], bn["algorithm"]) == ("ecdsa-p256", "ed25519")
    for made in (op, bn):  # as the token reports the private key's attributes after generation
        assert made["sensitive"] is True and made["extractable"] is False, made
    assert hsm.softhsm.root / str(bn["public_key"]) == hsm.bundler_pub, "default -o is <object>.pub"
    assert hsm.bundler_pub.exists()
    assert op["uri"].startswith("pkcs11:token=sovkit%20ops;object=operator;id=%"), op["uri"]
    ids = hsm.cli("keys", "id", hsm.operator_pub, "--json")
    assert ids.code == 0 and json.loads(ids.out)["keyid"] == op["keyid"], ids.text
    for made, pub in ((op, hsm.operator_pub), (bn, hsm.bundler_pub)):
        key = _sslib_key(pub)
        assert key.keyid == made["keyid"]
        assert key.scheme == ("ecdsa-sha2-nistp256" if made["algorithm"] == "ecdsa-p256" else "ed25519")

    # an existing label is never replaced, and the refused run writes no public key
    again = hsm.cli("keys", "generate", "--pkcs11", hsm.operator, "-o", hsm.softhsm.root / "again.pub")
    assert again.code == 1 and "already holds 2 object(s) labelled 'operator'" in again.err, again.text
    assert "Traceback" not in again.text and not (hsm.softhsm.root / "again.pub").exists()


def test_plan_attestation_and_audit_pack_signed_in_the_token_verify(hsm: Hsm, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    plan = tmp_path / "plan.json"
    made = hsm.cli("plan", site.path, "-o", plan, "--key", hsm.operator)
    assert made.code == 0, made.text
    keyid = hsm.made["operator"]["keyid"]

    # the saved plan: a DSSE envelope securesystemslib verifies with the exported key, and refuses once altered
    envelope = SslEnvelope.from_dict(json.loads(plan.read_text()))
    assert list(envelope.verify([_sslib_key(hsm.operator_pub)], 1)) == [keyid]
    # ... and the check `sovkit apply plan.json` makes first (signature + bindings), by sovkit's verifier
    from sovkit import api

    _, saved = api.load_saved_plan(path=plan, key=PublicKey.load(hsm.operator_pub))
    assert not saved.plan.empty
    envelope.payload = envelope.payload.replace(b"npu-node-1", b"npu-node-9")
    with pytest.raises(SslVerificationError):
        envelope.verify([_sslib_key(hsm.operator_pub)], 1)
    # `apply PLAN --key pkcs11:…` without --plan-key checks the plan against the token's public key: a tampered
    # plan is refused before anything runs
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(envelope.to_dict()))
    refused = hsm.cli("apply", tampered, "--key", hsm.operator)
    assert refused.code == 1 and "failed verification" in refused.err, refused.text

    # the policy decision the plan recorded: signed in the token, verified by sovkit and by securesystemslib
    ok = hsm.cli("attest", "verify", site.path, "--key", hsm.operator_pub)
    assert ok.code == 0, ok.text
    line = json.loads((site.root / ".sovkit/attestations/log.jsonl").read_bytes().splitlines()[0])
    assert list(SslEnvelope.from_dict(line["envelope"]).verify([_sslib_key(hsm.operator_pub)], 1)) == [keyid]

    # the audit pack: manifest signed in the token (with $SOVKIT_SIGNING_KEY naming the token key)
    pack = tmp_path / "pack"
    audit = hsm.cli("audit", site.path, "-o", pack, SOVKIT_SIGNING_KEY=hsm.operator)
    assert audit.code == 0, audit.text
    verified = hsm.cli("verify", pack, "--key", hsm.operator_pub)
    assert verified.code == 0, verified.text
    assert f"keyid {keyid[:16]}" in audit.out, audit.out


def test_bundle_signed_with_an_ed25519_token_key_verifies(hsm: Hsm, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    out = tmp_path / "bundle"
    made = hsm.cli("bundle", "create", site.path, "-o", out, "--no-self", "--key", hsm.bundler)
    assert made.code == 0, made.text
    assert hsm.made["bundler"]["keyid"][:16] in made.out
    checked = hsm.cli("bundle", "verify", out, "--key", hsm.bundler_pub)
    assert checked.code == 0 and "bundle is intact and signed" in checked.out, checked.text


@pytest.mark.parametrize("case", ["wrong-pin", "missing-token"])
def test_wrong_pin_or_missing_token_is_one_clear_error_and_nothing_is_written(hsm: Hsm, tmp_path: Path,
                                                                              case: str) -> None:
    site = make_site(tmp_path)
    before = _tree(tmp_path)
    if case == "wrong-pin":
        key, pin, expect = hsm.operator, "0000-wrong", f"wrong PIN for PKCS#11 token '{TOKEN}' (CKR_PIN_INCORRECT)"
    else:
        key, pin, expect = SoftHsm.uri("no such token", "operator"), PIN, (
            f"PKCS#11 token 'no such token' not found in /usr/lib/softhsm/libsofthsm2.so (tokens present: '{TOKEN}')")
    runs = {
        "plan": hsm.cli("plan", site.path, "-o", tmp_path / "plan.json", "--key", key, pin=pin),
        "audit": hsm.cli("audit", site.path, "-o", tmp_path / "pack", "--key", key, pin=pin),
        "bundle": hsm.cli("bundle", "create", site.path, "-o", tmp_path / "bundle", "--no-self", "--key", key,
                          pin=pin),
        "keys": hsm.cli("keys", "generate", "--pkcs11", key.replace("operator", "fresh"), "-o", tmp_path / "f.pub",
                        pin=pin),
    }
    for what, r in runs.items():
        assert r.code == 1, (what, r.text)
        assert r.err.startswith(f"error: {expect}"), (what, r.err)
        assert "Traceback" not in r.text and r.err.count("error:") == 1, (what, r.text)
    assert _tree(tmp_path) == before, "a refused run must write nothing (no plan, pack, bundle, key or state)"
    if case == "wrong-pin":  # and no key was created in the token: the correct PIN finds none labelled 'fresh'
        r = hsm.cli("plan", site.path, "--key", SoftHsm.uri(TOKEN, "fresh"))
        assert r.code == 1 and "no private key 'fresh' in PKCS#11 token" in r.err, r.text
        assert "'bundle signer'" in r.err and "'operator'" in r.err, "the message lists the keys present"


def test_pin_from_a_file_no_pin_without_a_terminal_and_a_missing_module(hsm: Hsm, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    uri = SoftHsm.uri(TOKEN, "from-file", f"pin-source=file:{pin_file}")
    r = hsm.cli("keys", "generate", "--pkcs11", uri, "-o", tmp_path / "ff.pub", "--json", pin=None)
    assert r.code == 0, r.text
    assert json.loads(r.out)["keyid"] == PublicKey.load(tmp_path / "ff.pub").keyid

    r = hsm.cli("keys", "generate", "--pkcs11", SoftHsm.uri(TOKEN, "nopin"), "-o", tmp_path / "n.pub", pin=None)
    assert r.code == 1 and f"no PIN for object 'nopin' in token '{TOKEN}'" in r.err, r.text
    assert "SOVKIT_PKCS11_PIN" in r.err and not (tmp_path / "n.pub").exists()

    r = hsm.cli("keys", "generate", "--pkcs11", SoftHsm.uri(TOKEN, "x"), "-o", tmp_path / "m.pub",
                SOVKIT_PKCS11_MODULE=str(tmp_path / "nope.so"))
    assert r.code == 1 and f"PKCS#11 module {tmp_path / 'nope.so'} not found" in r.err, r.text
    assert "Traceback" not in r.text and not (tmp_path / "m.pub").exists()


@pytest.mark.parametrize(("uri", "fields"), [
    ("pkcs11:token=sovkit%20ops;object=operator",
     {"token": "sovkit ops", "object": "operator", "id": None, "pin_source": None, "module_path": None}),
    ("pkcs11:object=k;token=T;id=%01%a2;type=private?pin-source=file:/etc/p&module-path=/lib/m.so",
     {"token": "T", "object": "k", "id": b"\x01\xa2", "pin_source": Path("/etc/p"),
      "module_path": Path("/lib/m.so")}),
    ("pkcs11:token=T;object=k;serial=0cef491c526877bb;model=SoftHSM%20v2?pin-source=/run/pin",
     {"serial": "0cef491c526877bb", "model": "SoftHSM v2", "pin_source": Path("/run/pin")}),
])
def test_key_uri_parses(uri: str, fields: dict[str, object]) -> None:
    from sovkit.signing.pkcs11 import KeyUri

    parsed = KeyUri.parse(uri)
    assert {k: getattr(parsed, k) for k in fields} == fields


@pytest.mark.parametrize(("uri", "why"), [
    ("pkcs11:token=T", "token= and object= are both required"),
    ("pkcs11:token=T;object=k;token=U", "token given twice"),
    ("pkcs11:token=T;object=../k", "must be percent-encoded"),
    ("pkcs11:token=T;object=%2e%2e%2fk", "object must start with a letter or digit"),
    ("pkcs11:token=T;object=k;slot-id=1", "unsupported attribute slot-id"),
    ("pkcs11:token=T;object=k;type=public", "type must be private"),
    ("pkcs11:token=T;object=k?pin-value=1234", "pin-value is refused"),
    ("pkcs11:token=T;object=k?pin-source=file:pin", "pin-source must be an absolute path"),
    ("pkcs11:token=T;object=k?pin-source=%7cecho%20hi", "pin-source must be an absolute path"),
    ("pkcs11:token=T;object=k?module-name=softhsm2", "unsupported query attribute module-name"),
    ("pkcs11:token=%20T;object=k", "token must be 1-32 printable ASCII"),
    ("pkcs11:token=T;object=k;id=", "id must be 1-64"),
    ("pkcs11:token=T;object=%ff", "object is not UTF-8"),
])
def test_key_uri_refuses(uri: str, why: str) -> None:
    from sovkit.signing.pkcs11 import KeyUri

    with pytest.raises(SigningKeyError) as exc:
        KeyUri.parse(uri)
    assert why in exc.value.message and "1234" not in exc.value.message, exc.value.message


def test_ecdsa_raw_and_der_round_trip_against_cryptography() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    for i in range(20):  # DER lengths vary with leading zero bytes of r and s; raw is always 64
        data = f"message {i}".encode()
        der = private.sign(data, ec.ECDSA(hashes.SHA256()))
        raw = ecdsa_der_to_raw(der)
        assert len(raw) == 64 and ecdsa_raw_to_der(raw) == der
    key = PublicKey(private.public_key())
    assert key.verify(ecdsa_raw_to_der(raw), data)
    with pytest.raises(SigningKeyError, match="64 bytes r"):
        ecdsa_raw_to_der(raw[:-1])
    with pytest.raises(SigningKeyError, match="not a DER-encoded"):
        ecdsa_der_to_raw(b"\x30\x02nope")
