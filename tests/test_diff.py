"""The diff is a pure function: data-driven cases of (recorded state) -> expected changes, in order."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sovkit.components.host import desired_site, pinned_artifacts
from sovkit.inventory import load_inventory
from sovkit.plan.diff import diff
from sovkit.state.models import HostRecord
from tests.conftest import INVENTORIES

DEMO = load_inventory(INVENTORIES / "demo")
DESIRED = desired_site(DEMO)
KIND = "rebellions-atom-max"


def converged() -> dict[str, HostRecord]:
    """Recorded state equal to the desired state (what a successful apply records)."""
    out = {}
    for name, want in DESIRED.items():
        rec: dict[str, Any] = {"firmware": {}, "runtimes": {}, "models": {}, "serving": {}}
        for kind, fw in want.firmware.items():
            rec["firmware"][kind] = {"kind": kind, "version": fw.version, "image_sha256": fw.image.sha256,
                                     "devices": {str(i): {"kind": kind, "firmware": fw.version}
                                                 for i in range(fw.count)}}
        for rname, rt in want.runtimes.items():
            rec["runtimes"][rname] = {"version": rt.version, "package": rt.package, "prefix": rt.prefix,
                                      "artifacts": {a.store_path: a.sha256 for a in rt.artifacts}}
        for mname, m in want.models.items():
            rec["models"][mname] = {"version": m.version, "files": {f.name: f.sha256 for f in m.files},
                                    "path": f"{m.path}/{m.version}"}
        for dname, s in want.serving.items():
            rec["serving"][dname] = {"role": s.role, "model": s.model, "model_version": s.model_version,
                                     "runtime": s.runtime, "runtime_version": s.runtime_version,
                                     "config_sha256": s.config_sha256, "port": s.port}
        out[name] = HostRecord.model_validate(rec)
    return out


def _edit(mutate: Any) -> dict[str, HostRecord]:
    state = converged()
    mutate(state)
    return state


CASES = [
    ("nothing recorded: everything created, firmware first",
     lambda s: s.clear(),
     [("npu-node-1", "firmware", KIND, "create"), ("npu-node-1", "runtime", "simnpu-serve", "create"),
      ("npu-node-1", "model", "demo-ko-chat", "create"), ("npu-node-1", "serving", "chat-prefill", "create"),
      ("npu-node-1", "serving", "chat-router", "create"), ("npu-node-2", "firmware", KIND, "create"),
      ("npu-node-2", "runtime", "simnpu-serve", "create"),
      ("npu-node-2", "model", "demo-ko-chat", "create"), ("npu-node-2", "serving", "chat-decode", "create")],
     None),
    ("converged: no changes", lambda s: None, [], None),
    ("older firmware recorded: upgrade",
     lambda s: s["npu-node-1"].firmware[KIND].__setattr__("version", "1.0.0"),
     [("npu-node-1", "firmware", KIND, "update")], "upgrade 1.0.0 → 1.2.0"),
    ("newer firmware recorded: flagged as a downgrade",
     lambda s: s["npu-node-2"].firmware[KIND].__setattr__("version", "1.10.0"),
     [("npu-node-2", "firmware", KIND, "update")], "DOWNGRADE 1.10.0 → 1.2.0"),
    ("one device drifted",
     lambda s: s["npu-node-1"].firmware[KIND].devices["1"].__setattr__("firmware", "0.9"),
     [("npu-node-1", "firmware", KIND, "update")], "device(s) 1 report other firmware"),
    ("model file tampered on one host",
     lambda s: s["npu-node-2"].models["demo-ko-chat"].files.__setitem__("tokenizer.json", "0" * 64),
     [("npu-node-2", "model", "demo-ko-chat", "update")], "file digests differ on host (drift): tokenizer.json"),
    ("other model version recorded",
     lambda s: s["npu-node-1"].models["demo-ko-chat"].__setattr__("version", "0.9"),
     [("npu-node-1", "model", "demo-ko-chat", "update")], "0.9 → 1.0; previous kept for rollback"),
    ("runtime version differs",
     lambda s: s["npu-node-1"].runtimes["simnpu-serve"].__setattr__("version", "0.9.0"),
     [("npu-node-1", "runtime", "simnpu-serve", "update")], "0.9.0 → 1.0.0"),
    ("serving config edited",
     lambda s: s["npu-node-2"].serving["chat-decode"].__setattr__("config_sha256", "f" * 64),
     [("npu-node-2", "serving", "chat-decode", "update")], "serving configuration changed"),
    ("a model no longer deployed is deleted after serving changes",
     lambda s: s["npu-node-1"].models.__setitem__("old-model", s["npu-node-1"].models["demo-ko-chat"]),
     [("npu-node-1", "model", "old-model", "delete")], "no longer deployed"),
    ("a host removed from the inventory drops its record",
     lambda s: s.__setitem__("npu-node-9", HostRecord()),
     [("npu-node-9", "host", "npu-node-9", "delete")], "host removed from the inventory"),
]


@pytest.mark.parametrize(("name", "mutate", "expected", "reason"), CASES, ids=[c[0] for c in CASES])
def test_diff(name: str, mutate: Any, expected: list[tuple[str, str, str, str]], reason: str | None) -> None:
    plan = diff("demo", DESIRED, _edit(mutate))
    assert [(c.host, c.component, c.name, c.action) for c in plan.changes] == expected
    if reason is not None:
        assert reason in plan.changes[0].reason


def test_diff_is_pure() -> None:
    state = converged()
    state["npu-node-1"].firmware[KIND].version = "1.0.0"
    before = {k: v.model_dump() for k, v in state.items()}
    first = diff("demo", DESIRED, state)
    second = diff("demo", DESIRED, state)
    assert first == second
    assert {k: v.model_dump() for k, v in state.items()} == before


def _desired_with(data: dict[str, Any]) -> dict[str, Any]:
    """Desired state of an edited demo inventory, written beside the demo's (same root: same host paths)."""
    import yaml

    changed_file = INVENTORIES / "demo" / f".test-{os.getpid()}.yaml"
    try:
        changed_file.write_text(yaml.safe_dump(data))
        return desired_site(load_inventory(changed_file))
    finally:
        changed_file.unlink()


