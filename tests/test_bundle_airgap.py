"""End to end with networking disabled: volumes → join → verify → import → apply, all inside `unshare -n`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sovkit.signing.keys import LocalSigner, write_keypair
from sovkit.simulator import install_simulator, read_devices
from sovkit.state.models import State
from tests.conftest import ROOT, CliResult, run_cli
from tests.sitefactory import KIND, make_site

pytestmark = pytest.mark.slow


def offline(*args: str | os.PathLike[str], cwd: Path | None = None, loopback: bool = False) -> CliResult:
    """``python -m sovkit ARGS`` in a new network namespace: no interface but the loopback, which is down
    unless ``loopback`` (apply starts the site's serving processes, which talk to each other over it: an
    air-gapped host still has its own loopback, and nothing else)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "sovkit", *map(str, args)]
    if loopback:
        command = ["sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    proc = subprocess.run(["unshare", "-n", *command],
                          capture_output=True, text=True, env=env, timeout=900, cwd=cwd)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def test_namespace_really_has_no_network() -> None:
    probe = "import socket\ntry:\n socket.create_connection(('127.0.0.1', 22), timeout=2)\nexcept OSError as e:\n" \
            " print(e.errno)"
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "101", "ENETUNREACH: even loopback is down"


def test_usb_to_serving_model_with_networking_disabled(tmp_path: Path) -> None:
    # connected side: the site inventory with its artifacts, a bundle signing key, bundle split into volumes
    site = make_site(tmp_path / "connected")
    key = tmp_path / "keys" / "bundle.key"
    pub = write_keypair(LocalSigner.generate(), key, None)
    made = run_cli("bundle", "create", site.path, "-o", tmp_path / "usb", "--key", key, "--no-self",
                   "--volume-size", "1M")
    assert made.code == 0, made.text

    # air-gapped side: nothing from the connected site but the volumes and the bundle key
    airgap = tmp_path / "airgap"
    joined = offline("bundle", "join", tmp_path / "usb", "-o", airgap / "bundle")
    assert joined.code == 0, joined.text
    checked = offline("bundle", "verify", airgap / "bundle", "--key", pub)
    assert checked.code == 0, checked.text
    store = airgap / "store"
    imported = offline("bundle", "import", airgap / "bundle", "--store", store, "--key", pub,
                       "--site-dir", airgap / "site")
    assert imported.code == 0, imported.text

    inv = airgap / "site" / "inventory" / "site.yaml"
    data = yaml.safe_load(inv.read_text())
    data["artifact_store"] = {"kind": "local", "path": str(store)}
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    for h in data["hosts"]:  # the NPUs are at the site: simulated devices on each host root, old firmware
        count = sum(a["count"] for a in h.get("accelerators", []))
        install_simulator(inv.parent / h["root"], "rbln-smi", [(KIND, "1.0.0")] * count, interpreter=sys.executable)
    assert not (inv.parent / "artifacts").exists(), "apply must use the imported store only"

    keyed = offline("keys", "generate", "-o", inv.parent / ".sovkit" / "keys" / "operator.key",
                    "--insecure-no-passphrase")  # the site's own operator key: plans and attestations
    assert keyed.code == 0, keyed.text
    applied = offline("apply", inv, "--auto-approve", loopback=True)
    assert applied.code == 0, applied.text
    state = State.model_validate_json((inv.parent / ".sovkit" / "state.json").read_bytes())
    for host in ("npu-node-1", "npu-node-2"):
        rec = state.hosts[host]
        assert rec.models["demo-ko-chat"].version == "1.0" and rec.models["demo-ko-chat"].signature_verified
        assert rec.firmware, "firmware must be recorded"
        assert {d["firmware"] for d in read_devices(inv.parent / "hosts" / host)} == {"1.2.0"}
        weights = inv.parent / "hosts" / host / "opt/sovkit/models/demo-ko-chat/current/model.safetensors"
        assert weights.read_bytes() == (store / "models/demo-ko-chat/1.0/model.safetensors").read_bytes()
    again = offline("plan", inv, "--detailed-exitcode")
    assert again.code == 0 and "No changes" in again.out, again.text
