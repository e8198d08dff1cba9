"""`sovkit init --discover`: read hosts' facts and write a starting inventory from what they are.

The hardware (arch, CPU kind, accelerator cards) comes from the hosts; what only people know (racks and power
budgets, trust roots, the artifact store, the jurisdiction when not given) is written as a ``TODO`` value that
fails validation with a located message until it is filled — a starting inventory never validates by accident.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from sovkit import identifiers
from sovkit.errors import ProvisionError, SovkitError
from sovkit.inventory.models import API_VERSION
from sovkit.provision.executor import ExecEvent, Executor, HostTarget
from sovkit.provision.facts import FactsError, HostFacts, read_facts
from sovkit.provision.hostvars import facts_target

__all__ = ["DiscoverOptions", "DiscoveredHost", "discover_hosts", "parse_host_spec", "starting_inventory"]

#: the rack every discovered host is put in until the operator says which rack it is in
TODO_RACK = "rack-1"


@dataclass(frozen=True)
class DiscoverOptions:
    """How to reach the hosts (the inventory's SSH model), or ``local`` (this machine, optionally a simulated
    host's filesystem root ``root/<name>``)."""

    connection: Literal["ssh", "local"] = "ssh"
    user: str = "root"
    port: int = 22
    key: Path | None = None
    python: str | None = None
    root: Path | None = None


@dataclass(frozen=True)
class DiscoveredHost:
    name: str
    address: str
    facts: HostFacts


def parse_host_spec(spec: str) -> tuple[str, str]:
    """``NAME=ADDRESS`` or ``ADDRESS`` (the name is then the address, lowercased, with other characters '-').
    Both must be plain identifiers: they end up in Ansible's inventory and in site.yaml."""
    name, sep, address = spec.partition("=")
    if not sep:
        address = spec
        name = re.sub(r"[^a-z0-9._-]", "-", spec.lower()).strip("-._")[:63]
    if not identifiers.matches(identifiers.NAME, name):
        raise SovkitError(f"host {identifiers.describe(spec)}: {identifiers.describe(name)} is not a valid host name",
                          "give NAME=ADDRESS with a name of lowercase letters, digits, '.', '_' or '-'")
    if not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", address):
        raise SovkitError(f"host {identifiers.describe(spec)}: {identifiers.describe(address)} is not an address",
                          "an IP address or a host name (letters, digits, '.', ':', '-')")
    return name, address


def _target(name: str, address: str, opts: DiscoverOptions, known_hosts: Path) -> HostTarget:
    python = opts.python or (sys.executable if opts.connection == "local" else "/usr/bin/python3")
    root = str(opts.root.absolute() / name) if opts.root is not None else None
    if opts.connection == "local":
        conn: dict[str, Any] = {"ansible_connection": "local"}
    else:
        conn = {"ansible_host": address, "ansible_user": opts.user, "ansible_port": opts.port,
                "ansible_ssh_common_args": f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="
                                           f"{shlex.quote(str(known_hosts))} -o GlobalKnownHostsFile=/dev/null "
                                           "-o BatchMode=yes"}
        if opts.key is not None:
            conn["ansible_ssh_private_key_file"] = str(opts.key.resolve())
    return facts_target(name, conn, python, root)


def discover_hosts(specs: list[str], opts: DiscoverOptions, executor: Executor, state_dir: Path,
                   on_event: Callable[[ExecEvent], None] = lambda e: None) -> list[DiscoveredHost]:
    """Read every host's facts; raises ProvisionError naming each host that could not be read or whose report
    was refused (a starting inventory with a host silently missing would be wrong)."""
    parsed = [parse_host_spec(s) for s in specs]
    names = [n for n, _ in parsed]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SovkitError(f"host name(s) given twice: {', '.join(dup)}", "give each host once (NAME=ADDRESS)")
    if opts.connection == "ssh" and not identifiers.matches(identifiers.USER, opts.user):
        raise SovkitError(f"{identifiers.describe(opts.user)} is not a valid ssh user", "a POSIX login name")
    if opts.python is not None and not identifiers.safe_path(opts.python):
        raise SovkitError(f"--python {identifiers.describe(opts.python)} is not a plain absolute path",
                          "e.g. /usr/bin/python3")
    if opts.root is not None and not identifiers.safe_path(str(opts.root.absolute())):
        raise SovkitError(f"--root {identifiers.describe(str(opts.root))} is not a plain path",
                          "letters, digits and '. _ + @ , = ~ : -' between '/', no '..'")
    runs = state_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    targets = [_target(n, a, opts, state_dir / "known_hosts") for n, a in parsed]
    found = read_facts(targets, executor, runs, on_event)
    bad = {h: (str(f) if isinstance(f, FactsError) else f) for h, f in found.items()
           if not isinstance(f, HostFacts)}
    if bad:
        names_ = ", ".join(sorted(bad))
        raise DiscoverError(bad, f"could not read the facts of {len(bad)} host(s) ({names_}): nothing was written")
    return [DiscoveredHost(n, a, f) for n, a in parsed if isinstance(f := found[n], HostFacts)]


class DiscoverError(ProvisionError):
    def __init__(self, failures: dict[str, str], message: str) -> None:
        self.failures = failures
        super().__init__(message, "check the connection options (--user, --port, --key, --python), that python3 "
                                  "is on the host, and the reason shown for each host")

    def details(self) -> list[str]:
        return [f"{h}: {why}" for h, why in sorted(self.failures.items())]


def _todo(what: str) -> str:
    return f"TODO: {what}"


def _host_entry(h: DiscoveredHost, opts: DiscoverOptions, site_dir: Path) -> dict[str, Any]:
    f = h.facts
    entry: dict[str, Any] = {"name": h.name, "rack": TODO_RACK, "address": h.address,
                             "arch": f.arch or _todo("arch (aarch64 or x86_64): not found in cpuinfo"),
                             "cpu": f.cpu or _todo(f"cpu id: part {','.join(f.cpu_parts) or 'unknown'} "
                                                   "is not in the catalog")}
    if opts.connection == "local":
        entry["connection"] = "local"
    else:
        ssh: dict[str, Any] = {}
        if opts.user != "root":
            ssh["user"] = opts.user
        if opts.port != 22:
            ssh["port"] = opts.port
        if opts.key is not None:
            key = opts.key.resolve()
            ssh["key"] = str(key.relative_to(site_dir.resolve())) if key.is_relative_to(site_dir.resolve()) else \
                _todo(f"copy {key.name} into the inventory directory and give its relative path")
        if ssh:
            entry["ssh"] = ssh
    if opts.python is not None:
        entry["python_interpreter"] = opts.python
    if opts.root is not None:
        entry["root"] = str(opts.root.absolute() / h.name)
    counts = f.accelerator_counts()
    if counts:
        entry["accelerators"] = [{"kind": k, "count": n} for k, n in sorted(counts.items())]
    return entry


def _found_comment(h: DiscoveredHost) -> str:
    f = h.facts
    bits = [f.arch or "arch ?", f"cpu {f.cpu_name or ','.join(f.cpu_parts) or '?'}"]
    if f.cores:
        bits.append(f"{f.cores} cores")
    if f.memory_kb:
        bits.append(f"{f.memory_kb / 1024 / 1024:.1f} GiB")
    if f.os_name or f.os_id:
        bits.append(f"{f.os_name or f.os_id}")
    cards = ", ".join(f"{c.kind} {c.pci} at {c.slot} [{c.source}]" for c in f.cards) or "no known accelerators"
    lines = [f"#   {h.name}: {'; '.join(bits)}", f"#     cards: {cards}"]
    lines += [f"#     not in the catalog: {d}" for d in f.other_devices]
    if not f.pci_read:
        lines.append("#     the PCI device list could not be read (no /sys/bus/pci/devices)")
    return "\n".join(lines)


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def starting_inventory(name: str, hosts: list[DiscoveredHost], opts: DiscoverOptions, site_dir: Path,
                       country: str | None = None) -> str:
    """The text of a starting site.yaml: discovered hosts, and TODO values (racks, trust roots, artifact store,
    the log sinks and documentation record the policy requires, jurisdiction when no country is given) that fail
    `sovkit validate` until filled. Host-reported values in it
    were validated by :func:`sovkit.provision.facts.parse_facts`; comments carry only such values."""
    if not identifiers.matches(identifiers.NAME, name):
        raise SovkitError(f"{identifiers.describe(name)} is not a valid site name",
                          "1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
    where = country or "TODO"
    parts = [
        "# sovkit starting inventory, written by `sovkit init --discover` from what the hosts reported.\n"
        "# Every value starting with TODO must be replaced: `sovkit validate` names each one left.\n",
        _dump({"apiVersion": API_VERSION, "kind": "Site",
               "metadata": {"name": name, "description": ""}}),
        "# TODO: the site's country (ISO 3166-1 alpha-2, e.g. KR, DE) and where data may go\n"
        if country is None else "",
        _dump({"jurisdiction": {"country": where},
               "residency": {"allowed_jurisdictions": [where], "air_gapped": False}}),
        "# TODO: the keys that sign models (publishers) and firmware (vendors): public key files in this\n"
        "# directory (see `sovkit bundle import`), or empty lists if nothing is signed yet\n",
        _dump({"trust_roots": {"publishers": [{"name": "TODO", "public_key": _todo("publisher public key")}],
                               "vendors": [{"name": "TODO", "public_key": _todo("vendor public key")}]}}),
        "# TODO: where firmware, runtime and model files come from (a directory `sovkit bundle import` fills)\n",
        _dump({"artifact_store": {"kind": "local", "path": _todo("artifact store directory")}}),
        "# TODO: one entry per rack with its power budget; put each host in its rack\n",
        _dump({"racks": [{"name": TODO_RACK, "power_budget_w": _todo("rack power budget in W")}]}),
        "# TODO: where policy decisions and inference logs are kept, and for how many days (AI Act Arts. 12, 19:\n"
        "# at least six months, 183 days; policy rules LOG-001..004)\n",
        _dump({"log_sinks": [
            {"name": "decisions", "url": _todo("decision log URL"), "jurisdiction": where,
             "retention_days": _todo("days kept, at least 183"), "decision_log": True},
            {"name": "inference", "url": _todo("inference log URL"), "jurisdiction": where,
             "retention_days": _todo("days kept, at least 183"), "inference_log": True}]}),
        "# TODO: where the technical documentation is kept, and for how many years (AI Act Art. 18: ten; DOC-001)\n",
        _dump({"records": {"technical_documentation": {
            "location": _todo("documentation location"), "jurisdiction": where,
            "retention_years": _todo("years kept, at least 10")}}}),
        "# Hosts as found:\n" + "\n".join(_found_comment(h) for h in hosts) + "\n",
        _dump({"hosts": [_host_entry(h, opts, site_dir) for h in hosts]}),
        "# TODO: firmware, runtimes, models and deployments (pinned artifacts from your bundle)\n",
        _dump({"firmware": [], "runtimes": [], "models": [], "deployments": []}),
    ]
    return "".join(p for p in parts if p)
