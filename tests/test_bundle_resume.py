"""Interrupted imports: resume without re-hashing what was verified; a failed commit rolls the store back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sovkit.bundle import hashing
from sovkit.bundle.importer import INDEX, WORK, import_bundle
from sovkit.bundle.manifest import Manifest
from sovkit.errors import BundleError
from tests.bundlekit import KEYS, SIGNER, demo_copy, make_bundle, snapshot
from tests.conftest import ROOT


class Crash(Exception):
    """An injected failure standing in for a power cut or a pulled disk."""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    tmp = tmp_path_factory.mktemp("resume")
    made = make_bundle(demo_copy(tmp), tmp / "bundle")
    return tmp / "bundle", made.manifest


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every blob the importer hashes (workers=1 keeps hashing in this process)."""
    hashed: list[str] = []
    real = hashing.digest_file

    def spy(job: hashing.Job, on_bytes: hashing.OnBytes | None = None, durable: bool = True) -> hashing.Digest:
        hashed.append(Path(job.src).name)
        return real(job, on_bytes, durable)

    monkeypatch.setattr(hashing, "digest_file", spy)
    return hashed


def test_resume_after_interrupted_staging_skips_verified_blobs(
    bundle: tuple[Path, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b, manifest = bundle
    store = tmp_path / "store"
    store.mkdir()
    (store / "existing.bin").write_bytes(b"site data")
    before = snapshot(store)
    staged: list[str] = []

    def crash_after_five(stage: str, name: str) -> None:
        if stage == "staged":
            staged.append(name)
            if len(staged) == 5:
                raise Crash("power cut")

    with pytest.raises(Crash):
        import_bundle(b, store, KEYS, site_dir=tmp_path / "site", workers=1, fault=crash_after_five)
    assert snapshot(store, ignore=(WORK,)) == before, "nothing outside the staging area may change"
    assert len(list((store / WORK).glob("*/blobs/*"))) == 5

    hashed = _count_hashing(monkeypatch)
    report = import_bundle(b, store, KEYS, site_dir=tmp_path / "site", workers=1)
    blobs = set(manifest.carried_blobs())
    assert report.reused == 5 and report.hashed == len(blobs) - 5
    assert set(hashed) == blobs - set(staged), "verified blobs must not be hashed again"
    assert not (store / WORK).exists()
    for e in manifest.entries:
        rel = e.path.split("/", 1)[1] if e.path.startswith("artifacts/") else None
        if rel:
            assert (store / rel).stat().st_size == e.size


def test_failed_commit_rolls_back_every_file(bundle: tuple[Path, Manifest], tmp_path: Path) -> None:
    b, manifest = bundle
    store = tmp_path / "store"
    weights = store / "models/demo-ko-chat/1.0/model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"older weights the import would replace")
    (store / "existing.bin").write_bytes(b"site data")
    before = snapshot(store)
    committed: list[str] = []

    def crash_mid_commit(stage: str, name: str) -> None:
        if stage == "commit":
            committed.append(name)
            if len(committed) == 8:
                raise OSError(28, "No space left on device")

    with pytest.raises(BundleError, match="the store is as it was") as exc:
        import_bundle(b, store, KEYS, workers=1, fault=crash_mid_commit)
    assert f"no space left on {store}" in exc.value.message
    # disk full: the staging area is removed too (keeping it would hold the space the retry needs)
    assert snapshot(store) == before
    assert weights.read_bytes() == b"older weights the import would replace"

    report = import_bundle(b, store, KEYS, workers=1)
    assert report.hashed == len(manifest.carried_blobs())
    assert weights.read_bytes() != b"older weights the import would replace"
    assert (store / INDEX).exists() and not (store / WORK).exists()


def test_killed_import_resumes(bundle: tuple[Path, Manifest], tmp_path: Path) -> None:
    """A real SIGKILL mid-staging (slowed down by a big blob), then a normal import completes."""
    from tests.sitefactory import Site

    inv = demo_copy(tmp_path)
    site = Site(inv.parent)
    data = os.urandom(1 << 20) * 300  # 300 MiB
    site.bump_model("demo-ko-chat", "9.0", {"model.safetensors": data})
    site.save()
    made = make_bundle(inv, tmp_path / "b", workers=2)
    store = tmp_path / "store"
    pub = tmp_path / "signer.pub"
    pub.write_bytes(SIGNER.public_key.pem())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sovkit", "bundle", "import", str(tmp_path / "b"), "--store",
                             str(store), "--key", str(pub), "--json"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger_glob = f"{WORK}/*/ledger.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size for p in store.glob(ledger_glob)) and list(store.glob(f"{WORK}/*/tmp/*")):
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the import finished before it could be killed (machine too fast for this size)")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (store / "models/demo-ko-chat/9.0/model.safetensors").exists()
    verified_before = sum(1 for _ in next(store.glob(ledger_glob)).open())
    report = import_bundle(tmp_path / "b", store, KEYS, workers=1)
    assert report.reused >= verified_before >= 1
    assert report.reused + report.hashed == len(made.manifest.carried_blobs())
    assert (store / "models/demo-ko-chat/9.0/model.safetensors").read_bytes() == data
