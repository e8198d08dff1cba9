"""The simulated NPU vendor tool, driven exactly as the provisioner drives a real one: through the catalog profiles."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sovkit.catalog import VendorProfile, load_catalog
from sovkit.simulator import TOOLS, install_simulator, make_firmware_image, read_devices, set_fault, state_path

# one accelerator kind per vendor profile, from the catalog
KIND_FOR_PROFILE = {"rebellions": "rebellions-atom", "furiosa": "furiosa-rngd", "nvidia": "nvidia-h100-sxm"}


def profile(pid: str) -> VendorProfile:
    return load_catalog().profiles[pid]


def run_tool(root: Path, argv: list[str], **subst: str) -> subprocess.CompletedProcess[str]:
    """Run a profile argv the way a host would: tool name resolved through PATH, placeholders substituted."""
    args = [a.format(**subst) if "{" in a else a for a in argv]
    env = {**os.environ, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)


def query(root: Path, prof: VendorProfile) -> dict[str, str]:
    """device id -> firmware, read through the profile's query command and keys."""
    proc = run_tool(root, prof.query)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    return {str(d[prof.id_key]): d[prof.firmware_key] for d in data[prof.devices_key]}


@pytest.fixture(params=sorted(KIND_FOR_PROFILE))
def site(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, VendorProfile, str]:
    prof = profile(request.param)
    kind = KIND_FOR_PROFILE[request.param]
    install_simulator(tmp_path, prof.tool, [(kind, "1.0.0"), (kind, "1.0.0")])
    return tmp_path, prof, kind


def test_simulator_speaks_every_catalog_profile() -> None:
    catalog = load_catalog()
    assert {p.tool for p in catalog.profiles.values()} == set(TOOLS)
    for prof in catalog.profiles.values():
        spec = TOOLS[prof.tool]
        assert [prof.tool, *spec["query"]] == prof.query
        assert [prof.tool, *spec["flash"]] == prof.flash
        assert [prof.tool, *spec["reset"]] == prof.reset


def test_install_layout(tmp_path: Path) -> None:
    tool = install_simulator(tmp_path, "rbln-smi", [("rebellions-atom", "1.0.0"), ("rebellions-atom-max", "2.0.1")])
    assert tool == tmp_path / "bin" / "rbln-smi"
    assert tool.stat().st_mode & 0o777 == 0o755
    assert state_path(tmp_path) == tmp_path / "var/lib/npu-sim/devices.json"
    devices = read_devices(tmp_path)
    assert [(d["id"], d["kind"], d["firmware"]) for d in devices] == [
        ("0", "rebellions-atom", "1.0.0"), ("1", "rebellions-atom-max", "2.0.1"),
    ]


def test_query_reports_devices(site: tuple[Path, VendorProfile, str]) -> None:
    root, prof, kind = site
    proc = run_tool(root, prof.query)
    assert proc.returncode == 0, proc.stderr
    devices = json.loads(proc.stdout)["devices"]
    assert [(d["id"], d["kind"], d["firmware"]) for d in devices] == [("0", kind, "1.0.0"), ("1", kind, "1.0.0")]


def test_flash_then_reset_changes_reported_version(site: tuple[Path, VendorProfile, str]) -> None:
    root, prof, kind = site
    image = root / "fw.bin"
    image.write_bytes(make_firmware_image(kind, "1.2.0"))
    flashed = run_tool(root, prof.flash, device="1", image=str(image))
    assert flashed.returncode == 0, flashed.stderr
    # staged only: the device still runs the old firmware until reset
    assert query(root, prof) == {"0": "1.0.0", "1": "1.0.0"}
    reset = run_tool(root, prof.reset, device="1")
    assert reset.returncode == 0, reset.stderr
    assert query(root, prof) == {"0": "1.0.0", "1": "1.2.0"}
    # a reset with nothing staged changes nothing
    assert run_tool(root, prof.reset, device="0").returncode == 0
    assert query(root, prof) == {"0": "1.0.0", "1": "1.2.0"}


