"""The audit pack copies trust-root keys at the path the inventory names: never outside the pack.

Validation already refuses a key path with `..` (tests/security/test_validation.py); this is the second
layer, for an inventory object built without it (library use).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sovkit.audit.evidence import copy_trust_roots
from sovkit.signing.keys import LocalSigner


def test_a_key_path_escaping_the_pack_is_listed_not_copied(tmp_path: Path) -> None:
    site = tmp_path / "site" / "inv"
    site.mkdir(parents=True)
    key = LocalSigner.from_seed(b"audit key copy test").public_key
    (tmp_path / "site" / "outside.pub").write_bytes(key.pem())
    (site / "inside.pub").write_bytes(key.pem())
    entries = [SimpleNamespace(name="evil", public_key="../outside.pub"),
               SimpleNamespace(name="good", public_key="inside.pub")]
    inv: Any = SimpleNamespace(site=SimpleNamespace(trust_roots=SimpleNamespace(publishers=entries, vendors=[])),
                               resolve=lambda rel: site / rel)
    pack = tmp_path / "pack"
    pack.mkdir()
    keys = {k.name: k for k in copy_trust_roots(inv, pack, "inventory")}
    assert keys["evil"].path is None and keys["evil"].keyid == key.keyid
    assert not (pack / "outside.pub").exists() and not (tmp_path / "outside.pub").exists()
    assert keys["good"].path == "inventory/inside.pub" and (pack / "inventory" / "inside.pub").is_file()
