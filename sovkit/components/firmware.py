"""Firmware: one record per accelerator kind of a host, flashed from a vendor image, read back per device.

The worked example of docs/architecture.md ("Adding a component kind").
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sovkit import identifiers as ids
from sovkit.catalog import Catalog, load_catalog
from sovkit.components.base import (
    _M,
    ArtifactCheck,
    Change,
    ComponentKind,
    Finding,
    HostContext,
    Provenance,
    Row,
    SiteIndex,
    StoreFile,
    provenance,
)
from sovkit.inventory.loader import LoadedInventory
from sovkit.signing.artifacts import Claim
from sovkit.state.models import DeviceRecord, FirmwareRecord


class DesiredFirmware(_M):
    kind: str
    name: str
    version: str
    vendor: str
    image: StoreFile
    signature: str | None
    count: int
    profile: str


class InstalledFirmware(Row):
    kind: str
    version: str
    image_sha256: str
    devices: dict[str, str]
    provenance: Provenance


def version_key(v: str) -> tuple[tuple[int, str], ...]:
    parts = []
    for piece in v.replace("-", ".").split("."):
        parts.append((int(piece), "") if piece.isdigit() else (-1, piece))
    return tuple(parts)


def profile(kind: str, catalog: Catalog | None = None) -> dict[str, Any]:
    """The vendor tool's commands and JSON keys for an accelerator kind (from the catalog)."""
    catalog = catalog or load_catalog()
    p = catalog.profiles[catalog.accelerators[kind].profile]
    return {"query": p.query, "flash": p.flash, "reset": p.reset, "devices_key": p.devices_key,
            "id_key": p.id_key, "firmware_key": p.firmware_key}


def _devices(fw: dict[str, Any], stdout: str) -> list[tuple[str, str]] | None:
    """(device id, firmware) of this kind from the vendor tool's JSON; None if any value is not plain."""
    found = [d for d in json.loads(stdout)[fw["devices_key"]] if isinstance(d, dict) and d.get("kind") == fw["kind"]]
    pairs = [(str(d[fw["id_key"]]), str(d[fw["firmware_key"]])) for d in found]
    if all(ids.matches(ids.DEVICE_ID, i) and ids.matches(ids.VERSION, v) for i, v in pairs):
        return pairs
    return None


