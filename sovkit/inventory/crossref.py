"""Cross-reference checks: names unique, references resolve, catalog ids known, files present."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

from sovkit import identifiers
from sovkit.catalog import Catalog, load_catalog
from sovkit.errors import Problem
from sovkit.inventory.yamlsource import Path_, render_path

if TYPE_CHECKING:
    from sovkit.inventory.loader import LoadedInventory
    from sovkit.inventory.models import Driver, Host

_NAMED_SECTIONS = (
    "racks", "hosts", "firmware", "drivers", "runtimes", "models", "deployments", "data_stores",
    "endpoints", "telemetry", "log_sinks", "backups", "model_registries", "serving_groups",
)


class _Collector:
    def __init__(self, inv: LoadedInventory) -> None:
        self.inv = inv
        self.problems: list[Problem] = []

    def add(self, path: Path_, message: str, hint: str | None = None) -> None:
        mark = self.inv.source_map.find(path)
        self.problems.append(Problem(
            message, mark.file if mark else None, mark.line if mark else None,
            mark.column if mark else None, render_path(path), hint,
        ))

    def ref(self, path: Path_, value: str, known: AbstractSet[str] | Mapping[str, object], what: str) -> None:
        """Check one reference; ``known`` is a set or mapping so the lookup is O(1) (no copy per call)."""
        if value in known:
            return
        names = set(known)
        close = difflib.get_close_matches(value, sorted(names), n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif names:
            hint = f"known {what}s: {', '.join(sorted(names)[:8])}"
        else:
            hint = f"no {what}s are defined"
        self.add(path, f"unknown {what} {value!r}", hint)


def check_references(inv: LoadedInventory, check_files: bool = True) -> list[Problem]:
    site = inv.site
    c = _Collector(inv)
    catalog = load_catalog()

    for section in _NAMED_SECTIONS:
        seen: dict[str, int] = {}
        for i, item in enumerate(getattr(site, section)):
            if item.name in seen:
                c.add((section, i, "name"), f"duplicate name {item.name!r} (first at {section}[{seen[item.name]}])",
                      "names must be unique within a section")
            else:
                seen[item.name] = i
    for section in ("publishers", "vendors"):
        seen = {}
        for i, key in enumerate(getattr(site.trust_roots, section)):
            if key.name in seen:
                c.add(("trust_roots", section, i, "name"), f"duplicate name {key.name!r}")
            seen[key.name] = i

    addresses: dict[str, str] = {}
    racks = {r.name for r in site.racks}
    firmware = {f.name: f for f in site.firmware}
    drivers = {d.name: d for d in site.drivers}
    for i, host in enumerate(site.hosts):
        if host.connection == "ssh":
            other = addresses.get(host.address)
            if other is not None and other != host.name:
                c.add(("hosts", i, "address"), f"address {host.address} is also used by host {other!r}",
                      "each host needs its own address")
            addresses.setdefault(host.address, host.name)
        c.ref(("hosts", i, "rack"), host.rack, racks, "rack")
        if host.cpu not in catalog.cpus:
            c.add(("hosts", i, "cpu"), f"unknown CPU kind {host.cpu!r}", catalog.suggest("cpus", host.cpu))
        elif catalog.cpus[host.cpu].arch != host.arch:
            c.add(("hosts", i, "arch"), f"arch {host.arch} does not match CPU {host.cpu} "
                  f"({catalog.cpus[host.cpu].arch})")
        for j, slot in enumerate(host.accelerators):
            path = ("hosts", i, "accelerators", j)
            if slot.kind not in catalog.accelerators:
                c.add((*path, "kind"), f"unknown accelerator kind {slot.kind!r}",
                      catalog.suggest("accelerators", slot.kind))
            if slot.firmware is not None:
                c.ref((*path, "firmware"), slot.firmware, firmware, "firmware")
                fw = firmware.get(slot.firmware)
                if fw is not None and fw.accelerator != slot.kind:
                    c.add((*path, "firmware"), f"firmware {fw.name!r} is for {fw.accelerator}, not {slot.kind}")
        _check_slot_drivers(c, catalog, i, host, drivers)
        _check_slot_power_caps(c, catalog, i, host)

    vendors = {v.name for v in site.trust_roots.vendors}
    publishers = {p.name for p in site.trust_roots.publishers}
    for i, fw in enumerate(site.firmware):
        c.ref(("firmware", i, "vendor"), fw.vendor, vendors, "trusted vendor")
        if fw.accelerator not in catalog.accelerators:
            c.add(("firmware", i, "accelerator"), f"unknown accelerator kind {fw.accelerator!r}",
                  catalog.suggest("accelerators", fw.accelerator))
    for i, drv in enumerate(site.drivers):
        c.ref(("drivers", i, "vendor"), drv.vendor, vendors, "trusted vendor")
    for i, rt in enumerate(site.runtimes):
        if rt.vendor is not None:
            c.ref(("runtimes", i, "vendor"), rt.vendor, vendors, "trusted vendor")
    for i, model in enumerate(site.models):
        c.ref(("models", i, "publisher"), model.publisher, publishers, "trusted publisher")

    hosts = {h.name for h in site.hosts}
    models_ = {m.name for m in site.models}
    runtimes = {r.name for r in site.runtimes}
    for i, dep in enumerate(site.deployments):
        c.ref(("deployments", i, "model"), dep.model, models_, "model")
        c.ref(("deployments", i, "runtime"), dep.runtime, runtimes, "runtime")
        for j, h in enumerate(dep.hosts):
            c.ref(("deployments", i, "hosts", j), h, hosts, "host")
        if dep.speculative is not None:
            c.ref(("deployments", i, "speculative", "draft_model"), dep.speculative.draft_model, models_, "model")
    _check_serving_groups(inv, c, hosts)
    stores = {d.name for d in site.data_stores}
    for i, backup in enumerate(site.backups):
        c.ref(("backups", i, "source"), backup.source, stores, "data store")

    _check_resolved_paths(inv, c)
    if check_files:
        _check_files(inv, c)
    return c.problems


def _check_slot_drivers(c: _Collector, catalog: Catalog, i: int, host: Host, drivers: Mapping[str, Driver]) -> None:
    """Each slot's driver exists and is its accelerator's vendor's; one host loads one driver per module."""
    by_module: dict[str, str] = {}
    for j, slot in enumerate(host.accelerators):
        if slot.driver is None:
            continue
        path = ("hosts", i, "accelerators", j, "driver")
        c.ref(path, slot.driver, drivers, "driver")
        drv = drivers.get(slot.driver)
        if drv is None:
            continue
        kind = catalog.accelerators.get(slot.kind)
        if kind is not None and kind.vendor != drv.vendor:
            c.add(path, f"driver {drv.name!r} is from vendor {drv.vendor}, {slot.kind} is a {kind.vendor} card",
                  "name a driver of the card's vendor")
        other = by_module.setdefault(drv.module, drv.name)
        if other != drv.name:
            c.add(path, f"driver {drv.name!r} loads module {drv.module!r}, which driver {other!r} of another slot "
                  "of this host loads too", "a host loads one version of a module: name the same driver on both "
                  "slots")


