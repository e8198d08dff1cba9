"""Model: a signed model's files under ``<dir>/<version>``, activated by the ``current`` link."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
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
    parent,
    provenance,
    removable,
)
from sovkit.inventory.loader import LoadedInventory
from sovkit.signing.artifacts import Claim
from sovkit.state.models import ModelRecord


class DesiredModel(_M):
    name: str
    version: str
    publisher: str
    files: tuple[StoreFile, ...]
    signature: str | None
    signature_format: str
    path: str


class InstalledModel(Row):
    name: str
    version: str
    files: dict[str, str]
    signature_verified: bool
    previous: str | None
    provenance: Provenance


def model_dir(root: str, name: str) -> str:
    return f"{root}/opt/sovkit/models/{name}"


def model_files(paths: list[tuple[str, str, int]]) -> tuple[StoreFile, ...]:
    """Store files named as the host keeps them: relative to their common directory."""
    parents = [posixpath.dirname(p) for p, _, _ in paths]
    common = posixpath.commonpath(parents) if parents else ""
    return tuple(
        StoreFile(store_path=p, sha256=d, size=s, name=posixpath.relpath(p, common) if common else p)
        for p, d, s in paths
    )


def _file_names(files: Iterable[Any]) -> dict[str, str]:
    """Pinned model files keyed as the host records them: relative to the files' common directory."""
    paths = [(f.path, f.sha256) for f in files]
    common = posixpath.commonpath([posixpath.dirname(p) for p, _ in paths]) if paths else ""
    return {(posixpath.relpath(p, common) if common else p): d for p, d in paths}


