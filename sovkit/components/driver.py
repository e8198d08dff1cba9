"""Driver: the kernel driver an accelerator needs, one record per kernel module of a host.

Installed from pinned packages in the artifact store (deb, rpm or the vendor's runfile), then the module is
unloaded and loaded again and the version it reports (``/sys/module/MODULE/version``) must be the pinned one:
a package that installs but loads another version fails the host, and the state keeps the old record. It
comes before firmware (firmware tools need the driver loaded).

How each format is installed is data (``INSTALLERS``), with where the command comes from; what is not
confirmed is marked [R].
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from sovkit import identifiers as ids
from sovkit.catalog import Catalog
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
    recorded_artifacts,
)
from sovkit.components.firmware import version_key
from sovkit.inventory.loader import LoadedInventory
from sovkit.signing.artifacts import Claim
from sovkit.state.models import DriverRecord

#: per package format: the install argv ("{root}" is the host's root, present only on a prefixed host;
#: "{files}" expands to the staged packages) and where it comes from
INSTALLERS: dict[str, dict[str, Any]] = {
    "deb": {"argv": ["dpkg", "--root={root}", "-i", "{files}"], "argv_no_root": ["dpkg", "-i", "{files}"],
            "source": "V dpkg(1): -i installs, --root=DIR installs below DIR with its database in DIR/var/lib/dpkg"},
    "rpm": {"argv": ["rpm", "-U", "--replacepkgs", "--oldpackage", "--root", "{root}", "{files}"],
            "argv_no_root": ["rpm", "-U", "--replacepkgs", "--oldpackage", "{files}"],
            "source": "R rpm(8) options; not run by sovkit's tests (no rpm on the test machine)"},
    "runfile": {"argv": ["sh", "{files}", "--silent"], "argv_no_root": ["sh", "{files}", "--silent"],
                "env_root": "DESTDIR",
                "source": "R Rebellions ships rebellions-<arch>-<ver>.run (RD rbln_driver_installation_guide, V); "
                          "its unattended flag (--silent) and DESTDIR for a prefixed (simulated) host are not "
                          "confirmed"},
}

#: services holding a vendor's module, stopped before it is unloaded and restarted after it is loaded again (only
#: those that were running)
SERVICES: dict[str, dict[str, Any]] = {
    "rebellions": {"units": ["rbln-smd.service"],
                   "source": "V RD rbln_flash (v0.12.0): stop rbln-smd.service before `modprobe -r rebellions`"},
}


class DesiredDriver(_M):
    name: str
    module: str
    version: str
    vendor: str
    format: Literal["deb", "rpm", "runfile"]
    artifacts: tuple[StoreFile, ...]
    signature: str | None


class InstalledDriver(Row):
    module: str
    version: str
    driver: str | None
    format: str | None
    artifacts: dict[str, str]
    provenance: Provenance


def install_argv(fmt: str, root: str, files: list[str]) -> tuple[list[str], dict[str, str]]:
    """The install command of a package format for staged ``files``, and its environment."""
    spec = INSTALLERS[fmt]
    argv: list[str] = []
    for part in spec["argv"] if root else spec["argv_no_root"]:
        if part == "{files}":
            argv += files
        else:
            argv.append(part.replace("{root}", root))
    env = {spec["env_root"]: root} if root and "env_root" in spec else {}
    return argv, env


class Driver(ComponentKind):
    name = "driver"
    order = 5
    field = "drivers"
    var = "drivers"
    record = DriverRecord
    removable = False  # a driver left out of the inventory is not uninstalled: the cards would stop working

    def index(self, site: SiteIndex) -> Any:
        return {d.name: d for d in site.inv.site.drivers}

    def desired(self, ctx: HostContext) -> dict[str, Any]:
        drivers = ctx.site.of(self)
        out: dict[str, DesiredDriver] = {}
        for slot in ctx.host.accelerators:
            if slot.driver is None:
                continue
            d = drivers[slot.driver]
            out[d.module] = DesiredDriver(
                name=d.name, module=d.module, version=d.version, vendor=d.vendor, format=d.format,
                artifacts=tuple(StoreFile(store_path=a.path, sha256=a.sha256, size=a.size,
                                          name=posixpath.basename(a.path)) for a in d.artifacts),
                signature=d.signature,
            )
        return out

    def artifacts(self, want: DesiredDriver) -> dict[str, str]:
        return {a.store_path: a.sha256 for a in want.artifacts}

    def changes(self, host: str, name: str, want: DesiredDriver, have: DriverRecord | None) -> Change | None:
        after: dict[str, Any] = {"version": want.version, "driver": want.name, "artifacts": self.artifacts(want)}
        if have is None:
            return Change(host=host, component=self.name, name=name, action="create", after=after,
                          reason=f"install {want.name} ({want.format}), load module {name} {want.version}")
        if have.version == want.version and have.artifacts == after["artifacts"]:
            return None
        if have.version == ids.UNTRUSTED:
            reason = f"the host reported an untrusted module version (refused); reinstall {want.version}"
        elif have.version != want.version:
            direction = "DOWNGRADE" if version_key(want.version) < version_key(have.version) else "upgrade"
            reason = f"{direction} {have.version} → {want.version} (module {name} reloaded)"
        else:
            reason = "installed package digests differ from the pinned ones"
        before = {"version": have.version, "driver": have.driver, "artifacts": have.artifacts}
        return Change(host=host, component=self.name, name=name, action="update", before=before, after=after,
                      reason=reason)

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> DriverRecord:
        return DriverRecord(module=name, version=result["version"], driver=result["driver"],
                            format=result["format"], artifacts=result["artifacts"])

    def apply_vars(self, want: DesiredDriver, store: Path, root: str, have: Any | None = None) -> dict[str, Any]:
        staging = f"{root}/var/lib/sovkit/staging/driver/{want.name}-{want.version}"
        argv, env = install_argv(want.format, root, [f"{staging}/{a.name}" for a in want.artifacts])
        services = SERVICES.get(want.vendor, {}).get("units", [])
        return {"name": want.name, "module": want.module, "version": want.version, "format": want.format,
                "staging": staging, "install": argv, "install_env": env, "services": services,
                # a prefixed (simulated) host starts with no package database; a real host has one
                "dpkg_admin": f"{root}/var/lib/dpkg" if root and want.format == "deb" else "",
                "sysfs": f"{root}/sys/module/{want.module}",
                "artifacts": [{"src": str(store / a.store_path), "name": a.name, "sha256": a.sha256,
                               "store_path": a.store_path} for a in want.artifacts]}

    def observe_vars(self, desired: Mapping[str, DesiredDriver], recorded: Mapping[str, DriverRecord],
                     catalog: Catalog) -> list[dict[str, Any]]:
        return [{"module": m} for m in sorted(set(desired) | set(recorded))]

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, DesiredDriver],
              recorded: Mapping[str, DriverRecord], findings: list[Finding]) -> dict[str, Any]:
        out: dict[str, DriverRecord] = {}
        for item, content in zip(spec, observed.get("drivers", []), strict=False):
            module = item["module"]
            if not isinstance(content, str):
                continue  # not loaded: nothing recorded, so the diff plans the install again
            try:
                version = base64.b64decode(content, validate=True).decode("utf-8").strip()
            except (binascii.Error, UnicodeDecodeError):
                version = ""
            if not ids.matches(ids.VERSION, version):
                findings.append(Finding("driver", module, f"/sys/module/{module}/version reports "
                                        f"{ids.describe(version)}, not a plain version"))
                version = ids.UNTRUSTED
            rec, want = recorded.get(module), desired.get(module)
            source = rec if rec and rec.version == version else None
            try:
                out[module] = DriverRecord(
                    module=module, version=version,
                    driver=source.driver if source else (want.name if want and want.version == version else None),
                    format=source.format if source else (want.format if want and want.version == version else None),
                    artifacts=source.artifacts if source else (
                        self.artifacts(want) if want and want.version == version else {}))
            except ValidationError as exc:
                findings.append(Finding("driver", module, f"not recorded: {exc.errors()[0]['msg']}"))
        return out

    def preflight(self, want: DesiredDriver) -> ArtifactCheck:
        return ArtifactCheck(label=f"driver:{want.name}@{want.version}", files=self.artifacts(want),
                             signature=want.signature, section="vendors", signer=want.vendor,
                             claim=Claim("driver", want.name, want.version))

    def subjects(self, recorded: Mapping[str, DriverRecord], desired: Mapping[str, Any] | None) -> dict[str, str]:
        return recorded_artifacts(recorded)

    def audit_index(self, inv: LoadedInventory) -> Any:
        return {(d.module, d.version): d for d in inv.site.drivers}

    def audit_rows(self, recorded: Mapping[str, DriverRecord], index: Any) -> list[InstalledDriver]:
        rows = []
        for module, rec in sorted(recorded.items()):
            inv = index.get((module, rec.version))
            if inv is None:
                prov = provenance(False, "module version not in the inventory", None, None)
            else:
                want = {a.path: a.sha256 for a in inv.artifacts}
                ok = bool(rec.artifacts) and rec.artifacts == want
                prov = provenance(ok, f"inventory driver {inv.name} {rec.version}", inv.vendor, inv.signature,
                                  "" if ok else "recorded package digests differ from the pinned ones")
            rows.append(InstalledDriver(module=module, version=rec.version, driver=rec.driver, format=rec.format,
                                        artifacts=dict(rec.artifacts), provenance=prov))
        return rows