class Firmware(ComponentKind):
    name = "firmware"
    order = 10
    field = "firmware"
    var = "firmware"
    record = FirmwareRecord
    removable = False  # firmware is never "uninstalled": a device keeps what it was last flashed with

    def index(self, site: SiteIndex) -> Any:
        return {f.name: f for f in site.inv.site.firmware}

    def desired(self, ctx: HostContext) -> dict[str, Any]:
        firmware = ctx.site.of(self)
        catalog = ctx.site.catalog
        fw: dict[str, DesiredFirmware] = {}
        for slot in ctx.host.accelerators:
            if slot.firmware is None:
                continue
            f = firmware[slot.firmware]
            prev = fw.get(slot.kind)
            fw[slot.kind] = DesiredFirmware(
                kind=slot.kind, name=f.name, version=f.version, vendor=f.vendor,
                image=StoreFile(store_path=f.image.path, sha256=f.image.sha256, size=f.image.size,
                                name=posixpath.basename(f.image.path)),
                signature=f.signature, count=slot.count + (prev.count if prev else 0),
                profile=catalog.accelerators[slot.kind].profile,
            )
        return fw

    def artifacts(self, want: DesiredFirmware) -> dict[str, str]:
        return {want.image.store_path: want.image.sha256}

    def changes(self, host: str, name: str, want: DesiredFirmware, have: FirmwareRecord | None) -> Change | None:
        after = {"version": want.version, "image_sha256": want.image.sha256, "devices": want.count}
        if have is None:
            return Change(host=host, component=self.name, name=name, action="create", after=after,
                          reason=f"flash {want.version} on {want.count} device(s)")
        stale = sorted(d for d, dev in have.devices.items() if dev.firmware != want.version)
        if have.version == want.version and not stale and len(have.devices) == want.count:
            return None
        before = {"version": have.version, "image_sha256": have.image_sha256, "devices": len(have.devices)}
        if have.version == ids.UNTRUSTED:
            reason = f"the devices reported untrusted values (refused); flash {want.version}"
        elif have.version != want.version:
            direction = "DOWNGRADE" if version_key(want.version) < version_key(have.version) else "upgrade"
            reason = f"{direction} {have.version} → {want.version}"
        elif len(have.devices) != want.count:
            reason = f"{len(have.devices)} device(s) recorded, {want.count} declared"
        else:
            reason = f"device(s) {', '.join(stale)} report other firmware (drift)"
        return Change(host=host, component=self.name, name=name, action="update", before=before, after=after,
                      reason=reason)

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> FirmwareRecord:
        return FirmwareRecord(
            kind=name, version=result["version"], image_sha256=result["image_sha256"],
            devices={str(d): DeviceRecord(kind=name, firmware=str(v)) for d, v in result["devices"].items()},
        )

    def apply_vars(self, want: DesiredFirmware, store: Path, root: str, have: Any | None = None) -> dict[str, Any]:
        return {"kind": want.kind, "version": want.version, "count": want.count, "sha256": want.image.sha256,
                "image_src": str(store / want.image.store_path), **profile(want.kind)}

    def observe_vars(self, desired: Mapping[str, Any], recorded: Mapping[str, Any],
                     catalog: Catalog) -> list[dict[str, Any]]:
        kinds = sorted(set(desired) | set(recorded))
        return [{"kind": k, **profile(k, catalog)} for k in kinds if k in catalog.accelerators]

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, Any],
              recorded: Mapping[str, FirmwareRecord], findings: list[Finding]) -> dict[str, Any]:
        out: dict[str, FirmwareRecord] = {}
        for fw, stdout, rc in zip(spec, observed["firmware"], observed["firmware_rc"], strict=False):
            if rc != 0 or not stdout:
                continue
            try:
                devices = _devices(fw, stdout)
            except (ValueError, KeyError, TypeError):
                continue
            rec = recorded.get(fw["kind"])
            sha = rec.image_sha256 if rec else ""
            if devices is None:
                findings.append(Finding("firmware", fw["kind"], "the vendor tool reports a device id or firmware "
                                        "version that is not a plain identifier"))
                out[fw["kind"]] = FirmwareRecord(kind=fw["kind"], version=ids.UNTRUSTED, image_sha256=sha)
                continue
            if not devices:
                continue
            versions = {v for _, v in devices}
            out[fw["kind"]] = FirmwareRecord(
                kind=fw["kind"], version=versions.pop() if len(versions) == 1 else "mixed", image_sha256=sha,
                devices={i: DeviceRecord(kind=fw["kind"], firmware=v) for i, v in devices},
            )
        return out

    def preflight(self, want: DesiredFirmware) -> ArtifactCheck:
        return ArtifactCheck(label=f"firmware:{want.name}", files=self.artifacts(want), signature=want.signature,
                             section="vendors", signer=want.vendor,
                             claim=Claim("firmware", want.name, want.version))

    def subjects(self, recorded: Mapping[str, FirmwareRecord],
                 desired: Mapping[str, DesiredFirmware] | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for kind, fw in sorted(recorded.items()):
            want = desired.get(kind) if desired else None
            name = want.image.store_path if want and want.image.sha256 == fw.image_sha256 else \
                f"firmware/{kind}/{fw.version}"
            out[name] = fw.image_sha256
        return out

    def audit_index(self, inv: LoadedInventory) -> Any:
        return {f.image.sha256: f for f in inv.site.firmware}

    def audit_rows(self, recorded: Mapping[str, FirmwareRecord], index: Any) -> list[InstalledFirmware]:
        rows = []
        for kind, fw in sorted(recorded.items()):
            pinned = index.get(fw.image_sha256)
            devices = {d: r.firmware for d, r in sorted(fw.devices.items())}
            mismatch = sorted(d for d, v in devices.items() if v != fw.version)
            note = f"devices {', '.join(mismatch)} report another version" if mismatch else ""
            prov = (provenance(pinned.version == fw.version, f"inventory firmware {pinned.name}", pinned.vendor,
                               pinned.signature, note)
                    if pinned else provenance(False, "image digest not in the inventory", None, None, note))
            rows.append(InstalledFirmware(kind=kind, version=fw.version, image_sha256=fw.image_sha256,
                                          devices=devices, provenance=prov))
        return rows
