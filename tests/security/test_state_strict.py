"""Low items: the state file is read strictly, and a missing one is not silently a fresh site.

- state.json whose ``serial`` is a string, negative or beyond 2**53 used to be accepted (a string serial was
  even coerced); now a located error names the file, line and field.
- a signed plan naming hosts or components the inventory does not have used to "apply" with exit 0 and
  write success attestations; now apply refuses it before anything runs.
- a deleted state.json with a backup beside it used to plan "8 to create" without a word.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.sitefactory import make_site

LINEAGE = "0b5e4c52-5b2b-4a41-9a3e-0e7f8f7d2a11"


def _state(serial: object, **extra: object) -> str:
    doc = {"version": 1, "lineage": LINEAGE, "serial": serial, "site": "demo", "hosts": {}, **extra}
    return json.dumps(doc, indent=2) + "\n"


@pytest.mark.parametrize(("serial", "field", "why"), [
    ("7", "serial", "Input should be a valid integer"),
    (-1, "serial", "greater than or equal to 0"),
    (2**60, "serial", "less than or equal to 9007199254740991"),
    (3.0, "serial", "Input should be a valid integer"),
])
def test_bad_serial_is_a_located_error(tmp_path: Path, serial: object, field: str, why: str) -> None:
    site = make_site(tmp_path)
    state = site.root / ".sovkit/state.json"
    state.write_text(_state(serial))
    r = run_cli("plan", site.path)
    assert r.code == 1, r.text
    assert f"error: state file {state}:4 is corrupt at {field}: " in r.err, r.err
    assert why in r.err and "state.json.backup" in r.err
    assert "Traceback" not in r.text and "internal error" not in r.text
    assert state.read_text() == _state(serial), "a refused state file is left as it was"


def test_newer_state_version_and_bad_lineage_are_refused(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    state = site.root / ".sovkit/state.json"
    state.write_text(_state(3).replace('"version": 1', '"version": 2'))
    r = run_cli("plan", site.path)
    assert r.code == 1 and f"state file {state}:2 is corrupt at version" in r.err, r.text
    state.write_text(_state(3).replace(LINEAGE, "../../x"))
    r = run_cli("plan", site.path)
    assert r.code == 1 and f"state file {state}:3 is corrupt at lineage" in r.err, r.text


@pytest.mark.parametrize("change", [
    {"host": "npu-node-1", "component": "model", "name": "ghost-model", "action": "create"},
    {"host": "npu-node-1", "component": "serving", "name": "ghost-deployment", "action": "update"},
    {"host": "ghost-host", "component": "runtime", "name": "simnpu-serve", "action": "create"},
    {"host": "npu-node-2", "component": "runtime", "name": "simnpu-serve", "action": "delete"},
    {"host": "npu-node-1", "component": "host", "name": "npu-node-1", "action": "delete"},
])
def test_signed_plan_naming_what_the_site_lacks_is_refused(tmp_path: Path, change: dict[str, str]) -> None:
    from sovkit.plan.model import Change, Plan
    from sovkit.plan.planfile import SavedPlan, write_plan
    from sovkit.signing.keys import LocalSigner

    site = make_site(tmp_path)
    key = site.root / ".sovkit/keys/operator.key"
    made = run_cli("plan", site.path, "-o", tmp_path / "real.plan")
    assert made.code == 0, made.text
    real = SavedPlan.model_validate_json(base64.b64decode(json.loads((tmp_path / "real.plan").read_text())["payload"]))
    bindings = real.bindings
    if not change["host"].startswith("npu-node"):  # bindings a forger would sign: no inventory host touched
        bindings = bindings.model_copy(update={"artifact_digests": {}})
    forged_change = Change.model_validate({**change, "reason": "forged"})
    forged = real.model_copy(update={"plan": Plan(site="demo", changes=(forged_change,)), "bindings": bindings})
    write_plan(tmp_path / "forged.plan", forged, LocalSigner.load(key, None))  # correctly signed
    log = site.root / ".sovkit/attestations/log.jsonl"
    before = log.read_bytes()
    r = run_cli("apply", tmp_path / "forged.plan", "--plan-key", key.with_name("operator.key.pub"))
    assert r.code == 1, r.text
    assert (f"error: plan names {change['component']} {change['name']!r} on host {change['host']!r} "
            f"({change['action']})") in r.err, r.err
    assert "nothing was applied" in r.err and "Traceback" not in r.text
    assert log.read_bytes() == before, "no attestation may be written for a refused plan"
    assert not (site.root / ".sovkit/runs").exists() or not any((site.root / ".sovkit/runs").iterdir())


def test_deleted_state_with_a_backup_is_called_out_in_the_plan(tmp_path: Path) -> None:
    from sovkit.state.models import State
    from sovkit.state.store import LocalStateStore

    site = make_site(tmp_path)
    store = LocalStateStore(site.root / ".sovkit")
    store.write(store.write(State(site="demo")))  # two writes: state.json (serial 2) and its backup (serial 1)
    store.path.unlink()
    r = run_cli("plan", site.path, "--json")
    assert r.code == 0, r.text
    warnings = json.loads(r.out)["warnings"]
    assert len(warnings) == 1 and f"{store.path} is missing but {store.directory}/state.json.backup" in warnings[0]
    assert f"cp {store.directory}/state.json.backup {store.path}" in warnings[0] and "sovkit refresh" in warnings[0]
    human = run_cli("plan", site.path)
    assert "warning: " in human.err and "state.json.backup" in human.err
    assert "9 to create" in human.out
