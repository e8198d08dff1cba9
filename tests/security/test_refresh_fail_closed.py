"""Finding 3: refresh must fail closed.

A host whose model link was deleted is drift (not an observe failure), and a host that cannot be read back
makes `refresh`, `plan --refresh` and `apply --refresh` exit 1 naming it, with the state left byte-identical;
never "no drift" from the recorded state standing in for a host nobody looked at.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli
from tests.sitefactory import make_site

pytestmark = pytest.mark.slow
LINK = "opt/sovkit/models/demo-ko-chat/current"


@pytest.fixture
def applied(applied_demo: Path) -> Path:
    """The demo site applied once per session (both local hosts); tests work on copies of it."""
    return applied_demo


def _copy(applied: Path, tmp_path: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(applied, root, symlinks=True)
    return root


def test_deleted_current_link_is_drift_not_an_unreachable_host(applied: Path, tmp_path: Path) -> None:
    root = _copy(applied, tmp_path)
    (root / "hosts/npu-node-1" / LINK).unlink()
    r = run_cli("plan", root / "site.yaml", "--refresh", "--detailed-exitcode")
    assert r.code == 2, r.text
    assert "no drift" not in r.text.lower() and "No changes" not in r.text
    assert "model demo-ko-chat: model missing on the host" in r.out
    assert "lnk_source" not in r.text, "the observe play must not fail on a missing link (ansible-core 2.19)"
    refreshed = run_cli("refresh", root / "site.yaml")
    assert refreshed.code == 0, refreshed.text
    assert "model missing on the host" in refreshed.out


def _break_interpreter(root: Path) -> bytes:
    path = root / "site.yaml"
    data = yaml.safe_load(path.read_text())
    data["hosts"][0]["python_interpreter"] = "/nonexistent/python3"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return (root / ".sovkit/state.json").read_bytes()


@pytest.mark.parametrize("command", [("plan", "--refresh", "--detailed-exitcode"), ("refresh",),
                                     ("apply", "--refresh", "--auto-approve")])
def test_unobservable_host_fails_closed(applied: Path, tmp_path: Path, command: tuple[str, ...]) -> None:
    root = _copy(applied, tmp_path)
    (root / "hosts/npu-node-2" / LINK).unlink()  # real drift on the other host must not be recorded either
    before = _break_interpreter(root)
    r = run_cli(command[0], root / "site.yaml", *command[1:])
    assert r.code == 1, r.text
    assert "could not observe 1 host (npu-node-1)" in r.err
    assert "npu-node-1: observe failed" in r.err and "/nonexistent/python3" in r.err
    assert "no drift" not in r.text.lower() and "Nothing to apply" not in r.text
    assert "Traceback" not in r.text
    assert (root / ".sovkit/state.json").read_bytes() == before, "state must be untouched"
    assert not (root / ".sovkit/last-refresh.json").exists()
    assert not (root / "hosts/npu-node-2" / LINK).exists(), "apply --refresh must not run"


def _last_statement(root: Path) -> tuple[int, dict[str, Any]]:
    last = json.loads((root / ".sovkit/attestations/log.jsonl").read_bytes().splitlines()[-1])
    return last["index"], json.loads(base64.b64decode(last["envelope"]["payload"]))


def test_refresh_attests_the_drift_it_found(tmp_path: Path) -> None:
    """`refresh` appends a signed drift/v1 statement that `attest verify` checks like every entry."""
    root = make_site(tmp_path).root  # its own applied site: a copy's `current` links point into the original
    applied = run_cli("apply", root / "site.yaml", "--auto-approve")
    assert applied.code == 0, applied.text
    pub = root / ".sovkit/keys/operator.key.pub"
    before = json.loads((root / ".sovkit/state.json").read_bytes())["serial"]

    clean = run_cli("refresh", root / "site.yaml", "--json")
    assert clean.code == 0, clean.text
    index, statement = _last_statement(root)
    assert json.loads(clean.out)["attestation"] == index
    assert statement["predicateType"] == "https://sovkit.dev/attestation/drift/v1"
    p = statement["predicate"]
    assert p["operation"] == "refresh" and p["observed"] == ["npu-node-1", "npu-node-2"] and p["drift"] == {}
    assert p["state_serial_before"] == before and p["state_serial_after"] == before + 1
    verified = run_cli("attest", "verify", root / "site.yaml", "--key", pub)
    assert verified.code == 0, verified.text  # every step, subjects included: nothing drifted

    (root / "hosts/npu-node-1" / LINK).unlink()
    r = run_cli("refresh", root / "site.yaml", "--json")
    assert r.code == 0, r.text
    out = json.loads(r.out)
    index, statement = _last_statement(root)
    assert out["attestation"] == index and out["state_serial"] == before + 2
    p = statement["predicate"]
    assert p["state_serial_before"] == before + 1 and p["state_serial_after"] == before + 2
    assert p["drift"] == {"npu-node-1": [{"component": "model", "name": "demo-ko-chat", "action": "update",
                                          "reason": "model missing on the host"}]}
    # the drift entry itself verifies (signature, chain, head, anchor); the subjects step still reports that
    # the recorded state no longer matches the last provision attestation, until an apply repairs it
    doc = json.loads(run_cli("attest", "verify", root / "site.yaml", "--key", pub, "--json").out)
    status = {s["name"]: s["status"] for s in doc["steps"]}
    assert status.pop("keyring") == "not-checked", doc["steps"]  # no --keyring given: keys trusted at any time
    assert status.pop("subjects") == "failed" and set(status.values()) == {"ok"}, doc["steps"]
