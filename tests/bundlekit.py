"""Helpers for bundle tests: a writable demo site, keys, a bundle of it, and tree snapshots."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sovkit.bundle.create import CreateReport, create_bundle
from sovkit.bundle.gather import inventory_sources, shipped_sources
from sovkit.bundle.manifest import Manifest
from sovkit.inventory import load_inventory
from sovkit.signing.keys import LocalSigner, PublicKey
from tests.conftest import INVENTORIES

SIGNER = LocalSigner.from_seed(b"sovkit bundle tests (public seed, tests only)")
OTHER = LocalSigner.from_seed(b"someone else (public seed, tests only)")
KEYS: list[PublicKey] = [SIGNER.public_key]


def demo_copy(tmp: Path) -> Path:
    """A copy of the demo inventory (with its artifact store) that tests may edit."""
    root = tmp / "demo"
    shutil.copytree(INVENTORIES / "demo", root, ignore=shutil.ignore_patterns(".sovkit", "hosts"))
    return root / "site.yaml"


def make_bundle(inventory: Path, out: Path, since: Manifest | None = None, workers: int | None = 1,
                signer: LocalSigner = SIGNER) -> CreateReport:
    loaded = load_inventory(inventory, check_files=False)
    sources = [*inventory_sources(loaded, []), *shipped_sources()]
    return create_bundle(out, sources, signer, loaded.site.metadata.name, loaded.digest, since, workers=workers)


def snapshot(root: Path, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """Every path under ``root`` with its type and content digest (to prove a tree did not change)."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in ignore]
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel_dir, d))] = "dir"
        for f in filenames:
            p = Path(dirpath) / f
            out[os.path.normpath(os.path.join(rel_dir, f))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
