"""Prepare the one-machine demo site: copy the shipped demo inventory, give each host a simulated NPU.

The hosts are local-connection hosts with their own root directories; the
simulated vendor tool is installed into each root, exactly where a lab host
would have the vendor's real tool. Everything after this is the product path.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sovkit.errors import SovkitError
from sovkit.inventory import load_inventory
from sovkit.resources import data_dir
from sovkit.signing.keys import PASSPHRASE_ENV, LocalSigner, write_keypair
from sovkit.simulator import install_simulator

FACTORY_FIRMWARE = "1.0.0"


def demo_source() -> Path:
    return data_dir("inventories") / "demo"


def prepare_demo(workdir: Path, fresh: bool = False) -> Path:
    """Create (or reuse) the demo site in ``workdir``; returns the inventory path."""
    if importlib.util.find_spec("pip") is None:
        # the demo hosts run on this interpreter, and the runtime role installs wheels with `python -m pip`
        raise SovkitError(f"the demo hosts use this Python ({sys.executable}), which has no pip: the runtime step "
                          "installs its wheels with `python -m pip`",
                          f"run `{sys.executable} -m ensurepip`, or install sovkit with `python3 -m pip install .`")
    site = workdir / "site.yaml"
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    if not site.exists():
        if workdir.exists() and any(workdir.iterdir()):
            raise SovkitError(f"{workdir} exists and is not a sovkit demo",
                              "choose an empty directory with --workdir, or pass --fresh")
        shutil.copytree(demo_source(), workdir, ignore=shutil.ignore_patterns("generate.py", "*.in"),
                        dirs_exist_ok=True)
    loaded = load_inventory(site)
    for host in loaded.site.hosts:
        root = Path(loaded.host_root(host) or "")
        if (root / "bin").is_dir():
            continue
        # one simulated host per root: every card of every slot, in slot order (card N on PCI bus N+1)
        devices = [(s.kind, FACTORY_FIRMWARE) for s in host.accelerators for _ in range(s.count)]
        install_simulator(root, devices, cpu=host.cpu, interpreter=sys.executable)
    key = workdir / ".sovkit" / "keys" / "operator.key"
    if not key.exists():
        # with SOVKIT_KEY_PASSPHRASE set the operator asked for encrypted keys: the demo key is encrypted with
        # it, and every later step of the demo unlocks it with the same variable
        passphrase = os.environ.get(PASSPHRASE_ENV)
        write_keypair(LocalSigner.generate(), key, passphrase.encode() if passphrase else None)
    return site


@dataclass(frozen=True)
class DemoCommand:
    """One step of the demo: a title and the sovkit command line it runs."""

    name: str
    argv: list[str]


@dataclass(frozen=True)
class DemoStep:
    """How one step went (``sovkit demo --json`` lists these)."""

    name: str
    command: str
    ok: bool
    detail: str


@dataclass
class DemoReport:
    """The demo run: its site, each step that ran, and where the evidence is."""

    workdir: str
    ok: bool = True
    steps: list[DemoStep] = field(default_factory=list)
    audit_pack: str = ""


def demo_commands(workdir: Path, site: Path) -> list[DemoCommand]:
    """validate → check → plan → apply → plan → attest verify → audit → verify → serving status → a request,
    as sovkit command lines."""
    key = workdir / ".sovkit" / "keys" / "operator.key"
    plan_file = workdir / "demo.plan.json"
    pack = workdir / "audit-pack"
    return [
        DemoCommand("validate the inventory", ["validate", str(site)]),
        DemoCommand("evaluate the policy pack", ["check", str(site)]),
        DemoCommand("plan against what the hosts really have, and save the signed plan",
                    ["plan", str(site), "--refresh", "-o", str(plan_file)]),
        DemoCommand("apply the saved plan through Ansible", ["apply", str(plan_file)]),
        DemoCommand("plan again: nothing left to do", ["plan", str(site), "--detailed-exitcode"]),
        DemoCommand("verify the signed attestations offline", ["attest", "verify", str(site), "--key", f"{key}.pub"]),
        DemoCommand("write the regulator's audit pack", ["audit", str(site), "-o", str(pack)]),
        DemoCommand("verify the audit pack offline, as a regulator would", ["verify", str(pack), "--key",
                                                                            f"{key}.pub"]),
        DemoCommand("show the serving endpoints", ["serving", "status", str(site)]),
        DemoCommand("ask the model, through the router (prefill, then decode)",
                    ["serving", "request", str(site), "--prompt", "안녕하세요, sovkit"]),
    ]
