"""DSSE interop with an independent implementation (securesystemslib), both directions, Ed25519 and ECDSA."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope as SslEnvelope
from securesystemslib.exceptions import VerificationError as SslVerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from sovkit.attest import log as alog
from sovkit.errors import VerificationError
from sovkit.signing import dsse
from sovkit.signing.keys import Algorithm, LocalSigner, PublicKey, write_keypair
from sovkit.signing.statement import Statement, Subject
from tests.conftest import CliResult

ALGS: list[Algorithm] = ["ed25519", "ecdsa-p256"]


def _statement() -> Statement:
    return Statement(subject=[Subject(name="models/m/1/model.safetensors", digest={"sha256": "ab" * 32})],
                     predicateType="https://sovkit.dev/attestation/provision/v1", predicate={"host": "n1"})


def _sslib_key(pub: PublicKey) -> SSlibKey:
    crypto_pub = serialization.load_pem_public_key(pub.pem())
    return SSlibKey.from_crypto(crypto_pub)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALGS)
def test_keyid_matches_securesystemslib(alg: Algorithm) -> None:
    signer = LocalSigner.generate(alg)
    key = _sslib_key(signer.public_key)
    assert key.keyid == signer.keyid
    assert key.keytype == signer.public_key.keytype and key.scheme == signer.public_key.scheme


@pytest.mark.parametrize("alg", ALGS)
def test_securesystemslib_verifies_sovkit_envelopes(alg: Algorithm, tmp_path: Path) -> None:
    signer = LocalSigner.generate(alg)
    entries = alog.append(tmp_path, [_statement()], signer)
    line = json.loads((tmp_path / "log.jsonl").read_bytes().splitlines()[0])
    env = SslEnvelope.from_dict(line["envelope"])
    key = _sslib_key(signer.public_key)
    accepted = env.verify([key], 1)
    assert list(accepted) == [signer.keyid]
    assert json.loads(env.pae().split(b" ", 4)[4]) == entries[0].statement
    # and securesystemslib rejects it once the payload is altered
    env.payload = env.payload.replace(b"n1", b"n2")
    with pytest.raises(SslVerificationError):
        env.verify([key], 1)


@pytest.mark.parametrize("alg", ALGS)
def test_sovkit_verifies_securesystemslib_envelopes(alg: Algorithm, tmp_path: Path) -> None:
    ssl_signer = CryptoSigner.generate_ed25519() if alg == "ed25519" else CryptoSigner.generate_ecdsa()
    payload = _statement().to_bytes()
    env = SslEnvelope(payload=payload, payload_type=dsse.IN_TOTO_PAYLOAD_TYPE, signatures={})
    env.sign(ssl_signer)
    text = json.dumps(env.to_dict())
    crypto_pub = serialization.load_pem_private_key(ssl_signer.private_bytes, None).public_key()
    pub = PublicKey.from_pem(crypto_pub.public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    assert pub.keyid == ssl_signer.public_key.keyid
    ours = dsse.Envelope.from_json(text)
    assert dsse.verify(ours, [pub]) == payload
    # a flipped signature byte is refused by sovkit as well
    raw = bytearray(base64.b64decode(ours.signatures[0].sig))
    raw[5] ^= 0xFF
    bad = ours.model_copy(update={"signatures": [dsse.Signature(keyid=pub.keyid,
                                                               sig=base64.b64encode(bytes(raw)).decode())]})
    with pytest.raises(VerificationError) as exc:
        dsse.verify(bad, [pub])
    assert exc.value.step == "signature"


@pytest.mark.parametrize("alg", ALGS)
def test_cli_keys_generate_and_id(alg: str, tmp_path: Path, cli: Callable[..., CliResult],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    invoke = cli
    monkeypatch.setenv("SOVKIT_KEY_PASSPHRASE", "correct horse")
    out = tmp_path / "keys" / "op.key"
    r = invoke("keys", "generate", "-o", out, "--algorithm", alg)
    assert r.code == 0, r.text
    assert (out.stat().st_mode & 0o777) == 0o600
    assert b"ENCRYPTED" in out.read_bytes()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(out.read_bytes(), password=None)
    signer = LocalSigner.load(out, b"correct horse")
    ssl_id = _sslib_key(PublicKey.load(Path(f"{out}.pub"))).keyid
    assert signer.keyid == ssl_id and ssl_id in r.out
    shown = invoke("keys", "id", f"{out}.pub")
    assert shown.code == 0 and shown.out.strip() == ssl_id
    again = invoke("keys", "generate", "-o", out)
    assert again.code == 1 and "already exists" in again.err


def test_cli_keys_generate_refusals(tmp_path: Path, cli: Callable[..., CliResult],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    invoke = cli
    monkeypatch.delenv("SOVKIT_KEY_PASSPHRASE", raising=False)
    r = invoke("keys", "generate", "-o", tmp_path / "k")
    assert r.code == 1 and "SOVKIT_KEY_PASSPHRASE" in r.err and not (tmp_path / "k").exists()
    monkeypatch.setenv("SOVKIT_KEY_PASSPHRASE", "x")
    r = invoke("keys", "generate", "-o", tmp_path / "k", "--algorithm", "rsa")
    assert r.code == 1 and "unknown key algorithm 'rsa'" in r.err and not (tmp_path / "k").exists()
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    r = invoke("keys", "id", bad)
    assert r.code == 1 and "not a PEM public key" in r.err
    write_keypair(LocalSigner.generate(), tmp_path / "enc.key", b"right")
    with pytest.raises(Exception, match="cannot decrypt"):
        LocalSigner.load(tmp_path / "enc.key", b"wrong")


def test_regulator_recipe_verifies_without_sovkit(tmp_path: Path) -> None:
    """docs/examples/verify_attestation_log.py (securesystemslib + cryptography only) accepts and rejects logs."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    signer = LocalSigner.generate("ecdsa-p256")
    alog.append(tmp_path, [_statement(), _statement()], signer)
    alog.append(tmp_path, [_statement()], signer)
    pub = tmp_path / "op.pub"
    pub.write_bytes(signer.public_key.pem())
    script = ROOT / "docs" / "examples" / "verify_attestation_log.py"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    ok = subprocess.run([sys.executable, "-I", str(script), str(tmp_path), str(pub)], capture_output=True, text=True,
                        env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "3 entries verified; head at entry 2" in ok.stdout
    lines = (tmp_path / "log.jsonl").read_bytes().split(b"\n")[:-1]
    (tmp_path / "log.jsonl").write_bytes(b"".join(x + b"\n" for x in lines[:-1]))
    cut = subprocess.run([sys.executable, "-I", str(script), str(tmp_path), str(pub)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert cut.returncode != 0 and "does not end at the signed head" in cut.stderr
