"""The Ansible view of a site: an inventory dict grouped by rack, serving role and accelerator kind.

Built from the models as data (never by templating YAML text), so names with
odd characters cannot inject structure.
"""

from __future__ import annotations

import re
from typing import Any

from sovkit.errors import InventoryError, Problem
from sovkit.inventory.models import Host, Site


def group_name(prefix: str, value: str) -> str:
    """An Ansible-safe group name (letters, digits, underscores)."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', value)}"


def host_vars(host: Host, key_path: str | None = None) -> dict[str, Any]:
    hv: dict[str, Any] = {"sovkit_rack": host.rack, "sovkit_arch": host.arch, "sovkit_cpu": host.cpu}
    if host.connection == "local":
        hv["ansible_connection"] = "local"
    else:
        hv.update(ansible_host=host.address, ansible_user=host.ssh.user, ansible_port=host.ssh.port)
        if key_path is not None:
            hv["ansible_ssh_private_key_file"] = key_path
    if host.python_interpreter is not None:
        hv["ansible_python_interpreter"] = host.python_interpreter
    if host.root is not None:
        hv["sovkit_root"] = host.root
    return hv


def roles_by_host(site: Site) -> dict[str, set[str]]:
    roles: dict[str, set[str]] = {}
    for dep in site.deployments:
        for h in dep.hosts:
            roles.setdefault(h, set()).add(dep.role)
    return roles


def to_ansible_inventory(site: Site, key_paths: dict[str, str] | None = None) -> dict[str, Any]:
    """Ansible YAML inventory structure: ``all.hosts`` with vars, and child groups."""
    key_paths = key_paths or {}
    hosts = {h.name: host_vars(h, key_paths.get(h.name)) for h in site.hosts}
    groups: dict[str, set[str]] = {}
    sources: dict[str, str] = {}
    roles = roles_by_host(site)

    def add(prefix: str, value: str, host: str) -> None:
        name = group_name(prefix, value)
        if sources.setdefault(name, value) != value:
            raise InventoryError([Problem(
                f"{prefix} names {sources[name]!r} and {value!r} both become Ansible group {name!r}",
                hint="rename one of them (Ansible group names allow only letters, digits and '_')",
            )], summary="inventory cannot be exported")
        groups.setdefault(name, set()).add(host)

    for h in site.hosts:
        add("rack", h.rack, h.name)
        for role in roles.get(h.name, ()):
            add("role", role, h.name)
        for slot in h.accelerators:
            add("accel", slot.kind, h.name)
    return {
        "all": {
            "hosts": hosts,
            "vars": {"sovkit_site": site.metadata.name},
            "children": {g: {"hosts": {n: None for n in sorted(members)}} for g, members in sorted(groups.items())},
        }
    }