def corrupt_images(kind: str) -> dict[str, tuple[bytes, str]]:
    good = make_firmware_image(kind, "9.9.9", payload_size=4096)
    magic, header, payload = good.split(b"\n", 2)
    flipped = bytearray(payload)
    flipped[100] ^= 0x01
    other_kind = "furiosa-rngd" if kind != "furiosa-rngd" else "rebellions-atom"
    return {
        "wrong-magic": (b"NOT-A-FIRMWARE/1\n" + header + b"\n" + payload, "bad magic"),
        "truncated": (good[:-1000], "truncated"),
        "header-only": (magic + b"\n" + header[:20], "truncated"),
        "bad-header-json": (magic + b"\n{not json\n" + payload, "corrupt image header"),
        "digest-mismatch": (magic + b"\n" + header + b"\n" + bytes(flipped), "digest mismatch"),
        "trailing-data": (good + b"extra", "trailing data"),
        "other-accelerator": (make_firmware_image(other_kind, "9.9.9"), "built for accelerator"),
        "empty": (b"", "bad magic"),
    }


@pytest.mark.parametrize("case", sorted(corrupt_images("x")))
def test_corrupt_image_is_rejected_and_device_unchanged(site: tuple[Path, VendorProfile, str], case: str) -> None:
    root, prof, kind = site
    data, message = corrupt_images(kind)[case]
    image = root / "bad.bin"
    image.write_bytes(data)
    before = state_path(root).read_bytes()
    proc = run_tool(root, prof.flash, device="0", image=str(image))
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "device 0" in proc.stderr
    assert state_path(root).read_bytes() == before
    assert run_tool(root, prof.reset, device="0").returncode == 0
    assert query(root, prof) == {"0": "1.0.0", "1": "1.0.0"}


def test_failed_flash_keeps_earlier_staged_image(tmp_path: Path) -> None:
    install_simulator(tmp_path, "rbln-smi", [("rebellions-atom", "1.0.0")])
    prof = profile("rebellions")
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(make_firmware_image("rebellions-atom", "1.1.0"))
    bad.write_bytes(make_firmware_image("rebellions-atom", "6.6.6")[:-1])
    assert run_tool(tmp_path, prof.flash, device="0", image=str(good)).returncode == 0
    assert run_tool(tmp_path, prof.flash, device="0", image=str(bad)).returncode != 0
    assert run_tool(tmp_path, prof.reset, device="0").returncode == 0
    assert query(tmp_path, prof) == {"0": "1.1.0"}


def test_unknown_device(site: tuple[Path, VendorProfile, str]) -> None:
    root, prof, kind = site
    image = root / "fw.bin"
    image.write_bytes(make_firmware_image(kind, "1.2.0"))
    before = state_path(root).read_bytes()
    for argv, subst in ((prof.flash, {"device": "7", "image": str(image)}), (prof.reset, {"device": "7"})):
        proc = run_tool(root, argv, **subst)
        assert proc.returncode != 0
        assert "unknown device '7'" in proc.stderr
    assert state_path(root).read_bytes() == before


def test_missing_image_file(tmp_path: Path) -> None:
    install_simulator(tmp_path, "furiosa-smi", [("furiosa-rngd", "1.0.0")])
    proc = run_tool(tmp_path, profile("furiosa").flash, device="0", image=str(tmp_path / "nope.bin"))
    assert proc.returncode != 0
    assert "cannot read firmware image" in proc.stderr


def test_tools_reject_each_others_command_lines(tmp_path: Path) -> None:
    install_simulator(tmp_path, "furiosa-smi", [("furiosa-rngd", "1.0.0")])
    install_simulator(tmp_path / "nv", "nvidia-smi", [("nvidia-h100-sxm", "1.0.0")])
    furiosa = run_tool(tmp_path, ["furiosa-smi", "--json"])
    assert furiosa.returncode == 2
    assert "unrecognised arguments" in furiosa.stderr
    nvidia = run_tool(tmp_path / "nv", ["nvidia-smi", "reset", "--device", "0"])
    assert nvidia.returncode == 2