def test_a_deployment_change_updates_only_its_serving_config(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((INVENTORIES / "demo/site.yaml").read_text())
    data["deployments"][0]["port"] = 9999
    changed = _desired_with(data)
    plan = diff("demo", changed, converged())
    # the prefill listens elsewhere, and its group's router must send there: both restart, nothing else
    assert [(c.host, c.component, c.name, c.action) for c in plan.changes] == [
        ("npu-node-1", "serving", "chat-prefill", "update"), ("npu-node-1", "serving", "chat-router", "update")]
    assert plan.changes[0].reason == "serving configuration changed: port 8101 → 9999"
    assert plan.changes[1].reason == "serving configuration changed"
    assert "9999" in json.loads(changed["npu-node-1"].serving["chat-prefill"].spec)["argv"]
    assert "http://127.0.0.1:9999" in json.loads(changed["npu-node-1"].serving["chat-router"].spec)["argv"]


def test_pinned_artifacts_cover_every_file_installed() -> None:
    pins = pinned_artifacts(DESIRED)
    assert set(pins) == {f["path"] for f in (
        [{"path": fw.image.path} for fw in DEMO.site.firmware if fw.name == "atom-max-fw-1.2.0"]
        + [{"path": a.path} for r in DEMO.site.runtimes for a in r.artifacts]
        + [{"path": f.path} for m in DEMO.site.models for f in m.files])}


def test_a_new_model_version_restarts_every_serving_process_of_it() -> None:
    """The launch names the model's `current` link, so the version must change the launch by itself: a server
    that kept running on the old weights after a model update would be reported as serving the new one."""
    import yaml

    data = yaml.safe_load((INVENTORIES / "demo/site.yaml").read_text())
    data["models"][0]["version"] = "1.1"
    changed = _desired_with(data)
    plan = diff("demo", changed, converged())
    assert {(c.host, c.name) for c in plan.changes if c.component == "serving"} == {
        ("npu-node-1", "chat-prefill"), ("npu-node-1", "chat-router"), ("npu-node-2", "chat-decode")}
