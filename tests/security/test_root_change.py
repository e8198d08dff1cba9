"""Finding 11: changing a host's ``root`` re-plans the runtime and the model, not only the serving config."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from sovkit.simulator import install_simulator
from tests.conftest import run_cli
from tests.sitefactory import KIND, make_site

pytestmark = pytest.mark.slow


def test_root_change_replans_runtime_and_model_at_the_new_prefix(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    assert run_cli("apply", site.path, "--auto-approve").code == 0
    old = site.host_root("npu-node-1")
    site.host("npu-node-1")["root"] = "hosts/moved"
    site.save()
    new = site.host_root("npu-node-1")
    install_simulator(new, "rbln-smi", [(KIND, "1.2.0")] * 2, interpreter=sys.executable)  # same cards, new root

    planned = run_cli("plan", site.path, "--json")
    assert planned.code == 0, planned.text
    changes = {(c["component"], c["name"]): c for c in json.loads(planned.out)["plan"]["changes"]
               if c["host"] == "npu-node-1"}
    for key, where in ((("runtime", "simnpu-serve"), "opt/sovkit/runtimes/simnpu-serve"),
                       (("model", "demo-ko-chat"), "opt/sovkit/models/demo-ko-chat")):
        assert key in changes, changes
        assert changes[key]["action"] == "update"
        reason = changes[key]["reason"]
        assert f"{old}/{where}" in reason and f"{new}/{where}" in reason, reason
    assert ("serving", "chat-prefill") in changes

    applied = run_cli("apply", site.path, "--auto-approve")
    assert applied.code == 0, applied.text
    assert '__version__ = "1.0.0"' in (
        new / "opt/sovkit/runtimes/simnpu-serve/1.0.0/simnpu_serve/__init__.py").read_text()
    current = new / "opt/sovkit/models/demo-ko-chat/current"
    assert current.is_symlink() and os.readlink(current) == str(new / "opt/sovkit/models/demo-ko-chat/1.0")
    assert str(new) in (new / "etc/sovkit/serving/chat-prefill.json").read_text()
    again = run_cli("plan", site.path, "--detailed-exitcode")
    assert again.code == 0, again.text
