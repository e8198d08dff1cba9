"""Ansible variables for each host, built from the plan and the desired state (data, not templated text)."""

from __future__ import annotations

import posixpath
import shlex
import sys
from functools import cache
from pathlib import Path
from typing import Any

from sovkit import identifiers as ids
from sovkit.catalog import load_catalog
from sovkit.errors import ProvisionError
from sovkit.inventory.ansible import host_vars
from sovkit.inventory.loader import LoadedInventory
from sovkit.plan.desired import DesiredHost
from sovkit.plan.model import Change
from sovkit.provision.executor import HostTarget
from sovkit.resources import templates_dir
from sovkit.state.models import HostRecord

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@cache
def helper(name: str) -> str:
    """Source of a small helper program (templates/ansible/helpers/) run on the host with ``python -c``."""
    return (templates_dir() / "ansible" / "helpers" / f"{name}.py").read_text(encoding="utf-8")


def _common(inv: LoadedInventory, name: str, desired: DesiredHost,
            known_hosts: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    host = inv.site.host(name)
    key = str(inv.resolve(host.ssh.key)) if host.ssh.key else None
    conn = host_vars(host, key)
    if host.connection == "ssh":
        pinned = host.ssh.known_hosts
        checking = "yes" if pinned else "accept-new"
        hosts_file = inv.resolve(pinned) if pinned else known_hosts
        conn["ansible_ssh_common_args"] = (
            f"-o StrictHostKeyChecking={checking} -o UserKnownHostsFile={shlex.quote(str(hosts_file))} "
            "-o GlobalKnownHostsFile=/dev/null -o BatchMode=yes"
        )
    python = host.python_interpreter or (sys.executable if host.connection == "local" else "/usr/bin/python3")
    conn.setdefault("ansible_python_interpreter", python)
    root = desired.root
    variables: dict[str, Any] = {
        "sovkit_root": root,
        "sovkit_path_env": f"{root}/bin:{SYSTEM_PATH}" if root else SYSTEM_PATH,
        "sovkit_python": python,
        "sovkit_version_probe": helper("version_probe"),
        "sovkit_swap_dir": helper("swap_dir"),
        "sovkit_swap_link": helper("swap_link"),
        "sovkit_rollback_probe": helper("rollback"),
        "sovkit_manage_services": False,
    }
    return conn, variables


def _removable(host: str, path: str, tail: str) -> str:
    """A recorded path sovkit may delete: a plain absolute path ending in sovkit's own install directory.

    Recorded paths came from the state file (or, before, from a host); removal is the one place they are
    acted on, so anything else is refused rather than deleted.
    """
    if not (ids.safe_path(path) and path.endswith(tail)):
        raise ProvisionError(f"{host}: recorded path {ids.describe(path)} is not a sovkit install directory "
                             f"(…{tail}); nothing was removed",
                             "run `sovkit refresh` to read the host back, or fix the state file")
    return path


def _profile(kind: str) -> dict[str, Any]:
    catalog = load_catalog()
    p = catalog.profiles[catalog.accelerators[kind].profile]
    return {"query": p.query, "flash": p.flash, "reset": p.reset, "devices_key": p.devices_key,
            "id_key": p.id_key, "firmware_key": p.firmware_key}


def apply_target(inv: LoadedInventory, desired: DesiredHost, changes: list[Change],
                 recorded: HostRecord, known_hosts: Path) -> HostTarget:
    """Variables for the apply playbook: only the components this host's changes touch."""
    conn, v = _common(inv, desired.name, desired, known_hosts)
    store = inv.artifact_root
    touched = {(c.component, c.name) for c in changes if c.action != "delete"}
    v["sovkit_firmware"] = [
        {"kind": f.kind, "version": f.version, "count": f.count, "sha256": f.image.sha256,
         "image_src": str(store / f.image.store_path), **_profile(f.kind)}
        for f in desired.firmware.values() if ("firmware", f.kind) in touched
    ]
    v["sovkit_runtimes"] = [
        {"name": r.name, "version": r.version, "package": r.package, "prefix": r.prefix,
         "staging": f"{desired.root}/var/lib/sovkit/staging/runtime/{r.name}-{r.version}",
         "artifacts": [{"src": str(store / a.store_path), "name": a.name, "sha256": a.sha256,
                        "store_path": a.store_path} for a in r.artifacts]}
        for r in desired.runtimes.values() if ("runtime", r.name) in touched
    ]
    v["sovkit_models"] = [
        {"name": m.name, "version": m.version, "dir": m.path,
         "signature_src": str(store / m.signature) if m.signature else "",
         "files": [{"src": str(store / f.store_path), "name": f.name, "sha256": f.sha256} for f in m.files]}
        for m in desired.models.values() if ("model", m.name) in touched
    ]
    v["sovkit_serving"] = [
        {"deployment": s.deployment, "role": s.role, "model": s.model, "model_version": s.model_version,
         "runtime": s.runtime, "runtime_version": s.runtime_version, "port": s.port,
         "config": s.config, "config_path": s.config_path, "unit": s.unit, "unit_path": s.unit_path,
         "config_sha256": s.config_sha256}
        for s in desired.serving.values() if ("serving", s.deployment) in touched
    ]
    removals = []
    for c in changes:
        if c.action != "delete":
            continue
        if c.component == "model" and c.name in recorded.models:
            rec_path = recorded.models[c.name].path
            base = posixpath.dirname(rec_path) if rec_path else f"{desired.root}/opt/sovkit/models/{c.name}"
            removals.append({"component": "model", "name": c.name,
                             "paths": [_removable(desired.name, base, f"/opt/sovkit/models/{c.name}")]})
        elif c.component == "runtime" and c.name in recorded.runtimes:
            rrec = recorded.runtimes[c.name]
            prefix = rrec.prefix or f"{desired.root}/opt/sovkit/runtimes/{c.name}/{rrec.version}"
            _removable(desired.name, posixpath.dirname(prefix), f"/opt/sovkit/runtimes/{c.name}")
            removals.append({"component": "runtime", "name": c.name, "paths": [prefix]})
        elif c.component == "serving":
            root = desired.root
            removals.append({"component": "serving", "name": c.name, "paths": [
                f"{root}/etc/sovkit/serving/{c.name}.yaml", f"{root}/etc/systemd/system/sovkit-{c.name}.service"]})
    v["sovkit_remove"] = removals
    return HostTarget(name=desired.name, connection_vars=conn, variables=v)


def observe_target(inv: LoadedInventory, desired: DesiredHost, recorded: HostRecord,
                   known_hosts: Path) -> HostTarget:
    """Variables for the observe playbook: everything desired or recorded on the host."""
    conn, v = _common(inv, desired.name, desired, known_hosts)
    kinds = sorted(set(desired.firmware) | set(recorded.firmware))
    catalog = load_catalog()
    runtimes = {r.name: {"name": r.name, "package": r.package, "prefix": r.prefix}
                for r in desired.runtimes.values()}
    for name, rec in recorded.runtimes.items():
        runtimes.setdefault(name, {"name": name, "package": rec.package, "prefix": rec.prefix})
    models = {m.name: {"name": m.name, "dir": m.path, "files": [f.name for f in m.files]}
              for m in desired.models.values()}
    for name, mrec in recorded.models.items():
        models.setdefault(name, {"name": name, "dir": str(Path(mrec.path).parent), "files": sorted(mrec.files)})
    serving = [{"deployment": s.deployment, "paths": [s.config_path, s.unit_path]} for s in desired.serving.values()]
    v["sovkit_observe"] = {
        "firmware": [{"kind": k, **_profile(k)} for k in kinds if k in catalog.accelerators],
        "runtimes": list(runtimes.values()),
        "models": list(models.values()),
        "serving": serving,
    }
    return HostTarget(name=desired.name, connection_vars=conn, variables=v)


def rollback_target(inv: LoadedInventory, desired: DesiredHost, model: str, recorded: HostRecord,
                    known_hosts: Path) -> HostTarget:
    """Variables for the rollback playbook: switch ``model`` back to its previous version."""
    conn, v = _common(inv, desired.name, desired, known_hosts)
    rec = recorded.models[model]
    v["sovkit_rollback"] = [{"name": model, "dir": str(Path(rec.path).parent)}]
    return HostTarget(name=desired.name, connection_vars=conn, variables=v)
