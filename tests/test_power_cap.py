"""Power caps and the post-install diagnostic (firmware role) on a local-connection host with simulated H100s."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sovkit.signing.artifacts import sign_artifacts
from sovkit.simulator import install_simulator, make_firmware_image, read_devices, set_fault
from sovkit.state.models import State
from tests.conftest import run_cli
from tests.sitefactory import VENDOR, Site, make_site

GPU = "nvidia-h100-sxm"
VBIOS = "96.00.89.00.01"  # what the simulated GPUs already run: the role has nothing to flash


def _gpu_site(tmp: Path, cap: int | None) -> Site:
    """The demo site reduced to one host with two simulated H100s pinned to the firmware they already run."""
    site = make_site(tmp)
    site.data["deployments"], site.data["serving_groups"] = [], []
    site.data["trust_roots"]["vendors"].append({"name": "nvidia", "public_key": "keys/vendor-rebellions.pub"})
    rel = "firmware/h100.fwpkg"
    art = site.put(rel, make_firmware_image(GPU, VBIOS, seed="test"))
    site.put(rel + ".sig", sign_artifacts({rel: art["sha256"]}, VENDOR, "firmware", "h100-fw", VBIOS)
             .to_json().encode())
    site.data["firmware"].append({"name": "h100-fw", "vendor": "nvidia", "accelerator": GPU, "version": VBIOS,
                                  "image": art, "signature": rel + ".sig"})
    slot = {"kind": GPU, "count": 2, "firmware": "h100-fw"}
    if cap is not None:
        slot["power_cap_w"] = cap
    host = dict(site.host("npu-node-1"), name="gpu-node-1", root="hosts/gpu-node-1", accelerators=[slot])
    site.data["hosts"] = [host]
    site.save()
    install_simulator(site.host_root("gpu-node-1"), [(GPU, VBIOS)] * 2, interpreter=sys.executable)
    return site


def _state(site: Site) -> State:
    return State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())


def _limits(site: Site) -> list[float]:
    return [d["power_limit_w"] for d in read_devices(site.host_root("gpu-node-1"))]


@pytest.mark.slow
def test_cap_is_set_read_back_recorded_and_drift_is_seen(tmp_path: Path) -> None:
    site = _gpu_site(tmp_path, 500)
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    assert _limits(site) == [500.0, 500.0]
    fw = _state(site).hosts["gpu-node-1"].firmware[GPU]
    assert fw.power_limit_w == 500 and fw.version == VBIOS
    assert run_cli("plan", site.path, "--refresh", "--detailed-exitcode").code == 0
    # someone changes the limit on the host: refresh shows drift, apply sets it again
    smi = site.host_root("gpu-node-1") / "bin/nvidia-smi"
    subprocess.run([str(smi), "-pl", "600", "-i", "1"], check=True, capture_output=True)
    drift = run_cli("plan", site.path, "--refresh", "--detailed-exitcode")
    assert drift.code == 2, drift.text
    assert "power limit 600 W → 500 W" in drift.out
    assert run_cli("apply", site.path, "--refresh", "--auto-approve").code == 0
    assert _limits(site) == [500.0, 500.0]


@pytest.mark.slow
def test_cap_the_tool_refuses_fails_the_host_and_records_nothing(tmp_path: Path) -> None:
    site = _gpu_site(tmp_path, 150)  # within the catalog TDP (700 W), below the simulated GPU's minimum (200 W)
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1
    assert "power cap 150 W refused by nvidia-smi on 0000:01:00.0, 0000:02:00.0" in r.err, r.err
    assert "not a valid power limit" in r.err
    assert _limits(site) == [700.0, 700.0]
    state = site.root / ".sovkit" / "state.json"
    assert not state.exists() or not _state(site).hosts.get("gpu-node-1") or \
        not _state(site).hosts["gpu-node-1"].firmware


@pytest.mark.slow
def test_failing_diagnostic_fails_the_host_naming_the_tools_stderr(tmp_path: Path) -> None:
    site = _gpu_site(tmp_path, None)
    set_fault(site.host_root("gpu-node-1"), "0000:02:00.0", "diagnostic-error")
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1
    assert "diagnostic `nvidia-smi -q -x` exited 1: nvidia-smi: error: Unable to determine the device handle " \
           "for GPU 00000000:02:00.0: Unknown Error" in r.err, r.err
    state = site.root / ".sovkit" / "state.json"
    assert not state.exists() or not _state(site).hosts.get("gpu-node-1") or \
        not _state(site).hosts["gpu-node-1"].firmware


def test_diagnostic_passes_without_the_fault_and_fails_without_the_driver(tmp_path: Path) -> None:
    """The simulator's side of the diagnostic: `nvidia-smi -q -x` answers, and refuses without the driver."""
    root = tmp_path / "h"
    install_simulator(root, [(GPU, VBIOS)], interpreter=sys.executable)
    ok = subprocess.run([str(root / "bin/nvidia-smi"), "-q", "-x"], capture_output=True, text=True)
    assert ok.returncode == 0 and "<vbios_version>" + VBIOS in ok.stdout
    shutil.rmtree(root / "sys/module/nvidia")
    bad = subprocess.run([str(root / "bin/nvidia-smi"), "-q", "-x"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no NPU driver loaded" in bad.stderr


def test_power_cap_refused_at_load_where_the_tool_has_none_or_above_tdp(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.host("npu-node-1")["accelerators"][0]["power_cap_w"] = 150
    site.save()
    r = run_cli("validate", site.path)
    assert r.code != 0
    assert "rebellions-atom-max has no power cap: the rbln-smi procedure has none" in r.text
    assert "site.yaml:" in r.text
    site.host("npu-node-1")["accelerators"][0].pop("power_cap_w")
    site.save()
    gpu = _gpu_site(tmp_path / "g", 701)
    r = run_cli("validate", gpu.path)
    assert r.code != 0 and "power cap 701 W is above the nvidia-h100-sxm TDP of 700 W" in r.text, r.text
    slot = gpu.host("gpu-node-1")["accelerators"][0]
    slot["power_cap_w"] = 500
    gpu.host("gpu-node-1")["accelerators"] = [slot, dict(slot, power_cap_w=600), dict(slot, firmware=None)]
    gpu.save()
    r = run_cli("validate", gpu.path)
    assert "slots of nvidia-h100-sxm on one host have different power caps (500 and 600)" in r.text, r.text
    assert "power_cap_w needs firmware" in r.text


def test_a_record_without_a_cap_is_written_as_before() -> None:
    """States written before power caps existed load unchanged, and a record without a cap has no new key."""
    from sovkit.state.models import FirmwareRecord

    old = {"kind": GPU, "version": VBIOS, "image_sha256": "", "devices": {}}
    assert FirmwareRecord.model_validate(old).model_dump(mode="json") == old
    assert FirmwareRecord.model_validate({**old, "power_limit_w": 500}).model_dump(mode="json")["power_limit_w"] == 500