class Model(ComponentKind):
    name = "model"
    order = 30
    field = "models"
    var = "models"
    record = ModelRecord

    def index(self, site: SiteIndex) -> Any:
        ms = site.inv.site.models
        return {m.name: m for m in ms}, {m.name: model_files([(f.path, f.sha256, f.size) for f in m.files])
                                         for m in ms}

    def desired(self, ctx: HostContext) -> dict[str, Any]:
        models, files = ctx.site.of(self)
        out: dict[str, DesiredModel] = {}
        wanted = [models[dep.model] for dep in ctx.deployments]
        wanted += [models[dep.speculative.draft_model] for dep in ctx.deployments if dep.speculative]
        for m in wanted:  # a speculative deployment's draft model is installed (and verified) like its model
            out[m.name] = DesiredModel(
                name=m.name, version=m.version, publisher=m.publisher, files=files[m.name],
                signature=m.signature, signature_format=m.signature_format, path=model_dir(ctx.root, m.name),
            )
        return out

    def artifacts(self, want: DesiredModel) -> dict[str, str]:
        return {f.store_path: f.sha256 for f in want.files}

    def changes(self, host: str, name: str, want: DesiredModel, have: ModelRecord | None) -> Change | None:
        files = {f.name: f.sha256 for f in want.files}
        after = {"version": want.version, "files": files}

        def update(reason: str, before: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Change:
            assert have is not None
            return Change(host=host, component=self.name, name=name, action="update",
                          before=before or {"version": have.version, "files": have.files},
                          after={**after, **(extra or {})}, reason=reason)

        if have is None:
            return Change(host=host, component=self.name, name=name, action="create", after=after,
                          reason=f"install {name} {want.version} ({len(files)} files) and activate")
        if have.version == ids.UNTRUSTED:
            return update(f"the host reported an untrusted active version (refused); "
                          f"reinstall {want.version} and re-point current")
        if have.version != want.version:
            return update(f"{have.version} → {want.version}; previous kept for rollback")
        if have.path and moved(posixpath.dirname(have.path), want.path):
            return update(str(moved(posixpath.dirname(have.path), want.path)),
                          {"version": have.version, "path": posixpath.dirname(have.path)}, {"path": want.path})
        if have.files != files:
            bad = sorted(f for f in set(files) | set(have.files) if files.get(f) != have.files.get(f))
            return update(f"file digests differ on host (drift): {', '.join(bad)}")
        return None

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> ModelRecord:
        version, path = result["version"], result["path"]
        if posixpath.basename(str(path)) != version:
            raise ValueError(f"model path {ids.describe(path)} does not end in its version {ids.describe(version)}")
        # `previous` is the basename of a link target the host reports: only a plain version is kept for rollback
        previous = result.get("previous") or None
        return ModelRecord(
            version=version, files=result["files"], path=path,
            previous=previous if ids.matches(ids.VERSION, previous) else None,
            signature_verified=signatures_ok.get(f"model:{name}@{result['version']}", False),
        )

    def apply_vars(self, want: DesiredModel, store: Path, root: str, have: Any | None = None) -> dict[str, Any]:
        return {"name": want.name, "version": want.version, "dir": want.path,
                "signature_src": str(store / want.signature) if want.signature else "",
                "files": [{"src": str(store / f.store_path), "name": f.name, "sha256": f.sha256} for f in want.files]}

    def removal(self, host: str, name: str, have: ModelRecord | None, root: str) -> list[str] | None:
        if have is None:
            return None
        base = posixpath.dirname(have.path) if have.path else model_dir(root, name)
        return [removable(host, base, f"/opt/sovkit/models/{name}")]

    def observe_vars(self, desired: Mapping[str, DesiredModel], recorded: Mapping[str, ModelRecord],
                     catalog: Catalog) -> list[dict[str, Any]]:
        models = {m.name: {"name": m.name, "dir": m.path, "files": [f.name for f in m.files]}
                  for m in desired.values()}
        for name, mrec in recorded.items():
            models.setdefault(name, {"name": name, "dir": parent(mrec.path), "files": sorted(mrec.files)})
        return list(models.values())

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, Any],
              recorded: Mapping[str, ModelRecord], findings: list[Finding]) -> dict[str, Any]:
        out: dict[str, ModelRecord] = {}
        file_digests = iter(observed["model_files"])
        for m, current in zip(spec, observed["models_current"], strict=False):
            digests = {name: next(file_digests, None) for name in m["files"]}
            if not current:
                continue
            mrec = recorded.get(m["name"])
            version = posixpath.basename(str(current))
            files: dict[str, str] = {k: v if isinstance(v, str) and ids.matches(ids.SHA256, v) else "missing"
                                     for k, v in digests.items()}
            path = str(current)
            if not (ids.matches(ids.VERSION, version) and path == f"{m['dir']}/{version}" and ids.safe_path(path)):
                findings.append(Finding("model", m["name"], f"`current` points at {ids.describe(current)}, not at "
                                        f"{m['dir']}/<version>"))
                # the refused target is not stored; digests read through it are not trusted either
                version, path, files = ids.UNTRUSTED, f"{m['dir']}/current", dict.fromkeys(m["files"], "missing")
            try:
                out[m["name"]] = ModelRecord(
                    version=version, files=files, path=path, previous=mrec.previous if mrec else None,
                    signature_verified=mrec.signature_verified if mrec else False,
                )
            except ValidationError as exc:
                findings.append(Finding("model", m["name"], f"not recorded: {exc.errors()[0]['msg']}"))
        return out

    def preflight(self, want: DesiredModel) -> ArtifactCheck:
        return ArtifactCheck(label=f"model:{want.name}@{want.version}", files=self.artifacts(want),
                             signature=want.signature, section="publishers", signer=want.publisher,
                             claim=Claim("model", want.name, want.version), fmt=want.signature_format)

    def subjects(self, recorded: Mapping[str, ModelRecord],
                 desired: Mapping[str, DesiredModel] | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for mname, m in sorted(recorded.items()):
            want_m = desired.get(mname) if desired else None
            by_name = {f.name: f for f in want_m.files} if want_m and want_m.version == m.version else {}
            for rel, digest in sorted(m.files.items()):
                f = by_name.get(rel)
                out[f.store_path if f and f.sha256 == digest else f"model/{mname}/{m.version}/{rel}"] = digest
        return out

    def audit_index(self, inv: LoadedInventory) -> Any:
        return {(m.name, m.version): m for m in inv.site.models}

    def audit_rows(self, recorded: Mapping[str, ModelRecord], index: Any) -> list[InstalledModel]:
        rows = []
        for name, m in sorted(recorded.items()):
            inv = index.get((name, m.version))
            if inv is None:
                prov = provenance(False, "version not in the inventory", None, None)
            else:
                ok = _file_names(inv.files) == dict(m.files)
                prov = provenance(ok, f"inventory model {name} {m.version}", inv.publisher, inv.signature,
                                  "" if ok else "recorded file digests differ from the pinned ones")
            rows.append(InstalledModel(name=name, version=m.version, files=dict(m.files),
                                       signature_verified=m.signature_verified, previous=m.previous,
                                       provenance=prov))
        return rows
