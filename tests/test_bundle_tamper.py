"""Every tampering case is rejected by verify AND by import, and import leaves the store exactly as it was."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.importer import import_bundle
from sovkit.bundle.manifest import BLOB_DIR, ENVELOPE, READABLE, Manifest, write_manifest
from sovkit.bundle.verify import verify_bundle
from tests.bundlekit import KEYS, OTHER, SIGNER, demo_copy, make_bundle, snapshot

WEIGHTS = "artifacts/models/demo-ko-chat/1.0/model.safetensors"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pristine")
    make_bundle(demo_copy(tmp), tmp / "bundle")
    return tmp / "bundle"


def _manifest(b: Path) -> Manifest:
    return Manifest.model_validate_json((b / READABLE).read_bytes())


def _blob(b: Path, path: str = WEIGHTS) -> Path:
    entry = next(e for e in _manifest(b).entries if e.path == path)
    return b / BLOB_DIR / entry.sha256


def flip_byte(b: Path) -> None:
    f = _blob(b)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


def truncate(b: Path) -> None:
    f = _blob(b)
    f.write_bytes(f.read_bytes()[:-100])


def extra_file(b: Path) -> None:
    (b / BLOB_DIR / ("0" * 64)).write_bytes(b"smuggled")
    (b / "README.txt").write_text("hello")


def missing_file(b: Path) -> None:
    _blob(b).unlink()


def edited_manifest(b: Path) -> None:
    text = (b / READABLE).read_text().replace('"size":65712', '"size":65713')
    (b / READABLE).write_text(text)


def edited_signed_payload(b: Path) -> None:
    env = json.loads((b / ENVELOPE).read_text())
    payload = base64.b64decode(env["payload"]).replace(b'"site":"demo"', b'"site":"evil"')
    env["payload"] = base64.b64encode(payload).decode()
    (b / ENVELOPE).write_text(json.dumps(env))


def other_key(b: Path) -> None:
    write_manifest(b, _manifest(b), OTHER)


def _resign_with(b: Path, change: Callable[[dict[str, object]], None]) -> None:
    """Alter the manifest and sign it with the TRUSTED key: the path checks must stand on their own."""
    data = json.loads((b / READABLE).read_bytes())
    change(data)
    write_manifest(b, Manifest.model_validate(data), SIGNER)


def dotdot_entry(b: Path) -> None:
    def change(d: dict[str, object]) -> None:
        entries = d["entries"]
        assert isinstance(entries, list)
        entries[0]["path"] = "artifacts/../../../etc/cron.d/evil"
        entries[1]["path"] = "/etc/passwd"
    _resign_with(b, change)


def symlink_out(b: Path) -> None:
    f = _blob(b)
    outside = b.parent / f"outside-{b.name}"
    outside.write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(outside)


def hard_link(b: Path) -> None:
    f = _blob(b)
    os.link(f, b.parent / f"hardlink-{b.name}")


def fifo(b: Path) -> None:
    f = _blob(b)
    f.unlink()
    os.mkfifo(f)


CASES: list[tuple[Callable[[Path], None], str]] = [
    (flip_byte, "blob altered"),
    (truncate, "(truncated or altered)"),
    (extra_file, "blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000 is an extra file"),
    (missing_file, f"missing blob {BLOB_DIR}/"),
    (edited_manifest, "manifest.json was edited"),
    (edited_signed_payload, "signature does not verify"),
    (other_key, "signed by an unknown key"),
    (dotdot_entry, "contains '..'"),
    (symlink_out, "(outside the bundle); links are not allowed"),
    (hard_link, "is a hard link (2 links)"),
    (fifo, "is a FIFO"),
]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store that already holds files (one at a path the bundle would overwrite)."""
    s = tmp_path / "store"
    (s / "models/demo-ko-chat/1.0").mkdir(parents=True)
    (s / "models/demo-ko-chat/1.0/model.safetensors").write_bytes(b"the site's current weights")
    (s / "other.bin").write_bytes(b"unrelated")
    return s


@pytest.mark.parametrize(("tamper", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_rejected_and_the_store_is_unchanged(
    tamper: Callable[[Path], None], expected: str, pristine: Path, tmp_path: Path, store: Path
) -> None:
    b = tmp_path / "bundle"
    shutil.copytree(pristine, b)
    verify_bundle(b, KEYS)  # the copy is good before tampering
    tamper(b)
    with pytest.raises(BundleInvalid) as exc:
        verify_bundle(b, KEYS, workers=2)
    assert any(expected in d for d in exc.value.details()), exc.value.details()
    before = snapshot(store)
    site = tmp_path / "site"
    with pytest.raises(BundleInvalid) as exc2:
        import_bundle(b, store, KEYS, site_dir=site, workers=2)
    assert any(expected in d for d in exc2.value.details()), exc2.value.details()
    assert snapshot(store) == before
    assert not site.exists()


def test_dotdot_and_absolute_paths_are_both_named(pristine: Path, tmp_path: Path) -> None:
    b = tmp_path / "bundle"
    shutil.copytree(pristine, b)
    dotdot_entry(b)
    with pytest.raises(BundleInvalid) as exc:
        verify_bundle(b, KEYS)
    details = exc.value.details()
    assert any("'artifacts/../../../etc/cron.d/evil' contains '..'" in d for d in details)
    assert any("'/etc/passwd' is an absolute path" in d for d in details)


def test_every_problem_is_reported_not_just_the_first(pristine: Path, tmp_path: Path, store: Path) -> None:
    b = tmp_path / "bundle"
    shutil.copytree(pristine, b)
    flip_byte(b)
    missing_file_path = _blob(b, "artifacts/firmware/atom-max-1.2.0.fw")
    missing_file_path.unlink()
    extra_file(b)
    edited_manifest(b)
    other_key(b)
    before = snapshot(store)
    with pytest.raises(BundleInvalid) as exc:
        import_bundle(b, store, KEYS)
    text = "\n".join(exc.value.details())
    for expected in ("signed by an unknown key", "blob altered", "missing blob", "is an extra file",
                     "README.txt is an extra file"):
        assert expected in text, text
    assert exc.value.message.startswith("bundle failed verification: ")
    assert snapshot(store) == before


def test_cli_reports_problems_without_traceback(pristine: Path, tmp_path: Path,
                                                 cli: Callable[..., object]) -> None:
    from tests.conftest import CliResult

    b = tmp_path / "bundle"
    shutil.copytree(pristine, b)
    truncate(b)
    pub = tmp_path / "signer.pub"
    pub.write_bytes(SIGNER.public_key.pem())
    r = cli("bundle", "verify", b, "--key", pub)
    assert isinstance(r, CliResult)
    assert r.code == 1 and "bundle failed verification: 1 problem" in r.err and "truncated" in r.err, r.text
    assert "Traceback" not in r.err
    store = tmp_path / "store"
    r = cli("bundle", "import", b, "--store", store, "--key", pub)
    assert isinstance(r, CliResult)
    assert r.code == 1 and "truncated" in r.err and not store.exists()
    r = cli("bundle", "verify", b)
    assert isinstance(r, CliResult)
    assert r.code == 1 and "no public key given" in r.err
