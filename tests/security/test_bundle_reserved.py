"""Finding 7: a bundle signed by a trusted key still cannot write sovkit's own files.

The attack: a (compromised) bundle signer adds manifest entries whose paths are sovkit's reserved
files, pointing at a blob the bundle already carries, and signs the manifest with the trusted key,
so signature, listing and digest checks all pass. Before the fix `artifacts/.sovkit-store.jsonl`
replaced the store index (every later import then failed with an internal error) and
`inventory/.sovkit/keys/operator.key` / `inventory/.sovkit/state.json` were written into --site-dir.
Now each is refused at create, verify and import, and the store and site are left as they were.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.importer import import_bundle
from sovkit.bundle.manifest import READABLE, Manifest, write_manifest
from sovkit.bundle.verify import verify_bundle
from tests.bundlekit import KEYS, SIGNER, demo_copy, make_bundle, snapshot

RESERVED = [
    "artifacts/.sovkit-store.jsonl",
    "inventory/.sovkit/keys/operator.key",
    "inventory/.sovkit/state.json",
    "inventory/.sovkit/attestations/log.jsonl",
    "artifacts/.sovkit-import.lock",
    "artifacts/models/demo-ko-chat/1.0/.model.safetensors.sovkit-tmp",
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pristine")
    make_bundle(demo_copy(tmp), tmp / "bundle")
    return tmp / "bundle"


def _with_entry(pristine: Path, tmp_path: Path, path: str) -> Path:
    """A copy of the bundle with one more entry at ``path`` (an existing blob), signed with the trusted key."""
    b = tmp_path / "bundle"
    shutil.copytree(pristine, b)
    data = json.loads((b / READABLE).read_bytes())
    first = dict(data["entries"][0])
    data["entries"].append({**first, "path": path, "items": []})
    write_manifest(b, Manifest.model_validate(data), SIGNER)
    return b


@pytest.mark.parametrize("path", RESERVED)
def test_reserved_path_is_refused_at_verify_and_import(pristine: Path, tmp_path: Path, path: str) -> None:
    b = _with_entry(pristine, tmp_path, path)
    with pytest.raises(BundleInvalid) as exc:
        verify_bundle(b, KEYS)
    assert any("reserved for sovkit's own files" in d and path in d for d in exc.value.details()), \
        exc.value.details()

    store = tmp_path / "store"
    site = tmp_path / "site"
    import_bundle(pristine, store, KEYS, site_dir=site)  # a store and site that already hold the genuine bundle
    before_store, before_site = snapshot(store), snapshot(site)
    with pytest.raises(BundleInvalid) as exc2:
        import_bundle(b, store, KEYS, site_dir=site)
    assert any("reserved for sovkit's own files" in d for d in exc2.value.details())
    assert snapshot(store) == before_store
    assert snapshot(site) == before_site
    assert not (site / "inventory" / ".sovkit").exists()
    # the store still takes a genuine import (its index was not replaced)
    import_bundle(pristine, store, KEYS, site_dir=site)


def test_cli_refuses_without_internal_error(pristine: Path, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    b = _with_entry(pristine, tmp_path, "artifacts/.sovkit-store.jsonl")
    pub = tmp_path / "bundle.pub"
    pub.write_bytes(SIGNER.public_key.pem())
    r = run_cli("bundle", "import", b, "--store", tmp_path / "store", "--key", pub)
    assert r.code != 0
    assert "internal error" not in r.text
    assert "reserved for sovkit's own files" in r.text
    assert not (tmp_path / "store").exists()


def test_create_refuses_an_inventory_pointing_into_reserved_names(tmp_path: Path) -> None:
    inventory = demo_copy(tmp_path)
    root = inventory.parent
    (root / ".sovkit" / "keys").mkdir(parents=True)
    shutil.copy(root / "keys" / "publisher.pub", root / ".sovkit" / "keys" / "publisher.pub")
    data = yaml.safe_load(inventory.read_text())
    data["trust_roots"]["publishers"][0]["public_key"] = ".sovkit/keys/publisher.pub"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BundleInvalid) as exc:
        make_bundle(inventory, tmp_path / "out")
    assert any("inventory/.sovkit/keys/publisher.pub" in d and "reserved" in d for d in exc.value.details()), \
        exc.value.details()
    assert not (tmp_path / "out").exists()


LONG = [
    "artifacts/models/" + "n" * 300 + ".bin",           # one name past NAME_MAX: ENAMETOOLONG at import before
    "artifacts/" + "/".join(["d" * 200] * 6) + "/x",   # every name legal, the whole path past the budget
]


@pytest.mark.parametrize("path", LONG)
def test_over_long_path_is_a_clear_refusal_not_an_internal_error(pristine: Path, tmp_path: Path, path: str) -> None:
    """A signed entry whose name or path the file system cannot hold is refused at verify and import, named."""
    b = _with_entry(pristine, tmp_path, path)
    with pytest.raises(BundleInvalid) as exc:
        verify_bundle(b, KEYS)
    assert any("bytes" in d and ("at most 255" in d or "at most 1024" in d) for d in exc.value.details()), \
        exc.value.details()
    store = tmp_path / "store"
    with pytest.raises(BundleInvalid):
        import_bundle(b, store, KEYS, site_dir=tmp_path / "site")
    assert not store.exists()
