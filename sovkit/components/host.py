"""A host's desired state: each registered kind's desired records, derived from the inventory alone."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from sovkit.components import registry
from sovkit.components.base import HostContext, SiteIndex, host_prefix
from sovkit.components.driver import DesiredDriver
from sovkit.components.firmware import DesiredFirmware
from sovkit.components.model import DesiredModel
from sovkit.components.runtime import DesiredRuntime
from sovkit.components.serving import DesiredServing
from sovkit.inventory.loader import LoadedInventory
from sovkit.inventory.models import Host


class DesiredHost(BaseModel):
    """The built-in kinds have a field each; a kind registered later keeps its records in ``extra_kinds``
    (kind name -> name -> desired record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    root: str
    firmware: dict[str, DesiredFirmware]
    runtimes: dict[str, DesiredRuntime]
    models: dict[str, DesiredModel]
    serving: dict[str, DesiredServing]
    drivers: dict[str, DesiredDriver] = {}
    extra_kinds: dict[str, dict[str, Any]] = {}


def desired_host(inv: LoadedInventory, host: Host, index: SiteIndex | None = None) -> DesiredHost:
    ctx = HostContext(site=index or SiteIndex(inv), host=host, root=host_prefix(inv.host_root(host)))
    fields: dict[str, Any] = {}
    extra: dict[str, dict[str, Any]] = {}
    for kind in registry.kinds():
        records = kind.desired(ctx)
        if kind.field in DesiredHost.model_fields:
            fields[kind.field] = records
        else:
            extra[kind.name] = records
    return DesiredHost(name=host.name, root=ctx.root, extra_kinds=extra, **fields)


def desired_site(inv: LoadedInventory) -> dict[str, DesiredHost]:
    index = SiteIndex(inv)
    return {h.name: desired_host(inv, h, index) for h in inv.site.hosts}


def pinned_artifacts(hosts: dict[str, DesiredHost]) -> dict[str, str]:
    """Every artifact the desired state needs: store path -> pinned sha256 (bound into saved plans)."""
    out: dict[str, str] = {}
    for h in hosts.values():
        for kind in registry.kinds():
            for want in kind.desired_of(h).values():
                out.update(kind.artifacts(want))
    return dict(sorted(out.items()))
