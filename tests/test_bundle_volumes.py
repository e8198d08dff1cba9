"""Volumes: split into parts, join back (disk by disk, resumable), and corrupt or malicious parts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sovkit.bundle.errors import BundleIncomplete, BundleInvalid
from sovkit.bundle.verify import verify_bundle
from sovkit.bundle.volumes import INDEX, LEDGER, join_volumes, parse_size, split_bundle
from sovkit.errors import BundleError
from tests.bundlekit import KEYS, demo_copy, make_bundle, snapshot
from tests.sitefactory import Site

MiB = 1 << 20


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a 3.5 MiB model file, so 1 MiB parts cut through blobs."""
    tmp = tmp_path_factory.mktemp("vol")
    inv = demo_copy(tmp)
    site = Site(inv.parent)
    big = bytes(range(256)) * (14 * 1024)  # 3.5 MiB
    site.bump_model("demo-ko-chat", "2.0", {"config.json": b"{}\n", "model.safetensors": big})
    site.save()
    make_bundle(inv, tmp / "bundle")
    return tmp / "bundle"


@pytest.mark.parametrize(("text", "expected"), [
    ("4G", 4 << 30), ("700M", 700 * MiB), ("1.5GiB", 3 << 29), ("1048576", MiB), ("2m", 2 * MiB),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["four gigs", "", "10K", "-1G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BundleError):
        parse_size(text)


def test_split_and_join_round_trip(bundle: Path, tmp_path: Path) -> None:
    report = split_bundle(bundle, tmp_path / "vols", MiB)
    parts = report.index.parts
    assert len(parts) >= 4
    assert all(p.size == MiB for p in parts[:-1]) and 0 < parts[-1].size <= MiB
    total = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    assert sum(p.size for p in parts) == total
    joined = join_volumes([tmp_path / "vols"], tmp_path / "joined")
    assert joined.written == len(report.index.files) and joined.reused == 0
    assert snapshot(tmp_path / "joined") == snapshot(bundle)
    verify_bundle(tmp_path / "joined", KEYS)


def test_join_disk_by_disk_resumes_without_rehashing(bundle: Path, tmp_path: Path) -> None:
    split_bundle(bundle, tmp_path / "vols", MiB)
    disk1, disk2 = tmp_path / "disk1", tmp_path / "disk2"
    parts = sorted((tmp_path / "vols").glob("part-*.svb"))
    for disk, chunk in ((disk1, parts[:2]), (disk2, parts[2:])):
        disk.mkdir()
        shutil.copy(tmp_path / "vols" / INDEX, disk)
        for p in chunk:
            shutil.copy(p, disk)
    out = tmp_path / "joined"
    with pytest.raises(BundleIncomplete) as exc:
        join_volumes([disk1], out)
    first = exc.value.report
    assert first.written > 0 and first.pending, "the files wholly on disk 1 are joined already"  # type: ignore[attr-defined]
    assert "part-0003.svb" in exc.value.message
    assert (out / LEDGER).exists()
    second = join_volumes([disk1, disk2], out)  # a file spanning both disks needs both
    assert second.reused == first.written  # type: ignore[attr-defined]
    assert second.written == len(first.pending)  # type: ignore[attr-defined]
    assert not (out / LEDGER).exists() and not (out / ".join-tmp").exists()
    verify_bundle(out, KEYS)


def test_corrupt_part_names_the_file_and_recopy_fixes_it(bundle: Path, tmp_path: Path) -> None:
    split_bundle(bundle, tmp_path / "vols", MiB)
    good = (tmp_path / "vols/part-0002.svb").read_bytes()
    bad = bytearray(good)
    bad[1000] ^= 0xFF
    (tmp_path / "vols/part-0002.svb").write_bytes(bytes(bad))
    out = tmp_path / "joined"
    with pytest.raises(BundleInvalid) as exc:
        join_volumes([tmp_path / "vols"], out)
    details = exc.value.details()
    assert len(details) == 1 and "read from part 1..4" in details[0] and "volumes.json says" in details[0], details
    (tmp_path / "vols/part-0002.svb").write_bytes(good)
    again = join_volumes([tmp_path / "vols"], out)
    assert again.reused > 0 and again.written >= 1
    verify_bundle(out, KEYS)


def test_truncated_part_is_named(bundle: Path, tmp_path: Path) -> None:
    split_bundle(bundle, tmp_path / "vols", MiB)
    p = tmp_path / "vols/part-0003.svb"
    p.write_bytes(p.read_bytes()[:1234])
    with pytest.raises(BundleInvalid) as exc:
        join_volumes([tmp_path / "vols"], tmp_path / "joined")
    assert any("part-0003.svb is 1234 bytes" in d for d in exc.value.details())


def test_index_with_a_path_escape_is_refused_before_writing(bundle: Path, tmp_path: Path) -> None:
    split_bundle(bundle, tmp_path / "vols", MiB)
    index = json.loads((tmp_path / "vols" / INDEX).read_text())
    index["files"][2]["name"] = "../../escaped"
    index["files"][3]["name"] = "/etc/passwd"
    (tmp_path / "vols" / INDEX).write_text(json.dumps(index))
    with pytest.raises(BundleInvalid) as exc:
        join_volumes([tmp_path / "vols"], tmp_path / "out" / "joined")
    assert len(exc.value.details()) == 2 and all("files." in d for d in exc.value.details())
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_cli_create_with_volumes_then_join_and_verify(tmp_path: Path) -> None:
    from sovkit.signing.keys import LocalSigner, write_keypair
    from tests.conftest import run_cli

    inv = demo_copy(tmp_path)
    pub = write_keypair(LocalSigner.generate(), tmp_path / "k" / "bundle.key", None)
    r = run_cli("bundle", "create", inv, "-o", tmp_path / "vols", "--key", tmp_path / "k/bundle.key",
                "--no-self", "--volume-size", "1M")
    assert r.code == 0, r.text
    assert "volume(s) in" in r.out and (tmp_path / "vols" / INDEX).exists()
    assert not (tmp_path / ".vols.whole").exists()
    parts = sorted(str(p) for p in (tmp_path / "vols").glob("part-*.svb"))
    r = run_cli("bundle", "join", *parts[:1], tmp_path / "vols" / INDEX, "-o", tmp_path / "b") if len(parts) > 1 \
        else None
    if r is not None:
        assert r.code == 4 and "run join again" in r.err, r.text
    r = run_cli("bundle", "join", tmp_path / "vols", "-o", tmp_path / "b")
    assert r.code == 0 and "joined into" in r.out, r.text
    r = run_cli("bundle", "verify", tmp_path / "b", "--key", pub)
    assert r.code == 0 and "bundle is intact and signed" in r.out, r.text


def test_bootstrap_extracts_wheels_from_parts_with_stdlib_only(tmp_path: Path) -> None:
    import hashlib
    import subprocess
    import sys

    from sovkit.bundle.gather import Source
    from sovkit.bundle.volumes import BOOTSTRAP
    from tests.bundlekit import SIGNER

    wheel = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK" + bytes(range(256)) * 9000)  # ~2.2 MiB: spans parts
    from sovkit.bundle.create import create_bundle

    create_bundle(tmp_path / "b", [Source(f"wheels/{wheel.name}", wheel, "wheel")], SIGNER, "demo", "0" * 64)
    split_bundle(tmp_path / "b", tmp_path / "vols", MiB)
    disk1, disk2 = tmp_path / "usb1", tmp_path / "usb2"
    parts = sorted((tmp_path / "vols").glob("part-*.svb"))
    for disk, chunk in ((disk1, parts[:1]), (disk2, parts[1:])):
        disk.mkdir()
        for p in [*chunk, tmp_path / "vols" / INDEX]:
            shutil.copy(p, disk)
    script = tmp_path / "vols" / BOOTSTRAP
    proc = subprocess.run([sys.executable, "-I", script, disk1, disk2, "-o", tmp_path / "wh"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    digest = hashlib.sha256((tmp_path / "b" / "manifest.json").read_bytes()).hexdigest()
    assert f"manifest sha256:{digest}" in proc.stdout
    assert (tmp_path / "wh" / wheel.name).read_bytes() == wheel.read_bytes()
    req = (tmp_path / "wh" / "requirements.txt").read_text()
    assert f"--hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}" in req
    proc = subprocess.run([sys.executable, "-I", script, disk1, "-o", tmp_path / "wh2"], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "pass the directory of the medium that holds it" in proc.stderr
