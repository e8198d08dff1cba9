"""Firmware: one record per accelerator kind of a host, flashed from a vendor image, read back per device.

The worked example of docs/architecture.md ("Adding a component kind").
"""

from __future__ import annotations

import importlib.util
import json
import posixpath
from collections.abc import Mapping
from functools import cache
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
    host_prefix,
    provenance,
)
from sovkit.inventory.loader import LoadedInventory
from sovkit.resources import templates_dir
from sovkit.signing.artifacts import Claim
from sovkit.state.models import DeviceRecord, FirmwareRecord


class DesiredFirmware(_M):
    kind: str
    name: str
    version: str
    vendor: str
    image: StoreFile
    signature: str | None
    count: int  # devices the vendor tool must list: cards x the kind's devices_per_card
    profile: str
    power_cap_w: int | None = None


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


STAGING = "var/lib/sovkit/staging/firmware"


@cache
def device_lister() -> Any:
    """templates/ansible/helpers/npu_devices.py as a module: the parsers and checks the hosts run, shared."""
    path = templates_dir() / "ansible" / "helpers" / "npu_devices.py"
    spec = importlib.util.spec_from_file_location("sovkit_npu_devices", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def query_spec(kind: str, catalog: Catalog | None = None) -> dict[str, Any]:
    """What npu_devices.py needs to list this kind's devices: the vendor's query argv, its format, chip names."""
    catalog = catalog or load_catalog()
    pid = catalog.accelerators[kind].profile
    p = catalog.profiles[pid]
    return {"format": p.query.format, "commands": [c.argv for c in p.query.commands],
            "chips": catalog.chip_kinds(pid)}


def procedure(kind: str, image: str, root: str, catalog: Catalog | None = None) -> dict[str, Any]:
    """The vendor's firmware-update steps for ``kind``, ``{image}`` already replaced by the staged path.

    Device placeholders ({bdf}, {index}) are replaced on the host by the role with values the device lister
    checked; BMC placeholders with values from the controller's environment. ``reboot`` says how Ansible's
    reboot module reboots this host: the simulator's commands under a ``root:`` prefix (such a host cannot
    reboot the machine), the module's own defaults (empty strings) on a real host.
    """
    catalog = catalog or load_catalog()
    p = catalog.profiles[catalog.accelerators[kind].profile]
    steps = [{"phase": where.split(".")[1].split("[")[0], "kind": step.kind, "per": step.per,
              "argv": [a.replace("{image}", image) for a in step.argv], "source": step.source}
             for where, step in p.firmware_update.steps()]
    prefix = host_prefix(root)
    return {
        "pre_steps": [s for s in steps if s["phase"] == "pre"],
        "update_steps": [s for s in steps if s["phase"] == "update"],
        "post_steps": [s for s in steps if s["phase"] == "post"],
        "reboot": {"command": f"{prefix}/bin/sovkit-sim-reboot" if prefix else "",
                   "boot_time": f"cat {prefix}/var/lib/npu-sim/boot_id" if prefix else ""},
        "module": p.kernel_module.name,
    }


def parse_devices(stdout: str, spec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """What a host's npu_devices.py printed, checked again here (the host is not trusted to have run it):
    (devices, untrusted reasons). Raises ValueError when it is not the lister's output."""
    doc = json.loads(stdout)
    if not isinstance(doc, dict) or "error" in doc:
        raise ValueError("the device lister failed")
    devices, untrusted = device_lister().check(doc.get("devices"), spec["chips"])
    reported = doc.get("untrusted") or []
    if not isinstance(reported, list):
        reported = ["the untrusted list is not a list"]
    return devices, [*untrusted, *(str(r)[:200] for r in reported)]


def power_and_diagnostic(kind: str, cap: int | None, catalog: Catalog | None = None) -> dict[str, Any]:
    """The role's power-cap argv (``{watts}`` replaced here, ``{index}`` on the host; None without a cap) and
    the vendor's post-install diagnostic argv."""
    catalog = catalog or load_catalog()
    p = catalog.profiles[catalog.accelerators[kind].profile]
    argv = ([a.replace("{watts}", str(cap)) for a in p.power_cap.argv]
            if cap is not None and p.power_cap is not None else None)
    return {"power_cap": {"watts": cap, "argv": argv} if argv else None, "diagnostic": list(p.diagnostic.argv)}


def _observed_limit(devices: list[dict[str, Any]], kind: str, want: Any, rec: FirmwareRecord | None) -> int | None:
    """The power limit the devices report, recorded only where sovkit manages a cap (desired or recorded): the
    one value all report, else the first that differs from the wanted cap (so refresh shows drift)."""
    cap = getattr(want, "power_cap_w", None)
    if cap is None and (rec is None or rec.power_limit_w is None):
        return None
    limits = [d.get("power_limit_w") for d in devices if d["kind"] == kind]
    if not limits or any(w is None for w in limits):
        return None
    rounded = [max(1, round(float(w))) for w in limits if w is not None]
    differing = [w for w in rounded if w != cap]
    return differing[0] if differing else rounded[0]


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
            cap = slot.power_cap_w if slot.power_cap_w is not None else (prev.power_cap_w if prev else None)
            fw[slot.kind] = DesiredFirmware(
                kind=slot.kind, name=f.name, version=f.version, vendor=f.vendor,
                image=StoreFile(store_path=f.image.path, sha256=f.image.sha256, size=f.image.size,
                                name=posixpath.basename(f.image.path)),
                signature=f.signature,
                count=slot.count * catalog.accelerators[slot.kind].devices_per_card + (prev.count if prev else 0),
                profile=catalog.accelerators[slot.kind].profile, power_cap_w=cap,
            )
        return fw

    def artifacts(self, want: DesiredFirmware) -> dict[str, str]:
        return {want.image.store_path: want.image.sha256}

    def changes(self, host: str, name: str, want: DesiredFirmware, have: FirmwareRecord | None) -> Change | None:
        after: dict[str, Any] = {"version": want.version, "image_sha256": want.image.sha256, "devices": want.count}
        if want.power_cap_w is not None:
            after["power_limit_w"] = want.power_cap_w
        if have is None:
            return Change(host=host, component=self.name, name=name, action="create", after=after,
                          reason=f"flash {want.version} on {want.count} device(s)")
        stale = sorted(d for d, dev in have.devices.items() if dev.firmware != want.version)
        cap_differs = want.power_cap_w is not None and have.power_limit_w != want.power_cap_w
        if have.version == want.version and not stale and len(have.devices) == want.count and not cap_differs:
            return None
        before: dict[str, Any] = {"version": have.version, "image_sha256": have.image_sha256,
                                  "devices": len(have.devices)}
        if have.power_limit_w is not None:
            before["power_limit_w"] = have.power_limit_w
        if have.version == ids.UNTRUSTED:
            reason = f"the devices reported untrusted values (refused); flash {want.version}"
        elif have.version != want.version:
            direction = "DOWNGRADE" if version_key(want.version) < version_key(have.version) else "upgrade"
            reason = f"{direction} {have.version} → {want.version}"
        elif len(have.devices) != want.count:
            reason = f"{len(have.devices)} device(s) recorded, {want.count} declared"
        elif stale:
            reason = f"device(s) {', '.join(stale)} report other firmware (drift)"
        else:
            limit = f"{have.power_limit_w} W" if have.power_limit_w is not None else "no recorded limit"
            reason = f"power limit {limit} → {want.power_cap_w} W"
        return Change(host=host, component=self.name, name=name, action="update", before=before, after=after,
                      reason=reason)

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> FirmwareRecord:
        return FirmwareRecord(
            kind=name, version=result["version"], image_sha256=result["image_sha256"],
            devices={str(d): DeviceRecord(kind=name, firmware=str(v)) for d, v in result["devices"].items()},
            power_limit_w=int(result["power_limit_w"]) if result.get("power_limit_w") not in (None, "") else None,
        )

    def apply_vars(self, want: DesiredFirmware, store: Path, root: str, have: Any | None = None) -> dict[str, Any]:
        staged = f"{host_prefix(root)}/{STAGING}/{want.image.sha256}.img"
        return {"kind": want.kind, "version": want.version, "count": want.count, "sha256": want.image.sha256,
                "image_src": str(store / want.image.store_path), "staged": staged,
                "query": json.dumps(query_spec(want.kind)), **procedure(want.kind, staged, root),
                **power_and_diagnostic(want.kind, want.power_cap_w)}

    def observe_vars(self, desired: Mapping[str, Any], recorded: Mapping[str, Any],
                     catalog: Catalog) -> list[dict[str, Any]]:
        kinds = sorted(set(desired) | set(recorded))
        return [{"kind": k, "query": json.dumps(query_spec(k, catalog))} for k in kinds if k in catalog.accelerators]

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, Any],
              recorded: Mapping[str, FirmwareRecord], findings: list[Finding]) -> dict[str, Any]:
        out: dict[str, FirmwareRecord] = {}
        for fw, stdout, rc in zip(spec, observed["firmware"], observed["firmware_rc"], strict=False):
            if rc != 0 or not stdout:
                continue
            try:
                devices, untrusted = parse_devices(stdout, json.loads(fw["query"]))
            except (ValueError, KeyError, TypeError):
                continue
            rec = recorded.get(fw["kind"])
            sha = rec.image_sha256 if rec else ""
            if untrusted:
                findings.append(Finding("firmware", fw["kind"], "the vendor tool reports a value that is not plain: "
                                        + "; ".join(untrusted)[:300]))
                out[fw["kind"]] = FirmwareRecord(kind=fw["kind"], version=ids.UNTRUSTED, image_sha256=sha)
                continue
            mine = [(d["bdf"], d["firmware"]) for d in devices if d["kind"] == fw["kind"]]
            if not mine:
                continue
            versions = {v for _, v in mine}
            out[fw["kind"]] = FirmwareRecord(
                kind=fw["kind"], version=versions.pop() if len(versions) == 1 else "mixed", image_sha256=sha,
                devices={b: DeviceRecord(kind=fw["kind"], firmware=v) for b, v in mine},
                power_limit_w=_observed_limit(devices, fw["kind"], desired.get(fw["kind"]), rec),
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
