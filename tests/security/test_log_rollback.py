"""Finding 10: an older signed log + head copied over the live log must not verify.

The signed head only proves the operator wrote that log, not that it is the latest one. Before the
fix, copying the log.jsonl and head.json of an earlier moment (an audit pack holds exactly these)
over the live log passed `attest verify` with "All steps verified" and later entries vanished.
Now the state directory anchors the head (attestations.anchor.json, outside the log directory):
verify fails at the named step and appends refuse to launder the rollback.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult
from tests.sitefactory import Site, make_site

STEP = "log head matches the state's anchor"


def _site(tmp_path: Path) -> tuple[Site, Path, Path]:
    site = make_site(tmp_path)
    state = site.root / ".sovkit"
    return site, state, state / "keys" / "operator.key.pub"


def _verify(cli: Callable[..., CliResult], state: Path, pub: Path) -> CliResult:
    return cli("attest", "verify", state, "--key", pub)


def test_normal_appends_verify_with_the_anchor(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site, state, pub = _site(tmp_path)
    for _ in range(3):
        assert cli("check", site.path).code == 0
    r = _verify(cli, state, pub)
    assert r.code == 0, r.text
    assert "All steps verified" in r.out
    steps = {s["name"]: s for s in json.loads(cli("attest", "verify", state, "--key", pub, "--json").out)["steps"]}
    assert steps["anchor"]["status"] == "ok"
    anchor = json.loads((state / "attestations.anchor.json").read_text())
    assert anchor["count"] == 3


def test_older_log_copied_over_the_live_one_fails_at_the_anchor(tmp_path: Path,
                                                                cli: Callable[..., CliResult]) -> None:
    site, state, pub = _site(tmp_path)
    log = state / "attestations"
    assert cli("check", site.path).code == 0
    old = tmp_path / "old-log"
    shutil.copytree(log, old, ignore=shutil.ignore_patterns("log.lock"))  # what an audit pack keeps
    for _ in range(2):
        assert cli("check", site.path).code == 0
    before_anchor = (state / "attestations.anchor.json").read_bytes()
    # the attack: only the log directory is written
    for name in ("log.jsonl", "head.json"):
        shutil.copyfile(old / name, log / name)
    r = _verify(cli, state, pub)
    assert r.code == 1
    assert "All steps verified" not in r.text
    assert f"failed at step {STEP}" in r.err
    assert "the log has 1 entry but the state's anchor recorded 3" in r.err
    # the next append refuses instead of writing a new head over the rolled-back log
    r = cli("check", site.path)
    assert r.code != 0
    assert "refusing to append" in r.err
    assert (state / "attestations.anchor.json").read_bytes() == before_anchor
    assert len((log / "log.jsonl").read_bytes().splitlines()) == 1


def test_a_different_log_of_the_same_length_fails(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    """A log of another workspace signed by the same key, as long as the live one, is not the live one."""
    site, state, pub = _site(tmp_path)
    assert cli("check", site.path).code == 0
    assert cli("check", site.path).code == 0
    other = state.parent / "other-state"
    shutil.copytree(state, other)
    (other / "attestations.anchor.json").unlink()
    assert cli("check", site.path, "--state-dir", other).code == 0  # other's entry 2 differs
    assert cli("check", site.path).code == 0
    log = state / "attestations"
    for name in ("log.jsonl", "head.json"):
        shutil.copyfile(other / "attestations" / name, log / name)
    r = _verify(cli, state, pub)
    assert r.code == 1
    assert f"failed at step {STEP}" in r.err
    assert "entry 2 is not the one the state's anchor recorded" in r.err


def test_a_copied_log_without_anchor_is_reported_not_checked(tmp_path: Path,
                                                             cli: Callable[..., CliResult]) -> None:
    site, state, pub = _site(tmp_path)
    assert cli("check", site.path).code == 0
    copy = tmp_path / "elsewhere" / "attestations"
    shutil.copytree(state / "attestations", copy)
    r = cli("attest", "verify", copy, "--key", pub)
    assert r.code == 0, r.text
    not_checked = r.out.split("All steps verified (", 1)[1].split(": not checked", 1)[0].split(", ")
    assert STEP in not_checked, r.out  # the anchor step is named among the steps not checked


def test_damaged_anchor_is_a_clear_failure(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    site, state, pub = _site(tmp_path)
    assert cli("check", site.path).code == 0
    (state / "attestations.anchor.json").write_text("{}")
    r = _verify(cli, state, pub)
    assert r.code == 1
    assert f"failed at step {STEP}" in r.err and "is damaged" in r.err


def test_head_json_as_a_directory_is_a_clear_message(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    """Low finding: head.json replaced by a directory gave `internal error: IsADirectoryError`."""
    site, state, pub = _site(tmp_path)
    assert cli("check", site.path).code == 0
    head = state / "attestations" / "head.json"
    head.unlink()
    head.mkdir()
    r = _verify(cli, state, pub)
    assert r.code == 1
    assert "internal error" not in r.text
    assert "failed at step signed head" in r.err and "Is a directory" in r.err
    r = cli("check", site.path)
    assert r.code == 1 and "internal error" not in r.text
    assert "is not a regular file; refusing to append" in r.err
