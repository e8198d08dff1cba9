"""Bundle create → verify → import round trip, differential bundles, and the CLI around them."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.importer import LOCK, import_bundle
from sovkit.bundle.manifest import ENVELOPE, PAYLOAD_TYPE, load_any_manifest
from sovkit.bundle.verify import verify_bundle
from sovkit.errors import BundleError
from sovkit.inventory import load_inventory
from tests.bundlekit import KEYS, SIGNER, demo_copy, make_bundle, snapshot
from tests.conftest import CliResult


def test_round_trip_carries_everything_and_imports_byte_for_byte(tmp_path: Path) -> None:
    inv = demo_copy(tmp_path)
    src_store = inv.parent / "artifacts"
    report = make_bundle(inv, tmp_path / "b", workers=2)
    m = report.manifest
    kinds = {e.kind for e in m.entries}
    assert {"firmware", "firmware-signature", "runtime", "runtime-signature", "model", "model-signature",
            "trust-root", "inventory", "policy", "template"} <= kinds
    fw = next(e for e in m.entries if e.path == "artifacts/firmware/atom-max-1.2.0.fw")
    assert fw.items == ["firmware:atom-max-fw-1.2.0@1.2.0"] and fw.size == 65712
    assert any(e.path == "inventory/keys/publisher.pub" and e.items == ["publisher:sovkit-demo-lab"]
               for e in m.entries)
    assert any(e.path.startswith("templates/ansible/") for e in m.entries)
    assert not (tmp_path / ".b.partial").exists()

    verified = verify_bundle(tmp_path / "b", KEYS, workers=2)
    assert verified.manifest == m

    store, site = tmp_path / "store", tmp_path / "site"
    done = import_bundle(tmp_path / "b", store, KEYS, site_dir=site, workers=2)
    artifacts = {p.relative_to(src_store).as_posix() for p in src_store.rglob("*") if p.is_file()}
    assert artifacts <= {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    for rel in artifacts:
        assert (store / rel).read_bytes() == (src_store / rel).read_bytes()
    assert (site / "inventory/site.yaml").read_bytes() == inv.read_bytes()
    assert not (store / ".sovkit-import").exists()
    # the carried inventory, pointed at the imported store, is complete (every file check passes)
    data = yaml.safe_load((site / "inventory/site.yaml").read_text())
    data["artifact_store"]["path"] = str(store)
    (site / "inventory/site.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_inventory(site / "inventory/site.yaml").artifact_root == store
    assert len(done.committed) == len(m.entries)

    again = import_bundle(tmp_path / "b", store, KEYS, workers=1)
    assert again.committed == [] and len(again.unchanged) == sum(e.path.startswith("artifacts/") for e in m.entries)


def test_manifest_signature_verifies_with_securesystemslib(tmp_path: Path) -> None:
    make_bundle(demo_copy(tmp_path), tmp_path / "b")
    data = json.loads((tmp_path / "b" / ENVELOPE).read_text())
    assert data["payloadType"] == PAYLOAD_TYPE
    env = SslibEnvelope.from_dict(copy.deepcopy(data))
    key = SSlibKey.from_crypto(SIGNER.public_key.key, keyid=SIGNER.keyid)
    verified = env.verify([key], 1)
    assert SIGNER.keyid in verified
    assert (tmp_path / "b" / "manifest.json").read_bytes() == env.pae()[env.pae().index(b"{"):]


def test_every_missing_artifact_and_key_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    inv = demo_copy(tmp_path)
    (inv.parent / "artifacts/firmware/atom-max-1.3.0.fw").unlink()
    (inv.parent / "keys/vendor-rebellions.pub").unlink()
    with pytest.raises(BundleInvalid) as exc:
        make_bundle(inv, tmp_path / "b")
    text = "\n".join(exc.value.details())
    assert "artifact firmware/atom-max-1.3.0.fw not found" in text
    assert "vendor:rebellions: trust-root key keys/vendor-rebellions.pub not found" in text
    assert not (tmp_path / "b").exists() and not (tmp_path / ".b.partial").exists()


def test_pinned_digest_mismatch_lists_the_item(tmp_path: Path) -> None:
    inv = demo_copy(tmp_path)
    weights = inv.parent / "artifacts/models/demo-ko-chat/1.0/model.safetensors"
    weights.write_bytes(b"x" * weights.stat().st_size)
    with pytest.raises(BundleInvalid) as exc:
        make_bundle(inv, tmp_path / "b")
    assert any("model:demo-ko-chat@1.0" in d and "the inventory pins" in d for d in exc.value.details())
    assert not (tmp_path / "b").exists() and not (tmp_path / ".b.partial").exists()


def test_output_that_exists_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep").write_text("mine")
    with pytest.raises(BundleError, match="already exists"):
        make_bundle(demo_copy(tmp_path), tmp_path / "b")
    assert (tmp_path / "b" / "keep").read_text() == "mine"


def _bump_model(inv: Path) -> None:
    """A new model version: new weights, same tokenizer bytes (so only the new content must travel)."""
    from tests.sitefactory import Site

    site = Site(inv.parent)
    old = site.model("demo-ko-chat")
    files = {Path(f["path"]).name: (inv.parent / "artifacts" / f["path"]).read_bytes() for f in old["files"]}
    files["model.safetensors"] = b"new weights " * 1000
    site.bump_model("demo-ko-chat", "1.1", files)
    site.save()


def test_differential_bundle_carries_only_new_blobs(tmp_path: Path) -> None:
    inv = demo_copy(tmp_path)
    first = make_bundle(inv, tmp_path / "b1")
    store = tmp_path / "store"
    import_bundle(tmp_path / "b1", store, KEYS)
    _bump_model(inv)
    base = load_any_manifest(tmp_path / "b1" / ENVELOPE)
    second = make_bundle(inv, tmp_path / "b2", since=base)
    m = second.manifest
    assert m.since == first.manifest.digest()
    carried = {e.path for e in m.entries if e.carried}
    assert carried == {"artifacts/models/demo-ko-chat/1.1/model.safetensors",
                       "artifacts/models/demo-ko-chat/1.1/model.sig", "inventory/site.yaml"}
    blobs = {p.name for p in (tmp_path / "b2/blobs/sha256").iterdir()}
    assert blobs == {e.sha256 for e in m.entries if e.carried}
    # unchanged tokenizer moved to a new path: found in the store by content, not carried
    tok = next(e for e in m.entries if e.path == "artifacts/models/demo-ko-chat/1.1/tokenizer.json")
    assert not tok.carried
    verify_bundle(tmp_path / "b2", KEYS)

    empty = tmp_path / "empty-store"
    empty.mkdir()
    (empty / "keep.txt").write_text("site file")
    before = snapshot(empty)
    with pytest.raises(BundleInvalid) as exc:
        import_bundle(tmp_path / "b2", empty, KEYS)
    assert any("not carried by this differential bundle" in d for d in exc.value.details())
    assert snapshot(empty) == before
    not_yet = tmp_path / "no-store-yet"  # refused before anything is staged: not even the directory stays
    with pytest.raises(BundleInvalid):
        import_bundle(tmp_path / "b2", not_yet, KEYS)
    assert not not_yet.exists()

    import_bundle(tmp_path / "b2", store, KEYS)
    new_dir = store / "models/demo-ko-chat/1.1"
    assert (new_dir / "tokenizer.json").read_bytes() == (inv.parent / "artifacts/models/demo-ko-chat/1.1/"
                                                         "tokenizer.json").read_bytes()
    assert (new_dir / "model.safetensors").read_bytes() == b"new weights " * 1000
    assert (store / "models/demo-ko-chat/1.0/model.safetensors").exists()


def test_since_accepts_bundle_dir_and_plain_manifest(tmp_path: Path) -> None:
    made = make_bundle(demo_copy(tmp_path), tmp_path / "b")
    assert load_any_manifest(tmp_path / "b") == made.manifest
    assert load_any_manifest(tmp_path / "b" / "manifest.json") == made.manifest
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(BundleError, match="is not JSON"):
        load_any_manifest(tmp_path / "junk.json")


def test_cli_create_verify_import_and_clear_errors(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    from sovkit.signing.keys import LocalSigner, write_keypair

    inv = demo_copy(tmp_path)
    key = tmp_path / "k" / "bundle.key"
    pub = write_keypair(LocalSigner.generate(), key, None)
    r = cli("bundle", "create", inv, "-o", tmp_path / "b", "--no-self")
    assert r.code == 1 and "no signing key given" in r.err and not (tmp_path / "b").exists(), r.text
    r = cli("bundle", "create", inv, "-o", tmp_path / "b", "--no-self", "--key", key, "--volume-size", "lots")
    assert r.code == 1 and "volume size 'lots' is not a size" in r.err, r.text
    r = cli("bundle", "create", inv, "-o", tmp_path / "b", "--no-self", "--key", key, "--json")
    assert r.code == 0, r.text
    created = json.loads(r.out)
    assert created["carried_blobs"] > 20 and created["since"] is None
    r = cli("bundle", "verify", tmp_path / "b", "--key", pub, "--json")
    assert r.code == 0 and json.loads(r.out)["facts"]["manifest_sha256"] == created["manifest_sha256"], r.text
    r = cli("bundle", "import", tmp_path / "b", "--store", tmp_path / "store", "--key", pub)
    assert r.code == 0 and "file(s) written" in r.out, r.text
    r = cli("bundle", "verify", tmp_path / "nope", "--key", pub)
    assert r.code == 1 and "is not a bundle directory" in r.err, r.text
    r = cli("bundle", "create", inv, "-o", tmp_path / "b2", "--no-self", "--key", key, "--since", tmp_path / "x.json")
    assert r.code == 1 and "cannot read manifest" in r.err and not (tmp_path / "b2").exists(), r.text


def test_a_second_concurrent_import_into_the_same_store_is_refused(tmp_path: Path) -> None:
    """Two imports would share a staging area and interleave commits; the second one stops before touching."""
    inv = demo_copy(tmp_path)
    make_bundle(inv, tmp_path / "b")
    store = tmp_path / "store"
    store.mkdir()
    (store / "existing.bin").write_bytes(b"site data")
    before = snapshot(store)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from sovkit.flock import exclusive\n"
         f"with exclusive(Path({str(store / LOCK)!r}), remove=True):\n"
         "    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(BundleError) as err:
            import_bundle(tmp_path / "b", store, KEYS)
        assert f"another import into {store} is running (pid {holder.pid})" in str(err.value)
        assert "wait for it to finish" in (err.value.hint or "")
        after = snapshot(store)
        assert after.pop(LOCK) == hashlib.sha256(f"pid {holder.pid}\n".encode()).hexdigest()  # the holder's own
        assert after == before
        # a holder that is killed leaves no stale lock: the kernel drops it
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    done = import_bundle(tmp_path / "b", store, KEYS)
    assert done.committed and (store / "existing.bin").read_bytes() == b"site data"
    assert not (store / LOCK).exists()
