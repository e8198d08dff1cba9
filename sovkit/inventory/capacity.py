"""Rack power and accelerator memory from the catalog — shown by `inventory show`, judged by policy."""

from __future__ import annotations

from dataclasses import dataclass

from sovkit.catalog import Catalog
from sovkit.inventory.models import Host, Site


@dataclass(frozen=True)
class PowerDraw:
    """Known TDP total, and how many components had no known TDP (so the total is a lower bound)."""

    watts: float
    unknown: int

    def __add__(self, other: PowerDraw) -> PowerDraw:
        return PowerDraw(self.watts + other.watts, self.unknown + other.unknown)


@dataclass(frozen=True)
class RackPower:
    rack: str
    hosts: int
    accelerators: int
    draw: PowerDraw
    budget_w: float

    @property
    def ratio(self) -> float:
        return self.draw.watts / self.budget_w


def host_power(host: Host, catalog: Catalog) -> PowerDraw:
    """A host's power draw from the catalog (base plus its accelerators), for the rack budget check."""
    draw = PowerDraw(0.0, 0)
    cpu = catalog.cpus.get(host.cpu)
    cpu_w = cpu.tdp_w.value if cpu else None
    draw += PowerDraw(cpu_w or 0.0, 0 if cpu_w is not None else 1)
    for slot in host.accelerators:
        kind = catalog.accelerators.get(slot.kind)
        w = kind.tdp_w.value if kind else None
        draw += PowerDraw((w or 0.0) * slot.count, 0 if w is not None else slot.count)
    return draw


def host_accelerator_memory_gb(host: Host, catalog: Catalog) -> float | None:
    """Total accelerator memory on a host, or None when any device's memory is unknown."""
    total = 0.0
    for slot in host.accelerators:
        kind = catalog.accelerators.get(slot.kind)
        if kind is None or kind.memory_gb.value is None:
            return None
        total += kind.memory_gb.value * slot.count
    return total


def rack_power(site: Site, catalog: Catalog) -> list[RackPower]:
    out = []
    by_rack: dict[str, list[Host]] = {}
    for h in site.hosts:
        by_rack.setdefault(h.rack, []).append(h)
    for rack in site.racks:
        members = by_rack.get(rack.name, [])
        draw = PowerDraw(0.0, 0)
        for h in members:
            draw += host_power(h, catalog)
        out.append(RackPower(rack.name, len(members), sum(s.count for h in members for s in h.accelerators),
                             draw, rack.power_budget_w))
    return out
