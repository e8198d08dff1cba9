"""Ansible variables for each host, built from the plan and the desired state (data, not templated text)."""

from __future__ import annotations

import shlex
import sys
from functools import cache
from pathlib import Path
from typing import Any

from sovkit.catalog import load_catalog
from sovkit.components import registry
from sovkit.components.host import DesiredHost
from sovkit.inventory.ansible import host_vars
from sovkit.inventory.loader import LoadedInventory
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
        "sovkit_supervise": helper("supervise"),
        "sovkit_serving_probe": helper("serving_probe"),
        "sovkit_serving_files": helper("serving_files"),
        "sovkit_npu_devices": helper("npu_devices"),
        "sovkit_wheelhouse": helper("wheelhouse"),
    }
    return conn, variables


def common_target(inv: LoadedInventory, desired: DesiredHost, known_hosts: Path) -> HostTarget:
    """A host with its connection and the common sovkit_* variables; the caller adds the play's own."""
    conn, v = _common(inv, desired.name, desired, known_hosts)
    return HostTarget(name=desired.name, connection_vars=conn, variables=v)


def apply_target(inv: LoadedInventory, desired: DesiredHost, changes: list[Change],
                 recorded: HostRecord, known_hosts: Path) -> HostTarget:
    """Variables for the apply playbook: only the components this host's changes touch (``sovkit_<var>`` per
    kind), and what the delete changes remove (``sovkit_remove``)."""
    conn, v = _common(inv, desired.name, desired, known_hosts)
    store = inv.artifact_root
    touched = {(c.component, c.name) for c in changes if c.action != "delete"}
    for kind in registry.kinds():
        records = kind.records_of(recorded)
        items = (kind.apply_vars(want, store, desired.root, records.get(name))
                 for name, want in kind.desired_of(desired).items() if (kind.name, name) in touched)
        v[f"sovkit_{kind.var}"] = [item for item in items if item is not None]
    removals = []
    for c in changes:
        owner = registry.find(c.component)
        if c.action != "delete" or owner is None or not owner.removable:
            continue
        have = owner.records_of(recorded).get(c.name)
        paths = owner.removal(desired.name, c.name, have, desired.root)
        if paths:
            removals.append({"component": owner.name, "name": c.name, "paths": paths})
    v["sovkit_remove"] = removals
    return HostTarget(name=desired.name, connection_vars=conn, variables=v)


def observe_target(inv: LoadedInventory, desired: DesiredHost, recorded: HostRecord,
                   known_hosts: Path) -> HostTarget:
    """Variables for the observe playbook: everything desired or recorded on the host (``sovkit_observe.<var>``)."""
    conn, v = _common(inv, desired.name, desired, known_hosts)
    catalog = load_catalog()
    v["sovkit_host_facts"] = helper("host_facts")
    v["sovkit_observe"] = {kind.var: kind.observe_vars(kind.desired_of(desired), kind.records_of(recorded), catalog)
                           for kind in registry.kinds()}
    return HostTarget(name=desired.name, connection_vars=conn, variables=v)


def rollback_target(inv: LoadedInventory, desired: DesiredHost, model: str, recorded: HostRecord,
                    known_hosts: Path) -> HostTarget:
    """Variables for the rollback playbook: switch ``model`` back to its previous version."""
    conn, v = _common(inv, desired.name, desired, known_hosts)
    rec = recorded.models[model]
    v["sovkit_rollback"] = [{"name": model, "dir": str(Path(rec.path).parent)}]
    return HostTarget(name=desired.name, connection_vars=conn, variables=v)


def facts_target(name: str, connection_vars: dict[str, Any], python: str, root: str | None) -> HostTarget:
    """A host for facts.yml (`sovkit init --discover`: no inventory yet, so the caller gives the connection)."""
    return HostTarget(name=name, connection_vars={**connection_vars, "ansible_python_interpreter": python},
                      variables={"sovkit_python": python, "sovkit_root": root,
                                 "sovkit_host_facts": helper("host_facts")})
