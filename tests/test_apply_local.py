"""plan/apply on local-connection demo hosts (real Ansible, simulated NPUs): failures, kills, saved plans.

Applies that install run as `python -m sovkit`; commands refused before Ansible starts, and the plans and
rollbacks that follow an apply, go through the same ``main()`` in-process (``cli_env``), which saves an
interpreter start and sovkit's imports (about 2.5 s) per command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sovkit.simulator import read_devices
from sovkit.state.models import State
from tests.conftest import ROOT, CliResult, run_cli
from tests.sitefactory import corrupt_image, make_site
from tests.test_serving_apply import DEMO_CONFIG, _model_files

pytestmark = pytest.mark.slow


def _state(site_root: Path) -> State:
    return State.model_validate_json((site_root / ".sovkit" / "state.json").read_bytes())


def _firmware(root: Path) -> set[str]:
    return {d["firmware"] for d in read_devices(root)}


def test_apply_installs_everything_and_converges(tmp_path: Path, cli_env: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    assert "9 component(s) recorded across 2 host(s)" in r.out
    for host in ("npu-node-1", "npu-node-2"):
        root = site.host_root(host)
        assert _firmware(root) == {"1.2.0"}
        current = root / "opt/sovkit/models/demo-ko-chat/current"
        assert current.is_symlink() and os.readlink(current).endswith("/1.0")
        assert (current / "model.safetensors").read_bytes() == (
            site.store / "models/demo-ko-chat/1.0/model.safetensors").read_bytes()
        runtime = root / "opt/sovkit/runtimes/simnpu-serve/1.0.0/simnpu_serve/__init__.py"
        assert '__version__ = "1.0.0"' in runtime.read_text()
    argv = json.loads((site.host_root("npu-node-1") / "etc/sovkit/serving/chat-prefill.json").read_text())["argv"]
    assert json.loads(argv[argv.index("--kv-transfer-config") + 1])["kv_role"] == "kv_producer"
    state = _state(site.root)
    assert set(state.hosts) == {"npu-node-1", "npu-node-2"}
    assert state.hosts["npu-node-2"].models["demo-ko-chat"].signature_verified is True
    again = cli_env("plan", site.path, "--detailed-exitcode")
    assert again.code == 0, again.text
    assert "No changes" in again.out


def test_corrupt_firmware_fails_that_host_only_and_activates_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.add_firmware("atom-max-fw-1.2.1", "1.2.1", image=corrupt_image("1.2.1"))
    site.host("npu-node-2")["accelerators"][0]["firmware"] = "atom-max-fw-1.2.1"
    site.save()
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1
    assert "npu-node-2" in r.err and "firmware | update per device: rbln-flash" in r.err
    assert "Traceback" not in r.err
    bad = site.host_root("npu-node-2")
    assert _firmware(bad) == {"1.0.0"}, "the device must keep its old firmware"
    assert not (bad / "opt/sovkit/models/demo-ko-chat/current").exists(), "nothing may be activated"
    assert not (bad / "etc/sovkit/serving/chat-decode.json").exists()
    good = site.host_root("npu-node-1")
    assert _firmware(good) == {"1.2.0"}
    assert (good / "opt/sovkit/models/demo-ko-chat/current").is_symlink()
    state = _state(site.root)
    assert "npu-node-2" not in state.hosts or not state.hosts["npu-node-2"].firmware
    # its group cannot serve without its decode: the prefill and router this first apply started are stopped
    assert {n: s.status for n, s in state.hosts["npu-node-1"].serving.items()} == {
        "chat-prefill": "stopped", "chat-router": "stopped"}
    assert "npu-node-1 failed at serving check: group chat" in r.err


def test_model_with_wrong_digest_is_refused_before_the_host_is_touched(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.add_model("ko-chat-b", "2.0", {"config.json": b'{"a": 1}\n', "model.safetensors": b"w" * 4096})
    site.data["serving_groups"] = []  # two plain deployments, one model each
    for dep in site.data["deployments"]:
        dep["role"] = "both"
    site.data["deployments"][1]["model"] = "ko-chat-b"
    site.save()
    weights = site.store / "models/ko-chat-b/2.0/model.safetensors"
    weights.write_bytes(b"x" * 4096)  # same size, other bytes: passes validate, must fail the digest check
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1
    assert re.search(r"npu-node-2.*preflight.*models/ko-chat-b/2.0/model.safetensors has sha256", r.err), r.err
    bad = site.host_root("npu-node-2")
    assert _firmware(bad) == {"1.0.0"}
    assert not (bad / "opt/sovkit/models").exists()
    assert (site.host_root("npu-node-1") / "opt/sovkit/models/demo-ko-chat/current").is_symlink()


def test_model_signed_by_an_untrusted_key_is_refused(tmp_path: Path, cli_env: Callable[..., CliResult]) -> None:
    """Policy denies it (PRV-003); even with that waived, preflight still refuses the signature (defence in depth)."""
    from sovkit.signing.artifacts import sign_artifacts
    from sovkit.signing.keys import LocalSigner

    site = make_site(tmp_path)
    model = site.model("demo-ko-chat")
    rogue = sign_artifacts({f["path"]: f["sha256"] for f in model["files"]}, LocalSigner.generate(), "model",
                           "demo-ko-chat", "1.0")
    (site.store / model["signature"]).write_text(rogue.to_json())
    r = cli_env("apply", site.path, "--auto-approve")
    assert r.code == 3
    assert "PRV-003" in r.out and "does not verify" in r.out
    site.data["waivers"] = [
        {"rule": rule, "resource": res, "reason": "test: reach preflight", "expires": "2099-01-01"}
        for rule, res in (("PRV-003", "models/demo-ko-chat"), ("PRV-007", "deployments/chat-prefill"),
                          ("PRV-007", "deployments/chat-decode"))
    ]
    site.save()
    r = cli_env("apply", site.path, "--auto-approve")
    assert r.code == 1
    assert "signature by sovkit-demo-lab does not verify" in r.err
    assert "unknown key" in r.err
    for host in ("npu-node-1", "npu-node-2"):
        assert not (site.host_root(host) / "opt/sovkit/models").exists()


def _kill_orphaned_playbooks(root: Path) -> None:
    """ansible-runner runs ansible-playbook in its own pty session, so it outlives a SIGKILLed sovkit."""
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ansible-playbook" in cmdline and str(root) in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc_dir.name), signal.SIGKILL)


def test_sigkill_mid_apply_leaves_valid_state_and_a_stale_lock(tmp_path: Path,
                                                                cli_env: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sovkit", "apply", str(site.path), "--auto-approve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    state_file = site.root / ".sovkit" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if state_file.exists() and json.loads(state_file.read_text())["serial"] >= 2:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("apply never recorded two components")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _kill_orphaned_playbooks(site.root)
    state = _state(site.root)  # parses: the file is whole
    assert 2 <= state.serial < 8
    locked = cli_env("apply", site.path, "--auto-approve")
    assert locked.code == 1
    assert "stale lock" in locked.err and "Traceback" not in locked.err
    lock_id = re.search(r"sovkit force-unlock ([0-9a-f-]{36})", locked.err)
    assert lock_id, locked.err
    assert _state(site.root).serial == state.serial, "a refused run must not touch the state"
    unlocked = cli_env("force-unlock", lock_id.group(1), site.path)
    assert unlocked.code == 0, unlocked.text
    done = run_cli("apply", site.path, "--auto-approve")
    assert done.code == 0, done.text
    assert cli_env("plan", site.path, "--detailed-exitcode").code == 0


def test_saved_plan_is_bound_to_what_it_was_made_against(tmp_path: Path, cli_env: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    key = site.root / ".sovkit" / "keys" / "operator.key"
    env = {"SOVKIT_SIGNING_KEY": str(key)}
    plan_file = tmp_path / "p.json"
    made = cli_env("plan", site.path, "-o", plan_file, "--detailed-exitcode", env=env)
    assert made.code == 2, made.text
    envelope = json.loads(plan_file.read_text())
    assert envelope["payloadType"] == "application/vnd.sovkit.plan+json"

    tampered = tmp_path / "tampered.json"
    payload = bytearray(envelope["payload"].encode())
    payload[40] = ord("A") if payload[40] != ord("A") else ord("B")
    tampered.write_text(json.dumps({**envelope, "payload": payload.decode()}))
    r = cli_env("apply", tampered, env=env)
    assert r.code == 1 and "failed verification" in r.err, r.text

    other = tmp_path / "other.json"
    from sovkit.signing.keys import LocalSigner, write_keypair

    write_keypair(LocalSigner.generate(), tmp_path / "other.key", None)
    r = cli_env("apply", plan_file, "--plan-key", tmp_path / "other.key.pub", env=env)
    assert r.code == 1 and "unknown key" in r.err, r.text
    del other

    store_file = site.store / "runtime/simnpu_serve-1.0.0-py3-none-any.whl"
    original = store_file.read_bytes()
    store_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
    r = cli_env("apply", plan_file, env=env)
    assert r.code == 1 and "artifact runtime/simnpu_serve-1.0.0-py3-none-any.whl changed" in r.err, r.text
    store_file.write_bytes(original)

    site.data["racks"][0]["power_budget_w"] = 3100
    site.save()
    r = cli_env("apply", plan_file, env=env)
    assert r.code == 1 and "the inventory changed" in r.err, r.text
    site.data["racks"][0]["power_budget_w"] = 3000
    site.save()

    ok = run_cli("apply", plan_file, env=env)
    assert ok.code == 0, ok.text
    r = cli_env("apply", plan_file, env=env)
    assert r.code == 1 and "state serial changed" in r.err, r.text
    for host in ("npu-node-1", "npu-node-2"):
        assert _firmware(site.host_root(host)) == {"1.2.0"}


def test_new_model_version_keeps_previous_and_rollback_switches_back(tmp_path: Path,
                                                                     cli_env: Callable[..., CliResult]) -> None:
    site = make_site(tmp_path)
    assert run_cli("apply", site.path, "--auto-approve").code == 0
    site.bump_model("demo-ko-chat", "1.1", _model_files(DEMO_CONFIG))
    site.save()
    plan = cli_env("plan", site.path)
    assert "~ model demo-ko-chat: 1.0 → 1.1; previous kept for rollback" in plan.out, plan.out
    assert run_cli("apply", site.path, "--auto-approve").code == 0
    models = site.host_root("npu-node-1") / "opt/sovkit/models/demo-ko-chat"
    assert os.readlink(models / "current").endswith("/1.1")
    assert os.readlink(models / "previous").endswith("/1.0")
    assert (models / "current/config.json").read_bytes() == (
        site.store / "models/demo-ko-chat/1.1/config.json").read_bytes()
    assert _state(site.root).hosts["npu-node-1"].models["demo-ko-chat"].previous == "1.0"

    back = cli_env("rollback", site.path, "--model", "demo-ko-chat", "--host", "npu-node-1")
    assert back.code == 0, back.text
    assert os.readlink(models / "current").endswith("/1.0")
    assert os.readlink(models / "previous").endswith("/1.1")
    rec = _state(site.root).hosts["npu-node-1"].models["demo-ko-chat"]
    assert (rec.version, rec.previous) == ("1.0", "1.1")
    assert "tokenizer.json" in rec.files
    assert os.readlink(site.host_root("npu-node-2") / "opt/sovkit/models/demo-ko-chat/current").endswith("/1.1")
    again = cli_env("plan", site.path)
    assert "~ model demo-ko-chat: 1.0 → 1.1" in again.out and "npu-node-2" not in again.out, again.out


def test_rollback_without_a_previous_version_is_a_clear_error(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    r = run_cli("rollback", site.path, "--model", "demo-ko-chat")
    assert r.code == 1 and "no host has a previous version" in r.err and "Traceback" not in r.err
