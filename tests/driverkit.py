"""Stand-in driver packages for test sites: real .deb files (built with Debian's dpkg-deb) that install a
simulated kernel module (``var/lib/npu-sim/modules/NAME.json``), signed by the demo vendor, added to a
sitefactory site as a ``drivers:`` entry; and the simulated hosts' modprobe/modinfo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sovkit.signing.artifacts import sign_artifacts
from sovkit.simulator.drivers import install_kmod, load_module
from tests.sitefactory import VENDOR, Site

MODULE = "rebellions"


def build_deb(workdir: Path, package: str, version: str, module: str, module_version: str) -> bytes:
    """A .deb whose only file is the simulated module file, reporting ``module_version`` once loaded (a package
    whose module reports another version than the package's is how a broken build is simulated)."""
    tree = workdir / f"{package}_{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: sovkit tests <t@example.invalid>\n"
        "Description: sovkit test stand-in for a kernel driver package\n")
    mod = tree / "var/lib/npu-sim/modules"
    mod.mkdir(parents=True)
    (mod / f"{module}.json").write_text(json.dumps({"name": module, "version": module_version}) + "\n")
    out = workdir / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)], check=True,
                   capture_output=True)
    return out.read_bytes()


def add_driver(site: Site, workdir: Path, name: str, version: str, *, module: str = MODULE,
               reports: str | None = None, package: str = "rebellions-sim") -> dict[str, Any]:
    """Add a signed ``drivers:`` entry (deb) to ``site`` whose module reports ``reports`` (default: ``version``)."""
    data = build_deb(workdir / name, package, version, module, reports or version)
    rel = f"drivers/{package}_{version}_all.deb"
    art = site.put(rel, data)
    env = sign_artifacts({rel: art["sha256"]}, VENDOR, "driver", name, version)
    site.put(f"drivers/{name}.sig", env.to_json().encode())
    entry = {"name": name, "vendor": "rebellions", "version": version, "module": module, "format": "deb",
             "artifacts": [art], "signature": f"drivers/{name}.sig"}
    site.data.setdefault("drivers", []).append(entry)
    return entry


def add_runfile_driver(site: Site, name: str, version: str, *, module: str = MODULE) -> dict[str, Any]:
    """Add a signed runfile ``drivers:`` entry: a shell installer that, run as ``sh FILE --silent``, writes the
    simulated module file below ``$DESTDIR`` (what sovkit sets on a prefixed host)."""
    script = (
        "#!/bin/sh\nset -eu\n"
        '[ "${1:-}" = "--silent" ] || { echo "usage: $0 --silent" >&2; exit 2; }\n'
        'mkdir -p "${DESTDIR:?}/var/lib/npu-sim/modules"\n'
        f"printf '%s\\n' '{json.dumps({'name': module, 'version': version})}' "
        f'> "$DESTDIR/var/lib/npu-sim/modules/{module}.json"\n'
    )
    rel = f"drivers/rebellions-sim-{version}.run"
    art = site.put(rel, script.encode())
    env = sign_artifacts({rel: art["sha256"]}, VENDOR, "driver", name, version)
    site.put(f"drivers/{name}.sig", env.to_json().encode())
    entry = {"name": name, "vendor": "rebellions", "version": version, "module": module, "format": "runfile",
             "artifacts": [art], "signature": f"drivers/{name}.sig"}
    site.data.setdefault("drivers", []).append(entry)
    return entry


def use_driver(site: Site, name: str, hosts: list[str] | None = None) -> None:
    """Name driver ``name`` on every accelerator slot of ``hosts`` (default: all)."""
    for h in site.data["hosts"]:
        if hosts is None or h["name"] in hosts:
            for slot in h.get("accelerators", []):
                slot["driver"] = name


def boot_with_driver(site: Site, host: str, version: str, module: str = MODULE) -> None:
    """The host has the simulated modprobe/modinfo, and module ``module`` loaded at ``version``."""
    root = site.host_root(host)
    install_kmod(root, interpreter=sys.executable)
    load_module(root, module, version)
