"""Runtime formats the examples use: a wheelhouse archive (tar/zip of wheels) unpacked on the host before pip,
and deb packages installed with dpkg. The helper runs as the real program; the applies are real (local hosts)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from sovkit.resources import templates_dir
from sovkit.signing.artifacts import sign_artifacts
from sovkit.state.models import State
from tests.conftest import run_cli
from tests.sitefactory import VENDOR, Site, make_site

HELPER = templates_dir() / "ansible" / "helpers" / "wheelhouse.py"
WHEEL = "simnpu_serve-1.0.0-py3-none-any.whl"


def _gather(staging: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HELPER), str(staging), str(staging / "wheelhouse")],
                          capture_output=True, text=True, check=False)


def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_archives_are_unpacked_flat_and_only_wheels_are_taken(tmp_path: Path) -> None:
    _tar(tmp_path / "vllm-rbln-0.9.2-wheelhouse.tar.gz",
         {"wheels/a-1.0-py3-none-any.whl": b"A", "wheels/README": b"not a wheel", "b-2.0-py3-none-any.whl": b"B"})
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:
        zf.writestr("deep/dir/c-3.0-py3-none-any.whl", b"C")
    (tmp_path / "d-4.0-py3-none-any.whl").write_bytes(b"D")
    real = io.BytesIO()  # a real (zip) wheel stored uncompressed in a plain tar: the tar looks like a zip too
    with zipfile.ZipFile(real, "w") as zf:
        zf.writestr("e/__init__.py", "")
    _tar(tmp_path / "plain.tar", {"e-5.0-py3-none-any.whl": real.getvalue()}, "w")
    r = _gather(tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, "5"), r.stderr
    got = {p.name: p.read_bytes() for p in (tmp_path / "wheelhouse").iterdir()}
    assert got == {"a-1.0-py3-none-any.whl": b"A", "b-2.0-py3-none-any.whl": b"B", "c-3.0-py3-none-any.whl": b"C",
                   "d-4.0-py3-none-any.whl": b"D", "e-5.0-py3-none-any.whl": real.getvalue()}


def test_links_traversal_and_empty_archives_are_refused(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.mkdir()
    with tarfile.open(link / "wh.tar", "w") as tar:
        info = tarfile.TarInfo("evil-1.0-py3-none-any.whl")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    r = _gather(link)
    assert r.returncode == 1 and "not a regular file" in r.stderr
    assert not (link / "wheelhouse" / "evil-1.0-py3-none-any.whl").exists()

    trav = tmp_path / "trav"
    trav.mkdir()
    _tar(trav / "wh.tar", {"../../x-1.0-py3-none-any.whl": b"X"}, "w")
    assert _gather(trav).returncode == 0
    assert (trav / "wheelhouse" / "x-1.0-py3-none-any.whl").read_bytes() == b"X", "written flat, inside OUT only"
    assert not (tmp_path.parent / "x-1.0-py3-none-any.whl").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    _tar(empty / "wh.tar", {"README": b"nothing"}, "w")
    r = _gather(empty)
    assert r.returncode == 1 and "holds no wheels" in r.stderr

    clash = tmp_path / "clash"
    clash.mkdir()
    _tar(clash / "a.tar", {"y-1.0-py3-none-any.whl": b"one"}, "w")
    _tar(clash / "b.tar", {"y-1.0-py3-none-any.whl": b"two"}, "w")
    r = _gather(clash)
    assert r.returncode == 1 and "a different y-1.0-py3-none-any.whl" in r.stderr


def _runtime(site: Site) -> dict[str, object]:
    rt: dict[str, object] = site.data["runtimes"][0]
    return rt


def _set_runtime(site: Site, rel: str, data: bytes, fmt: str) -> None:
    art = site.put(rel, data)
    sig = f"runtime/simnpu-serve-1.0.0-{fmt}.sig"
    site.put(sig, sign_artifacts({rel: art["sha256"]}, VENDOR, "runtime", "simnpu-serve", "1.0.0").to_json().encode())
    _runtime(site).update(format=fmt, artifacts=[art], signature=sig)
    site.save()


def _state(site: Site) -> State:
    return State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())


@pytest.mark.slow
def test_apply_installs_a_wheelhouse_archive(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    wheel = (site.store / "runtime" / WHEEL).read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"simnpu-serve-1.0.0-wheelhouse/{WHEEL}")
        info.size = len(wheel)
        tar.addfile(info, io.BytesIO(wheel))
    _set_runtime(site, "runtime/simnpu-serve-1.0.0-wheelhouse.tar", buf.getvalue(), "wheelhouse")
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    for h in ("npu-node-1", "npu-node-2"):
        init = site.host_root(h) / "opt/sovkit/runtimes/simnpu-serve/1.0.0/simnpu_serve/__init__.py"
        assert '__version__ = "1.0.0"' in init.read_text()
        rec = _state(site).hosts[h].runtimes["simnpu-serve"]
        assert (rec.format, list(rec.artifacts)) == ("wheelhouse", ["runtime/simnpu-serve-1.0.0-wheelhouse.tar"])
    doc = json.loads((site.root / ".sovkit" / "state.json").read_text())
    assert "format" not in doc["hosts"]["npu-node-1"]["runtimes"]["simnpu-serve"], "wheelhouse states unchanged"
    assert run_cli("plan", site.path, "--refresh", "--detailed-exitcode").code == 0


def _runtime_deb(tmp: Path, wheel: bytes) -> bytes:
    """A deb of the demo runtime whose files land in sovkit's runtime prefix (what the demo launch imports)."""
    tree = tmp / "simnpu-serve-deb"
    prefix = tree / "opt/sovkit/runtimes/simnpu-serve/1.0.0"
    prefix.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        zf.extractall(prefix)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text("Package: simnpu-serve\nVersion: 1.0.0\nArchitecture: all\n"
                                        "Maintainer: sovkit tests <t@example.invalid>\nDescription: demo runtime\n")
    out = tmp / "simnpu-serve_1.0.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)], check=True,
                   capture_output=True)
    return out.read_bytes()


@pytest.mark.slow
def test_apply_installs_a_deb_runtime_with_dpkg_and_reads_its_version_back(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    deb = _runtime_deb(tmp_path, (site.store / "runtime" / WHEEL).read_bytes())
    _set_runtime(site, "runtime/simnpu-serve_1.0.0_all.deb", deb, "deb")
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    for h in ("npu-node-1", "npu-node-2"):
        root = site.host_root(h)
        shown = subprocess.run(["dpkg-query", f"--root={root}", "-W", "-f", "${Version}", "simnpu-serve"],
                               capture_output=True, text=True, check=True).stdout
        assert shown == "1.0.0"
        assert _state(site).hosts[h].runtimes["simnpu-serve"].format == "deb"
    assert run_cli("plan", site.path, "--refresh", "--detailed-exitcode").code == 0
    # the package database says another version: refresh reads it with dpkg-query and plans a reinstall
    status = site.host_root("npu-node-2") / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("Version: 1.0.0", "Version: 0.9.9"))
    drift = run_cli("plan", site.path, "--refresh", "--json", "--detailed-exitcode")
    assert drift.code == 2, drift.text
    assert [(c["host"], c["component"], c["reason"]) for c in json.loads(drift.out)["plan"]["changes"]] == [
        ("npu-node-2", "runtime", "0.9.9 → 1.0.0")]
