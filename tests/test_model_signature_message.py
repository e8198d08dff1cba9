"""A model-signing failure reads as text: digests in hex, cut between words (never raw Python bytes, never mid-escape).

model-signing reports a hash mismatch as ``Digest(algorithm='sha256', digest_value=b'\\xa1…')`` inside a
list's repr; sovkit used to cut that at 300 characters and put it in the apply refusal as is.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from sovkit import api
from sovkit.components.host import desired_site
from sovkit.provision.preflight import run_preflight
from sovkit.signing.model_signature import verify_model
from tests.sitefactory import make_site
from tests.test_model_signature import _keypair, _model, _ms_sign

_DIGESTS = re.compile(r"sha256:([0-9a-f]*)")


def _readable(reason: str) -> None:
    assert "\\x" not in reason and "digest_value" not in reason and "b'" not in reason, reason
    assert all(len(d) == 64 for d in _DIGESTS.findall(reason)), reason


def test_hash_mismatch_names_both_digests_in_hex(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = _keypair(tmp_path, "publisher")
    sig = tmp_path / "model.sig"
    _ms_sign(model, priv, sig)
    weights = model / "model.safetensors"
    signed = hashlib.sha256(weights.read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    reason = verify_model(model, sig, pub).reason
    _readable(reason)
    assert "model.safetensors" in reason
    assert f"sha256:{signed}" in reason and f"sha256:{hashlib.sha256(bytes(data)).hexdigest()}" in reason


def test_a_long_failure_is_cut_between_words(tmp_path: Path) -> None:
    model = _model(tmp_path)
    for n in range(12):
        (model / f"shard-{n:02}.bin").write_bytes(bytes([n]) * 1024)
    priv, pub = _keypair(tmp_path, "publisher")
    sig = tmp_path / "model.sig"
    _ms_sign(model, priv, sig)
    for n in range(12):
        (model / f"shard-{n:02}.bin").write_bytes(bytes([n + 1]) * 1024)
    reason = verify_model(model, sig, pub).reason
    _readable(reason)
    assert reason.endswith(" …") and len(reason) < 500, reason


def test_apply_refusal_message_is_readable(tmp_path: Path) -> None:
    """The message preflight puts in front of the operator at apply (weights changed and re-pinned)."""
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
    m["files"] = [site.put("models/ec-chat/1.0/config.json", files["config.json"]),
                  site.put("models/ec-chat/1.0/model.safetensors", b"x" * 4096)]
    site.save()
    ws = api.open_workspace(inventory=site.path)
    pre = run_preflight(ws.inventory, desired_site(ws.inventory), api.make_plan(workspace=ws).plan)
    message = pre.failed_hosts[ws.inventory.site.deployments[1].hosts[0]]
    _readable(message)
    assert f"sha256:{hashlib.sha256(b'x' * 4096).hexdigest()}" in message
    assert f"sha256:{hashlib.sha256(b'w' * 4096).hexdigest()}" in message