def _check_slot_power_caps(c: _Collector, catalog: Catalog, i: int, host: Host) -> None:
    """A power cap needs a vendor tool that has one, the firmware role that applies it, and a value within the TDP;
    one host's slots of one kind share one cap (the role caps every device of the kind)."""
    caps: dict[str, int | None] = {}
    for j, slot in enumerate(host.accelerators):
        kind = catalog.accelerators.get(slot.kind)
        if slot.kind in caps and caps[slot.kind] != slot.power_cap_w:
            c.add(("hosts", i, "accelerators", j, "power_cap_w"), f"slots of {slot.kind} on one host have "
                  f"different power caps ({caps[slot.kind]} and {slot.power_cap_w})",
                  "give every slot of this kind the same power_cap_w (the devices are capped as one kind)")
        caps.setdefault(slot.kind, slot.power_cap_w)
        if slot.power_cap_w is None or kind is None:
            continue
        path = ("hosts", i, "accelerators", j, "power_cap_w")
        profile = catalog.profiles[kind.profile]
        if profile.power_cap is None:
            c.add(path, f"{slot.kind} has no power cap: the {profile.tool} procedure has none",
                  "remove power_cap_w (sovkit/catalog/profiles.yaml lists no power-limit command for this vendor)")
        elif slot.firmware is None:
            c.add(path, "power_cap_w needs firmware: the firmware role sets the cap",
                  "pin the slot's firmware, or remove power_cap_w")
        elif kind.tdp_w.value is not None and slot.power_cap_w > kind.tdp_w.value:
            c.add(path, f"power cap {slot.power_cap_w} W is above the {slot.kind} TDP of {kind.tdp_w.value:g} W",
                  "give a cap at most the TDP (catalog accelerators.yaml tdp_w)")


def _check_serving_groups(inv: LoadedInventory, c: _Collector, hosts: AbstractSet[str]) -> None:
    """Each group pairs two different existing deployments, each in one group at most; its router host exists.

    Roles, models and runtimes of the pair are judged by policy (SV-001, SV-002), so a wrong pair is a finding
    with a remediation rather than a load error.
    """
    deployments = {d.name for d in inv.site.deployments}
    member: dict[str, str] = {}
    for i, group in enumerate(inv.site.serving_groups):
        c.ref(("serving_groups", i, "router", "host"), group.router.host, hosts, "host")
        if group.prefill == group.decode:
            c.add(("serving_groups", i, "decode"), f"serving group {group.name!r} names deployment "
                  f"{group.decode!r} as both prefill and decode", "prefill and decode are two deployments")
        for side in ("prefill", "decode"):
            name = getattr(group, side)
            c.ref(("serving_groups", i, side), name, deployments, "deployment")
            other = member.get(name)
            if other is not None and other != group.name:
                c.add(("serving_groups", i, side), f"deployment {name!r} is already in serving group {other!r}",
                      "a deployment belongs to one serving group at most")
            member.setdefault(name, group.name)


