"""Finding 8 (apply part): a full disk stops apply with one clear message, the state consistent with the hosts.

Each case mounts a small tmpfs (tests run as root) for the state directory and fills it; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovkit.simulator import read_devices
from tests.conftest import run_cli
from tests.sitefactory import make_site

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path, leave_kib: int) -> None:
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with (path / "filler").open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave_kib * 1024))


def _ansible_left(run_root: Path) -> list[str]:
    """Live ansible-playbook processes of this run (a killed one may linger as a zombie until init reaps it)."""
    out = subprocess.run(["pgrep", "-af", "ansible-playbook"], capture_output=True, text=True).stdout
    alive = []
    for line in out.splitlines():
        if str(run_root) not in line:
            continue
        with contextlib.suppress(OSError):
            if Path(f"/proc/{line.split()[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(line)
    return alive


@pytest.mark.slow
def test_apply_with_200k_free_fails_fast_and_touches_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    with _tmpfs(tmp_path / "state", "2m") as state:
        (state / "keys").mkdir()
        for f in (site.root / ".sovkit/keys").iterdir():
            (state / "keys" / f.name).write_bytes(f.read_bytes())
        _fill(state, 200)
        r = run_cli("apply", site.path, "--auto-approve", "--state-dir", state, timeout=300)
        assert r.code == 1, r.text
        assert f"error: no space left on {state}/runs" in r.err, r.err
        assert "no host was touched" in r.err and "the hosts and the state are unchanged" in r.err
        assert "internal error" not in r.text and "Traceback" not in r.text
        assert not (state / "state.json").exists() and not (state / "state.lock").exists()
        assert _ansible_left(state) == []
    assert {d["firmware"] for d in read_devices(site.host_root("npu-node-1"))} == {"1.0.0"}


@pytest.mark.slow
def test_state_write_failing_mid_apply_stops_the_run_and_names_what_is_unrecorded(tmp_path: Path) -> None:
    """The state directory fills up while the run's events (on another filesystem) still fit."""
    site = make_site(tmp_path)
    with _tmpfs(tmp_path / "state", "32k") as state:  # keys, then a few serials (state + history, a page each)
        (state / "keys").mkdir()
        for f in (site.root / ".sovkit/keys").iterdir():
            (state / "keys" / f.name).write_bytes(f.read_bytes())
        with _tmpfs(state / "runs", "64m"):
            r = run_cli("apply", site.path, "--auto-approve", "--state-dir", state, timeout=300)
            assert r.code == 1, r.text
            assert f"error: cannot write state {state}/state.json: no space left on the device" in r.err, r.err
            assert "which the state does not record" in r.err and "sovkit refresh" in r.err
            assert "internal error" not in r.text and "Traceback" not in r.text
            assert _ansible_left(state) == []
            recorded = json.loads((state / "state.json").read_bytes())  # whole, never torn
            assert not (state / "state.lock").exists()
    written = {(h, c) for h, rec in recorded["hosts"].items() for c in ("runtimes", "models", "serving")
               if rec[c]}
    assert not any(c == "serving" for _h, c in written), "the run must stop, not go on to the last component"


def test_plan_out_on_a_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    with _tmpfs(tmp_path / "out", "64k") as out:
        _fill(out, 0)
        r = run_cli("plan", site.path, "-o", out / "p.plan")
        assert r.code == 1, r.text
        assert f"error: cannot write plan {out}/p.plan: No space left on device" in r.err
        assert "internal error" not in r.text
        assert not (out / "p.plan").exists()
