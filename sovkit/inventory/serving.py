"""Where serving runs: accelerator devices and listening ports per (host, deployment), and what clashes.

Pure (no I/O): the policy input judges the result (SV-004, SV-005) and the serving component launches
exactly these devices and ports, so both read one computation.

Device indexes on a host are 0..N-1, N the sum of its accelerator slot counts, numbered through the slots
in inventory order. Explicit ``devices:`` are placed first (so an allocated deployment listed earlier never
takes them); every other deployment then gets its ``tensor_parallel`` lowest free indexes, in inventory
order. Ports belong to an *address*, not a host: hosts sharing an address (the demo's 127.0.0.1 hosts)
share one network stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from sovkit.catalog import Catalog
from sovkit.inventory.models import Deployment, Host, Model, ServingGroup, Site

#: bytes per value of a KV-cache dtype
KV_DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
#: bytes per parameter of a weights dtype
WEIGHT_DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}

Purpose = Literal["serve", "kv", "router"]
Side = Literal["prefill", "decode"]


@dataclass(frozen=True)
class PortUse:
    """One listening socket: ``owner`` is the resource (``deployments/x``, ``serving_groups/g``) that opens it."""

    address: str
    port: int
    host: str
    owner: str
    purpose: Purpose


@dataclass(frozen=True)
class HostPlacement:
    """One deployment on one host: the device indexes it gets (fewer than tensor_parallel on a conflict)."""

    deployment: str
    host: str
    devices: tuple[int, ...]
    #: the catalog accelerator kind of each index in ``devices``
    device_kinds: tuple[str, ...]
    #: smallest catalog memory among its devices (GB), None when unknown or no device was placed
    device_memory_gb: float | None
    ports: tuple[PortUse, ...]
    group: str | None
    side: Side | None


@dataclass(frozen=True)
class Conflict:
    """A device or port claimed twice, or too few free devices; ``resource`` is the later claimant."""

    kind: Literal["device", "devices", "port"]
    host: str
    resource: str
    message: str


@dataclass(frozen=True)
class Placements:
    hosts: tuple[HostPlacement, ...]
    #: router sockets (one per serving group)
    routers: tuple[PortUse, ...]
    conflicts: tuple[Conflict, ...]
    _index: dict[tuple[str, str], HostPlacement] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], HostPlacement] = {}
        for p in self.hosts:
            index.setdefault((p.deployment, p.host), p)
        object.__setattr__(self, "_index", index)

    def get(self, deployment: str, host: str) -> HostPlacement:
        """The placement of ``deployment`` on ``host`` (KeyError if it does not run there)."""
        return self._index[deployment, host]

    def ports(self) -> Iterator[PortUse]:
        """Every listening socket: deployments' serve and KV ports, then routers."""
        for p in self.hosts:
            yield from p.ports
        yield from self.routers


def host_devices(host: Host) -> list[str]:
    """The accelerator kind of each device index on ``host`` (index = position)."""
    return [slot.kind for slot in host.accelerators for _ in range(slot.count)]


def group_of(site: Site) -> dict[str, tuple[ServingGroup, Side]]:
    """Deployment name -> (its serving group, its side); deployments in no group are absent."""
    out: dict[str, tuple[ServingGroup, Side]] = {}
    for g in site.serving_groups:
        out.setdefault(g.prefill, (g, "prefill"))
        out.setdefault(g.decode, (g, "decode"))
    return out


def effective_kv_dtype(deployment: Deployment, model: Model) -> str:
    """The KV-cache dtype: the deployment's, else the model's (int4 weights keep an int8 KV cache)."""
    if deployment.kv_dtype is not None:
        return deployment.kv_dtype
    return "int8" if model.dtype == "int4" else model.dtype


def kv_bytes_per_token(model: Model, kv_dtype: str) -> int | None:
    """``2 * layers * kv_heads * head_dim * bytes(kv_dtype)`` (K and V), or None without an architecture."""
    a = model.architecture
    if a is None:
        return None
    return 2 * a.layers * a.kv_heads * a.head_dim * KV_DTYPE_BYTES[kv_dtype]