def _check_resolved_paths(inv: LoadedInventory, c: _Collector) -> None:
    """Paths resolved on the controller that reach Ansible stay plain, and relative roots stay in the inventory.

    The models already refuse '..' and unsafe characters in what was written; this catches what only
    resolving shows: a symlink leading out of the inventory directory, or an inventory directory whose own
    path has characters no host path may have.
    """
    inside = inv.root.resolve()
    for i, host in enumerate(inv.site.hosts):
        if host.root is None or host.root.startswith("/"):
            continue
        resolved = inv.resolve(host.root)
        if resolved != inside and inside not in resolved.parents:
            c.add(("hosts", i, "root"), f"root {host.root!r} resolves to {resolved}, outside the inventory "
                  f"directory {inside}", "a relative root must stay inside the inventory directory (no symlink "
                  "out of it); give an absolute root instead")
        elif not identifiers.safe_path(str(resolved)):
            c.add(("hosts", i, "root"), f"root {host.root!r} resolves to {identifiers.describe(str(resolved))}, "
                  "which has characters a host path may not have", "move the inventory to a directory whose path "
                  "is letters, digits and '. _ + @ , = ~ : -', or give an absolute root")
    if True:  # the local store and the registry store's cache are both handed to Ansible
        store = str(inv.artifact_root)
        if not identifiers.safe_path(store):
            c.add(("artifact_store", "path"), f"the artifact store resolves to {identifiers.describe(store)}, "
                  "which has characters a path handed to Ansible may not have", "move the store (or the inventory) "
                  "to a directory whose path is letters, digits and '. _ + @ , = ~ : -'")


def _check_files(inv: LoadedInventory, c: _Collector) -> None:
    site = inv.site
    for section in ("publishers", "vendors", "policy_bundles"):
        for i, key in enumerate(getattr(site.trust_roots, section)):
            if not inv.resolve(key.public_key).is_file():
                c.add(("trust_roots", section, i, "public_key"), f"key file {key.public_key} not found",
                      f"paths are relative to {inv.root}")
    for i, host in enumerate(site.hosts):
        if host.ssh.key is not None and not inv.resolve(host.ssh.key).is_file():
            c.add(("hosts", i, "ssh", "key"), f"SSH key {host.ssh.key} not found", f"paths are relative to {inv.root}")
    if site.artifact_store.ca is not None and not inv.resolve(site.artifact_store.ca).is_file():
        c.add(("artifact_store", "ca"), f"CA file {site.artifact_store.ca} not found", f"paths are relative to "
              f"{inv.root}")
    if site.artifact_store.kind != "local":
        return
    store = inv.artifact_root
    if not store.is_dir():
        c.add(("artifact_store", "path"), f"artifact store {store} not found",
              "create it, or import a bundle with `sovkit bundle import`")
        return
    artifacts: list[tuple[Path_, str, int]] = []
    for i, fw in enumerate(site.firmware):
        artifacts.append((("firmware", i, "image", "path"), fw.image.path, fw.image.size))
        if fw.signature:
            artifacts.append((("firmware", i, "signature"), fw.signature, -1))
    for i, drv in enumerate(site.drivers):
        for j, art in enumerate(drv.artifacts):
            artifacts.append((("drivers", i, "artifacts", j, "path"), art.path, art.size))
        if drv.signature:
            artifacts.append((("drivers", i, "signature"), drv.signature, -1))
    for i, rt in enumerate(site.runtimes):
        for j, art in enumerate(rt.artifacts):
            artifacts.append((("runtimes", i, "artifacts", j, "path"), art.path, art.size))
    for i, model in enumerate(site.models):
        for j, art in enumerate(model.files):
            artifacts.append((("models", i, "files", j, "path"), art.path, art.size))
        if model.signature:
            artifacts.append((("models", i, "signature"), model.signature, -1))
    for path, rel, size in artifacts:
        f = store / rel
        if not f.is_file():
            c.add(path, f"artifact {rel} not found in the artifact store {store}",
                  "copy it there or import a bundle")
        elif size >= 0 and f.stat().st_size != size:
            c.add(path, f"artifact {rel} is {f.stat().st_size} bytes, the inventory says {size}",
                  "the file differs from the approved one; fetch the approved artifact")
