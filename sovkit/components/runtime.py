"""Runtime: an inference runtime package installed under a versioned prefix from pinned artifacts."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    moved,
    provenance,
    recorded_artifacts,
    removable,
)
from sovkit.components.driver import install_argv
from sovkit.inventory.loader import LoadedInventory
from sovkit.signing.artifacts import Claim
from sovkit.state.models import RuntimeRecord


class DesiredRuntime(_M):
    name: str
    version: str
    package: str
    vendor: str | None
    artifacts: tuple[StoreFile, ...]
    signature: str | None
    prefix: str
    format: str = "wheelhouse"
    root: str = ""


class InstalledRuntime(Row):
    name: str
    version: str
    package: str
    artifacts: dict[str, str]
    provenance: Provenance


def runtime_prefix(root: str, name: str, version: str) -> str:
    return f"{root}/opt/sovkit/runtimes/{name}/{version}"


def deb_probe(root: str, package: str) -> list[str]:
    """The argv printing a deb package's installed version (empty output when it is not installed)."""
    return ["dpkg-query", *([f"--root={root}"] if root else []), "--show", "--showformat=${Version}", package]


class Runtime(ComponentKind):
    name = "runtime"
    order = 20
    field = "runtimes"
    var = "runtimes"
    record = RuntimeRecord

    def index(self, site: SiteIndex) -> Any:
        rts = site.inv.site.runtimes
        files = {r.name: tuple(StoreFile(store_path=a.path, sha256=a.sha256, size=a.size,
                                         name=posixpath.basename(a.path)) for a in r.artifacts) for r in rts}
        return {r.name: r for r in rts}, files

    def desired(self, ctx: HostContext) -> dict[str, Any]:
        runtimes, files = ctx.site.of(self)
        out: dict[str, DesiredRuntime] = {}
        for dep in ctx.deployments:
            rt = runtimes[dep.runtime]
            out[rt.name] = DesiredRuntime(
                name=rt.name, version=rt.version, package=rt.package, vendor=rt.vendor, artifacts=files[rt.name],
                signature=rt.signature, prefix=runtime_prefix(ctx.root, rt.name, rt.version), format=rt.format,
                root=ctx.root,
            )
        return out

    def artifacts(self, want: DesiredRuntime) -> dict[str, str]:
        return {a.store_path: a.sha256 for a in want.artifacts}

    def changes(self, host: str, name: str, want: DesiredRuntime, have: RuntimeRecord | None) -> Change | None:
        after: dict[str, Any] = {"version": want.version, "artifacts": self.artifacts(want)}
        if have is None:
            return Change(host=host, component=self.name, name=name, action="create", after=after,
                          reason=f"install {want.package} {want.version}")
        # the prefix ends in the version: only a same-version prefix that differs is a move
        rt_moved = moved(have.prefix, want.prefix) if have.version == want.version else None
        if have.version == want.version and have.artifacts == after["artifacts"] and not rt_moved:
            return None
        why = (f"{have.version} → {want.version}" if have.version != want.version
               else "installed artifacts differ from the pinned ones" if have.artifacts != after["artifacts"]
               else str(rt_moved))
        if have.version == ids.UNTRUSTED:
            why = f"the host reported an untrusted version (refused); reinstall {want.version}"
        before: dict[str, Any] = {"version": have.version, "artifacts": have.artifacts}
        if rt_moved:
            before, after = {**before, "prefix": have.prefix}, {**after, "prefix": want.prefix}
        return Change(host=host, component=self.name, name=name, action="update", before=before, after=after,
                      reason=why)

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> RuntimeRecord:
        return RuntimeRecord(version=result["version"], package=result["package"], artifacts=result["artifacts"],
                             prefix=result["prefix"], format=result.get("format", "wheelhouse"))

    def apply_vars(self, want: DesiredRuntime, store: Path, root: str, have: Any | None = None) -> dict[str, Any]:
        staging = f"{root}/var/lib/sovkit/staging/runtime/{want.name}-{want.version}"
        deb = want.format == "deb"
        install = install_argv("deb", root, [f"{staging}/{a.name}" for a in want.artifacts])[0] if deb else []
        return {"name": want.name, "version": want.version, "package": want.package, "prefix": want.prefix,
                "format": want.format, "staging": staging, "install": install,
                "probe": deb_probe(root, want.package) if deb else [],
                "dpkg_admin": f"{root}/var/lib/dpkg" if deb and root else "",
                "artifacts": [{"src": str(store / a.store_path), "name": a.name, "sha256": a.sha256,
                               "store_path": a.store_path} for a in want.artifacts]}

    def removal(self, host: str, name: str, have: RuntimeRecord | None, root: str) -> list[str] | None:
        if have is None:
            return None
        prefix = have.prefix or runtime_prefix(root, name, have.version)
        removable(host, posixpath.dirname(prefix), f"/opt/sovkit/runtimes/{name}")
        return [prefix]

    def observe_vars(self, desired: Mapping[str, DesiredRuntime], recorded: Mapping[str, RuntimeRecord],
                     catalog: Catalog) -> list[dict[str, Any]]:
        runtimes: dict[str, dict[str, Any]] = {}
        for r in desired.values():
            runtimes[r.name] = {"name": r.name, "package": r.package, "prefix": r.prefix, "format": r.format}
            if r.format == "deb":
                runtimes[r.name]["probe"] = deb_probe(r.root, r.package)
        for name, rec in recorded.items():
            if name not in runtimes and rec.format == "deb":
                continue  # a deb runtime no longer desired: its host root is not known here, so it is not read
            runtimes.setdefault(name, {"name": name, "package": rec.package, "prefix": rec.prefix,
                                       "format": rec.format})
        return list(runtimes.values())

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, DesiredRuntime],
              recorded: Mapping[str, RuntimeRecord], findings: list[Finding]) -> dict[str, Any]:
        out: dict[str, RuntimeRecord] = {}
        for rt, stdout, rc in zip(spec, observed["runtimes"], observed["runtimes_rc"], strict=False):
            version = stdout.strip() if rc == 0 else ""
            if not version:
                continue
            if not ids.matches(ids.VERSION, version):
                findings.append(Finding("runtime", rt["name"], f"installed version {ids.describe(version)} is not "
                                        "a plain version"))
                version = ids.UNTRUSTED
            rrec = recorded.get(rt["name"])
            want = desired.get(rt["name"])
            artifacts = rrec.artifacts if rrec else (self.artifacts(want) if want else {})
            try:
                out[rt["name"]] = RuntimeRecord(version=version, package=rt["package"], artifacts=artifacts,
                                                prefix=rt["prefix"], format=rt.get("format", "wheelhouse"))
            except ValidationError as exc:
                findings.append(Finding("runtime", rt["name"], f"not recorded: {exc.errors()[0]['msg']}"))
        return out

    def preflight(self, want: DesiredRuntime) -> ArtifactCheck:
        return ArtifactCheck(label=f"runtime:{want.name}@{want.version}", files=self.artifacts(want),
                             signature=want.signature, section="vendors", signer=want.vendor,
                             claim=Claim("runtime", want.name, want.version))

    def subjects(self, recorded: Mapping[str, RuntimeRecord], desired: Mapping[str, Any] | None) -> dict[str, str]:
        return recorded_artifacts(recorded)

    def audit_index(self, inv: LoadedInventory) -> Any:
        return {(r.name, r.version): r for r in inv.site.runtimes}

    def audit_rows(self, recorded: Mapping[str, RuntimeRecord], index: Any) -> list[InstalledRuntime]:
        rows = []
        for name, rt in sorted(recorded.items()):
            inv = index.get((name, rt.version))
            if inv is None:
                prov = provenance(False, "version not in the inventory", None, None)
            else:
                want = {a.path: a.sha256 for a in inv.artifacts}
                ok = all(want.get(p) == d for p, d in rt.artifacts.items()) and bool(rt.artifacts)
                prov = provenance(ok, f"inventory runtime {name} {rt.version}", inv.vendor, inv.signature,
                                  "" if ok else "recorded artifact digests differ from the pinned ones")
            rows.append(InstalledRuntime(name=name, version=rt.version, package=rt.package,
                                         artifacts=dict(rt.artifacts), provenance=prov))
        return rows
