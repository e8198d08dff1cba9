"""Model publisher signatures: OpenSSF Model Signing bundles (made by the model-signing package) and sovkit DSSE."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from model_signing import signing

from sovkit import api
from sovkit.components.host import desired_site
from sovkit.provision.preflight import run_preflight
from sovkit.signing.artifacts import sign_artifacts
from sovkit.signing.keys import LocalSigner
from sovkit.signing.model_signature import verify_model
from tests.sitefactory import make_site


def _keypair(tmp: Path, name: str, alg: str = "ecdsa-p256") -> tuple[Path, Path]:
    signer = LocalSigner.generate(alg)  # type: ignore[arg-type]
    priv, pub = tmp / f"{name}.pem", tmp / f"{name}.pub"
    priv.write_bytes(signer.private_pem(None))
    pub.write_bytes(signer.public_key.pem())
    return priv, pub


def _model(tmp: Path) -> Path:
    model = tmp / "model"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}\n')
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (model / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return model


def _ms_sign(model: Path, priv: Path, sig: Path) -> None:
    """Sign with the model-signing package's own Python API (the format we must accept)."""
    signing.Config().use_elliptic_key_signer(private_key=priv).sign(model, sig)


def test_accepts_a_model_signing_signature(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = _keypair(tmp_path, "publisher")
    sig = tmp_path / "model.sig"
    _ms_sign(model, priv, sig)
    assert json.loads(sig.read_text())["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    result = verify_model(model, sig, pub, signer="acme")
    assert result.verified, result.reason
    assert result.format == "model-signing"
    assert set(result.files) == {"config.json", "model.safetensors", "tokenizer/vocab.txt"}
    assert result.keyid == LocalSigner.load(priv, None).keyid
    # a list of files (as the store pins them) works the same way
    files = sorted(p for p in model.rglob("*") if p.is_file())
    assert verify_model(files, sig, pub).verified


def test_tampered_model_file_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = _keypair(tmp_path, "publisher")
    sig = tmp_path / "model.sig"
    _ms_sign(model, priv, sig)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    result = verify_model(model, sig, pub)
    assert not result.verified and result.format == "model-signing"
    assert "model.safetensors" in result.reason and "verification failed" in result.reason


def test_added_file_wrong_key_ed25519_key_and_pins_are_refused(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = _keypair(tmp_path, "publisher")
    _, other = _keypair(tmp_path, "other")
    _, ed = _keypair(tmp_path, "ed", "ed25519")
    sig = tmp_path / "model.sig"
    _ms_sign(model, priv, sig)
    wrong = verify_model(model, sig, other)
    assert not wrong.verified and "verification failed" in wrong.reason
    not_ec = verify_model(model, sig, ed)
    assert not not_ec.verified and "need the publisher's EC public key" in not_ec.reason
    pinned = verify_model(model, sig, pub, pinned={"config.json": "0" * 64})
    assert not pinned.verified and "config.json: the signed digest differs" in pinned.reason
    (model / "extra.bin").write_bytes(b"smuggled")
    added = verify_model(model, sig, pub)
    assert not added.verified and "verification failed" in added.reason


def test_sovkit_dsse_format_and_garbage(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = store / "models" / "m" / "1"
    model.mkdir(parents=True)
    (model / "w.bin").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    publisher = LocalSigner.generate()
    pub = tmp_path / "p.pub"
    pub.write_bytes(publisher.public_key.pem())
    sig = tmp_path / "m.sig"
    sig.write_text(sign_artifacts({"models/m/1/w.bin": digest}, publisher, "model", "m", "1").to_json())
    ok = verify_model(model, sig, pub, store_root=store)
    assert ok.verified and ok.format == "dsse", ok.reason
    (model / "w.bin").write_bytes(b"weightz")
    bad = verify_model(model, sig, pub, store_root=store)
    assert not bad.verified and "differs" in bad.reason
    sig.write_text('{"hello": 1}')
    assert "neither an OpenSSF Model Signing bundle nor a sovkit DSSE" in verify_model(model, sig, pub).reason


@pytest.mark.parametrize("tamper", [False, True])
def test_preflight_accepts_model_signing_and_refuses_a_resigned_pin(tmp_path: Path, tamper: bool) -> None:
    """The install path: a model-signing model verifies in preflight; a changed file re-pinned is refused."""
    site = make_site(tmp_path)
    files = {"config.json": b'{"a": 1}\n', "model.safetensors": b"w" * 4096}
    site.add_model("ec-chat", "1.0", files, sign=False)
    model_dir = site.store / "models" / "ec-chat" / "1.0"
    priv, pub = _keypair(tmp_path, "ec-publisher")
    (site.root / "keys" / "ec-publisher.pub").write_bytes(pub.read_bytes())
    _ms_sign(model_dir, priv, tmp_path / "model.sig")
    (model_dir / "model.sig").write_bytes((tmp_path / "model.sig").read_bytes())
    m = site.model("ec-chat")
    m.update(publisher="ec-lab", signature_format="model-signing", signature="models/ec-chat/1.0/model.sig")
    site.data["trust_roots"]["publishers"].append({"name": "ec-lab", "public_key": "keys/ec-publisher.pub"})
    site.data["deployments"][1]["model"] = "ec-chat"
    if tamper:  # change the weights after signing and pin the new digest: only the signature can tell
        m["files"] = [site.put("models/ec-chat/1.0/config.json", files["config.json"]),
                      site.put("models/ec-chat/1.0/model.safetensors", b"x" * 4096)]
    site.save()
    ws = api.open_workspace(inventory=site.path)
    plan = api.make_plan(workspace=ws).plan
    pre = run_preflight(ws.inventory, desired_site(ws.inventory), plan)
    check = pre.signatures["model:ec-chat@1.0"]
    host = ws.inventory.site.deployments[1].hosts[0]
    if tamper:
        assert not check.verified and "model.safetensors" in check.reason
        assert host in pre.failed_hosts and "ec-lab does not verify" in pre.failed_hosts[host]
    else:
        assert check.verified, check.reason
        assert check.keyid == LocalSigner.load(priv, None).keyid
        assert host not in pre.failed_hosts
