"""Finding 2: values a host reports (and the state they would land in) are untrusted input.

A compromised host points its model ``current`` symlink at a path carrying a ``lookup('pipe', …)``
payload; ``sovkit refresh`` must refuse the value (reported, never stored as a path) and a following apply
that removes the deployment must not run it on the controller. A state.json edited to carry the same path
is refused when read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sovkit.state.models import State
from tests.conftest import run_cli
from tests.sitefactory import Site, make_site

pytestmark = pytest.mark.slow

MARK = "SOVKIT-PWNED-MARKER"
# no '/' inside the expression: the lookup's shell runs in the play's directory, so the marker is searched for
PAYLOAD = f"{{{{lookup('pipe','touch {MARK}')}}}}"


def _markers(*roots: Path) -> list[Path]:
    return [p for r in roots for p in r.rglob(f"*{MARK}*") if p.name == MARK]


def _state(site_root: Path) -> State:
    return State.model_validate_json((site_root / ".sovkit" / "state.json").read_bytes())


def test_host_reported_link_target_is_refused_and_never_reaches_ansible(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    assert run_cli("apply", site.path, "--auto-approve").code == 0
    model_dir = site.host_root("npu-node-2") / "opt/sovkit/models/demo-ko-chat"
    hostile = f"{model_dir}{PAYLOAD}/1.0"  # the removal path is the link target's parent: the payload is in it
    shutil.copytree(model_dir / "1.0", hostile)  # the same files: digests match, only the path is hostile
    current = model_dir / "current"
    current.unlink()
    os.symlink(hostile, current)

    refreshed = run_cli("refresh", site.path, "--json")
    assert refreshed.code in (0, 1), refreshed.text
    assert "Traceback" not in refreshed.err
    reasons = [c["reason"] for c in json.loads(refreshed.out)["drift"]["changes"]
               if c["host"] == "npu-node-2" and c["component"] == "model"]
    assert reasons and all("untrusted value reported by the host, refused" in r for r in reasons), reasons
    rec = _state(site.root).hosts["npu-node-2"].models["demo-ko-chat"]
    assert PAYLOAD not in rec.path and "{" not in rec.path and rec.version == "untrusted"
    state_text = (site.root / ".sovkit" / "state.json").read_text()
    assert "lookup" not in state_text

    # the deployment on npu-node-2 goes away: its model is removed using the recorded path
    site.data["serving_groups"] = []  # without its decode the prefill serves alone
    site.data["deployments"] = [{**d, "role": "both"} for d in site.data["deployments"]
                                if "npu-node-2" not in d["hosts"]]
    site.save()
    applied = run_cli("apply", site.path, "--auto-approve")
    assert "Traceback" not in applied.err
    assert _markers(tmp_path) == [], "the host's link target was rendered on the controller"
    assert applied.code == 0, applied.text
    assert not model_dir.exists()
    assert Path(hostile).is_dir(), "only sovkit's own model directory is removed, not the link's target"


def test_tampered_state_path_is_refused_before_ansible(applied_demo: Path, tmp_path: Path) -> None:
    # a copy of the session's applied demo site: the apply below is refused before Ansible touches any path
    shutil.copytree(applied_demo, tmp_path / "site", symlinks=True)
    site = Site(tmp_path / "site")
    assert _state(site.root).hosts["npu-node-2"].models["demo-ko-chat"].version == "1.0", "an applied site"
    state_file = site.root / ".sovkit" / "state.json"
    doc = json.loads(state_file.read_text())
    model = doc["hosts"]["npu-node-2"]["models"]["demo-ko-chat"]
    model["path"] = str(site.host_root("npu-node-2") / f"opt/sovkit/models/demo-ko-chat{PAYLOAD}/1.0")
    state_file.write_text(json.dumps(doc))
    site.data["serving_groups"] = []  # without its decode the prefill serves alone
    site.data["deployments"] = [{**d, "role": "both"} for d in site.data["deployments"]
                                if "npu-node-2" not in d["hosts"]]
    site.save()
    applied = run_cli("apply", site.path, "--auto-approve")
    assert _markers(tmp_path) == [], "a path from state.json was rendered on the controller"
    assert applied.code == 1, applied.text
    assert "state.json" in applied.err and "corrupt" in applied.err and "Traceback" not in applied.err
    assert json.loads(state_file.read_text()) == doc, "the state is left as it was"