def test_unknown_tool_name(tmp_path: Path) -> None:
    tool = install_simulator(tmp_path, "rbln-smi", [("rebellions-atom", "1.0.0")])
    renamed = tool.with_name("acme-smi")
    renamed.write_bytes(tool.read_bytes())
    renamed.chmod(0o755)
    proc = subprocess.run([str(renamed), "--json"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "rbln-smi" in proc.stderr and "acme-smi" in proc.stderr
    with pytest.raises(ValueError, match="unknown vendor tool"):
        install_simulator(tmp_path, "acme-smi", [])


def test_firmware_images_are_deterministic() -> None:
    a = make_firmware_image("rebellions-atom", "1.0.0")
    assert a == make_firmware_image("rebellions-atom", "1.0.0")
    assert a != make_firmware_image("rebellions-atom", "1.0.1")
    assert a != make_firmware_image("rebellions-atom", "1.0.0", seed="x")
    assert len(make_firmware_image("rebellions-atom", "1.0.0", payload_size=10)) < len(a)
    assert a.startswith(b"SOVKIT-SIMFW/1\n")


def test_state_is_per_root(tmp_path: Path) -> None:
    """Two hosts on one machine: flashing one leaves the other alone."""
    prof = profile("rebellions")
    for host in ("h1", "h2"):
        install_simulator(tmp_path / host, "rbln-smi", [("rebellions-atom", "1.0.0")])
    image = tmp_path / "fw.bin"
    image.write_bytes(make_firmware_image("rebellions-atom", "2.0.0"))
    assert run_tool(tmp_path / "h1", prof.flash, device="0", image=str(image)).returncode == 0
    assert run_tool(tmp_path / "h1", prof.reset, device="0").returncode == 0
    assert query(tmp_path / "h1", prof) == {"0": "2.0.0"}
    assert query(tmp_path / "h2", prof) == {"0": "1.0.0"}


def test_interpreter_override(tmp_path: Path) -> None:
    import sys

    tool = install_simulator(tmp_path, "rbln-smi", [("rebellions-atom", "1.0.0")], interpreter=sys.executable)
    assert tool.read_bytes().startswith(f"#!{sys.executable}\n".encode())
    assert query(tmp_path, profile("rebellions")) == {"0": "1.0.0"}


def test_fault_flash_error(tmp_path: Path) -> None:
    install_simulator(tmp_path, "rbln-smi", [("rebellions-atom", "1.0.0"), ("rebellions-atom", "1.0.0")])
    set_fault(tmp_path, "1", "flash-error")
    prof = profile("rebellions")
    image = tmp_path / "fw.bin"
    image.write_bytes(make_firmware_image("rebellions-atom", "1.1.0"))
    proc = run_tool(tmp_path, prof.flash, device="1", image=str(image))
    assert proc.returncode == 1
    assert "I/O error" in proc.stderr
    assert run_tool(tmp_path, prof.flash, device="0", image=str(image)).returncode == 0
    for dev in ("0", "1"):
        assert run_tool(tmp_path, prof.reset, device=dev).returncode == 0
    assert query(tmp_path, prof) == {"0": "1.1.0", "1": "1.0.0"}


def test_fault_reset_does_not_activate(tmp_path: Path) -> None:
    """The device accepts the image but falls back on reset: only a read-back reveals it."""
    install_simulator(tmp_path, "furiosa-smi", [("furiosa-rngd", "1.0.0")])
    set_fault(tmp_path, "0", "reset-no-activate")
    prof = profile("furiosa")
    image = tmp_path / "fw.bin"
    image.write_bytes(make_firmware_image("furiosa-rngd", "1.1.0"))
    assert run_tool(tmp_path, prof.flash, device="0", image=str(image)).returncode == 0
    assert run_tool(tmp_path, prof.reset, device="0").returncode == 0
    assert query(tmp_path, prof) == {"0": "1.0.0"}
    set_fault(tmp_path, "0", None)
    assert run_tool(tmp_path, prof.flash, device="0", image=str(image)).returncode == 0
    assert run_tool(tmp_path, prof.reset, device="0").returncode == 0
    assert query(tmp_path, prof) == {"0": "1.1.0"}
    with pytest.raises(ValueError, match="unknown fault"):
        set_fault(tmp_path, "0", "on-fire")
