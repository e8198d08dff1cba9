"""A bare directory check against a sovkit DSSE model signature (``verify_model(dir, sig, pub)``).

The publisher signs store paths (``models/demo-ko-chat/1.0/config.json``); a directory names its
files relative to itself. sovkit used to compare the two names literally (so the genuine demo
signature was refused) and to check only the files present (so a directory missing a signed file
passed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sovkit.signing.artifacts import Claim
from sovkit.signing.model_signature import verify_model
from tests.conftest import INVENTORIES

DEMO = INVENTORIES / "demo"
DEMO_MODEL = DEMO / "artifacts" / "models" / "demo-ko-chat" / "1.0"
PUBLISHER = DEMO / "keys" / "publisher.pub"


def _copy(tmp: Path) -> Path:
    """The demo model directory with its model.sig, somewhere that is not the artifact store."""
    model = tmp / "demo-ko-chat"
    shutil.copytree(DEMO_MODEL, model)
    return model


def test_genuine_demo_signature_verifies_on_the_bare_directory(tmp_path: Path) -> None:
    result = verify_model(DEMO_MODEL, DEMO_MODEL / "model.sig", PUBLISHER)
    assert result.verified, result.reason
    assert result.format == "dsse" and result.reason == "ok"
    assert set(result.files) == {f"models/demo-ko-chat/1.0/{n}"
                                 for n in ("config.json", "model.safetensors", "tokenizer.json")}
    # copied out of the store, with the label checked too
    model = _copy(tmp_path)
    copied = verify_model(model, model / "model.sig", PUBLISHER, claim=Claim("model", "demo-ko-chat", "1.0"))
    assert copied.verified, copied.reason
    # and located in the store explicitly
    assert verify_model(DEMO_MODEL, DEMO_MODEL / "model.sig", PUBLISHER, store_root=DEMO / "artifacts").verified


def test_missing_signed_file_is_refused_by_name(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    (model / "tokenizer.json").unlink()
    result = verify_model(model, model / "model.sig", PUBLISHER)
    assert not result.verified
    assert "missing" in result.reason and "tokenizer.json" in result.reason, result.reason
    assert result.files == {}


def test_missing_signed_file_in_the_store_layout_is_refused(tmp_path: Path) -> None:
    """Named by store paths the names match; a signed file that is not there must still be refused."""
    store = tmp_path / "store"
    in_store = store / "models" / "demo-ko-chat" / "1.0"
    shutil.copytree(DEMO_MODEL, in_store)
    (in_store / "tokenizer.json").unlink()
    stored = verify_model(in_store, in_store / "model.sig", PUBLISHER, store_root=store)
    assert not stored.verified
    assert "missing" in stored.reason and "tokenizer.json" in stored.reason, stored.reason


def test_changed_file_is_refused_by_name(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0x01
    weights.write_bytes(bytes(data))
    result = verify_model(model, model / "model.sig", PUBLISHER)
    assert not result.verified
    assert "differs from the signed one" in result.reason and "model.safetensors" in result.reason, result.reason


def test_unsigned_extra_file_is_refused_by_name(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    (model / "adapter.safetensors").write_bytes(b"not signed by the publisher")
    result = verify_model(model, model / "model.sig", PUBLISHER)
    assert not result.verified
    assert "not signed" in result.reason and "adapter.safetensors" in result.reason, result.reason


def test_wrong_key_and_relabel_still_refused(tmp_path: Path) -> None:
    other = DEMO / "keys" / "vendor-rebellions.pub"
    assert not verify_model(DEMO_MODEL, DEMO_MODEL / "model.sig", other).verified
    relabel = verify_model(DEMO_MODEL, DEMO_MODEL / "model.sig", PUBLISHER, claim=Claim("model", "demo-ko-chat", "2.0"))
    assert not relabel.verified and "version 1.0" in relabel.reason
