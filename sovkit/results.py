"""The ``--json`` documents of the commands that report on inputs and artifacts, as pydantic models.

Built by the library from its own results, dumped by the CLI as they are, so a key cannot drift between
the code and docs; the shapes are the ones the commands printed before (pinned by tests/test_cli_json.py
and the docs).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from sovkit.catalog import load_catalog
from sovkit.errors import InventoryError
from sovkit.inventory import LoadedInventory
from sovkit.inventory.capacity import host_power, rack_power

if TYPE_CHECKING:
    from sovkit.attest.log import LogEntry
    from sovkit.audit.pack import AuditPack
    from sovkit.bundle.api import CreateResult
    from sovkit.bundle.importer import ImportReport


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InventoryValid(_Out):
    """`sovkit validate --json` for a valid inventory."""

    valid: bool = True
    site: str
    digest: str
    files: list[str]
    counts: dict[str, int]

    @classmethod
    def of(cls, loaded: LoadedInventory) -> InventoryValid:
        site = loaded.site
        return cls(site=site.metadata.name, digest=loaded.digest, files=[str(f) for f in loaded.files],
                   counts={"racks": len(site.racks), "hosts": len(site.hosts), "models": len(site.models),
                           "deployments": len(site.deployments)})


class InventoryInvalid(_Out):
    """`sovkit validate --json` for an invalid inventory: every located problem."""

    valid: bool = False
    summary: str
    problems: list[dict[str, Any]]

    @classmethod
    def of(cls, exc: InventoryError) -> InventoryInvalid:
        return cls(summary=exc.message, problems=[dataclasses.asdict(p) for p in exc.problems])


class RackView(_Out):
    name: str
    hosts: int
    accelerators: int
    power_w: float
    unknown_tdp_components: int
    budget_w: float
    ratio: float


class HostView(_Out):
    name: str
    rack: str
    address: str
    cpu: str
    accelerators: list[dict[str, Any]]
    power_w: float


class InventoryShow(_Out):
    """`sovkit inventory show --json`: racks with power against budget, and hosts."""

    site: str
    jurisdiction: dict[str, Any]
    racks: list[RackView]
    hosts: list[HostView]

    @classmethod
    def of(cls, loaded: LoadedInventory) -> InventoryShow:
        site, catalog = loaded.site, load_catalog()
        racks = [RackView(name=r.rack, hosts=r.hosts, accelerators=r.accelerators, power_w=r.draw.watts,
                          unknown_tdp_components=r.draw.unknown, budget_w=r.budget_w, ratio=round(r.ratio, 4))
                 for r in rack_power(site, catalog)]
        hosts = [HostView(name=h.name, rack=h.rack, address=h.address, cpu=h.cpu,
                          accelerators=[s.model_dump() for s in h.accelerators],
                          power_w=host_power(h, catalog).watts) for h in site.hosts]
        return cls(site=site.metadata.name, jurisdiction=site.jurisdiction.model_dump(), racks=racks, hosts=hosts)


class AttestationEntryView(_Out):
    """One entry of `sovkit attest log --json` (parsed, not verified)."""

    index: int
    digest: str
    predicate_type: str = Field(alias="predicateType")
    statement: dict[str, Any]

    @classmethod
    def of(cls, entry: LogEntry) -> AttestationEntryView:
        return cls(index=entry.index, digest=entry.digest, predicateType=entry.predicate_type,
                   statement=entry.statement)


class BundleCreated(_Out):
    """`sovkit bundle create --json`."""

    out: str
    manifest_sha256: str
    entries: int
    carried_blobs: int
    carried_bytes: int
    since: str | None
    parts: list[dict[str, Any]] | None
    target: dict[str, Any] | None = None

    @classmethod
    def of(cls, out: str, result: CreateResult) -> BundleCreated:
        m = result.bundle.manifest
        return cls(out=out, manifest_sha256=m.digest(), entries=len(m.entries),
                   carried_blobs=result.bundle.carried_files, carried_bytes=result.bundle.carried_bytes,
                   since=m.since,
                   parts=[p.model_dump() for p in result.volumes.index.parts] if result.volumes else None,
                   target=m.target.model_dump() if m.target is not None else None)


class BundleImported(_Out):
    """`sovkit bundle import --json`."""

    manifest_sha256: str
    committed: list[str]
    unchanged: list[str]
    hashed: int
    reused: int

    @classmethod
    def of(cls, report: ImportReport) -> BundleImported:
        return cls(manifest_sha256=report.manifest.digest(), committed=report.committed,
                   unchanged=report.unchanged, hashed=report.hashed, reused=report.reused)


class AuditWritten(_Out):
    """`sovkit audit --json`: where the pack is, who signed it, what it holds."""

    path: str
    site: str
    keyid: str
    files: list[dict[str, Any]]
    policy_allowed: bool
    attestations: int
    model_boms: list[str]

    @classmethod
    def of(cls, pack: AuditPack) -> AuditWritten:
        r = pack.report
        return cls(path=str(pack.path), site=r.overview.site, keyid=pack.keyid,
                   files=[e.model_dump() for e in pack.manifest.files], policy_allowed=r.policy.allowed,
                   attestations=len(r.attestations), model_boms=[b.path for b in r.model_boms])