def _memory(kinds: list[str], catalog: Catalog) -> float | None:
    figures = []
    for kind in kinds:
        acc = catalog.accelerators.get(kind)
        if acc is None or acc.memory_gb.value is None:
            return None
        figures.append(acc.memory_gb.value)
    return min(figures) if figures else None


def placements(site: Site, catalog: Catalog) -> Placements:
    """Devices and ports of every (host, deployment) of ``site``, and every conflict found."""
    hosts = {h.name: h for h in site.hosts}
    kinds = {h.name: host_devices(h) for h in site.hosts}
    groups = group_of(site)
    claimed: dict[tuple[str, int], str] = {}  # (host, index) -> deployment
    got: dict[tuple[int, int], list[int]] = {}  # (deployment position, host position in its list) -> indexes
    conflicts: list[Conflict] = []
    res = {i: f"deployments/{d.name}" for i, d in enumerate(site.deployments)}

    for i, d in enumerate(site.deployments):
        if d.devices is None:
            continue
        for j, name in enumerate(d.hosts):
            if name not in hosts:
                continue
            n = len(kinds[name])
            mine = got.setdefault((i, j), [])
            for idx in d.devices:
                if idx >= n:
                    conflicts.append(Conflict("devices", name, res[i], (
                        f"deployment {d.name} claims device {idx} on host {name}, which has "
                        + (f"{n} device(s) (0..{n - 1})" if n else "no accelerators"))))
                elif (name, idx) in claimed:
                    conflicts.append(Conflict("device", name, res[i], (
                        f"device {idx} on host {name} is claimed by deployments {claimed[name, idx]} "
                        f"and {d.name}")))
                else:
                    claimed[name, idx] = d.name
                    mine.append(idx)

    for i, d in enumerate(site.deployments):
        if d.devices is not None:
            continue
        for j, name in enumerate(d.hosts):
            if name not in hosts:
                continue
            free = [idx for idx in range(len(kinds[name])) if (name, idx) not in claimed]
            mine = free[:d.tensor_parallel]
            for idx in mine:
                claimed[name, idx] = d.name
            got[i, j] = mine
            if len(mine) < d.tensor_parallel:
                conflicts.append(Conflict("devices", name, res[i], (
                    f"deployment {d.name} needs {d.tensor_parallel} device(s) on host {name}; only {len(free)} "
                    f"of its {len(kinds[name])} are free")))

    out: list[HostPlacement] = []
    for i, d in enumerate(site.deployments):
        group, side = groups.get(d.name, (None, None))
        for j, name in enumerate(d.hosts):
            host = hosts.get(name)
            if host is None:
                continue
            ports = [PortUse(host.address, d.port, name, res[i], "serve")]
            if group is not None and side == "decode":
                ports.append(PortUse(host.address, group.kv_transfer.port, name, res[i], "kv"))
            devices = got.get((i, j), [])
            dev_kinds = [kinds[name][idx] for idx in devices]
            out.append(HostPlacement(
                deployment=d.name, host=name, devices=tuple(devices), device_kinds=tuple(dev_kinds),
                device_memory_gb=_memory(dev_kinds, catalog), ports=tuple(ports),
                group=group.name if group is not None else None, side=side,
            ))
    routers = tuple(PortUse(hosts[g.router.host].address, g.router.port, g.router.host, f"serving_groups/{g.name}",
                            "router")
                    for g in site.serving_groups if g.router.host in hosts)
    result = Placements(tuple(out), routers, ())
    first: dict[tuple[str, int], PortUse] = {}
    for use in result.ports():
        prior = first.setdefault((use.address, use.port), use)
        if prior is not use:
            conflicts.append(Conflict("port", use.host, use.owner, (
                f"port {use.port} on address {use.address} is used by {prior.owner} ({prior.purpose}, host "
                f"{prior.host}) and {use.owner} ({use.purpose}, host {use.host})")))
    return Placements(result.hosts, routers, tuple(conflicts))
