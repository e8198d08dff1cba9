"""Desired state: what each host should run, derived from the inventory alone (pure, no I/O but templates).

Serving configs are rendered here from Jinja2 templates, so their digest is
part of the plan and the host only writes the bytes it is given.
"""

from __future__ import annotations

import hashlib
import posixpath
import sys
from functools import cache

import jinja2
from pydantic import BaseModel, ConfigDict

from sovkit.catalog import load_catalog
from sovkit.inventory.loader import LoadedInventory
from sovkit.inventory.models import Deployment, Host
from sovkit.resources import templates_dir


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreFile(_M):
    """An artifact: where it is in the store, its pinned digest and size, and its name on the host."""

    store_path: str
    sha256: str
    size: int
    name: str


class DesiredFirmware(_M):
    kind: str
    name: str
    version: str
    vendor: str
    image: StoreFile
    signature: str | None
    count: int
    profile: str


class DesiredRuntime(_M):
    name: str
    version: str
    package: str
    vendor: str | None
    artifacts: tuple[StoreFile, ...]
    signature: str | None
    prefix: str


class DesiredModel(_M):
    name: str
    version: str
    publisher: str
    files: tuple[StoreFile, ...]
    signature: str | None
    signature_format: str
    path: str


class DesiredServing(_M):
    deployment: str
    role: str
    model: str
    model_version: str
    runtime: str
    runtime_version: str
    port: int
    tensor_parallel: int
    config: str
    config_path: str
    config_sha256: str
    unit: str
    unit_path: str


class DesiredHost(_M):
    name: str
    root: str
    firmware: dict[str, DesiredFirmware]
    runtimes: dict[str, DesiredRuntime]
    models: dict[str, DesiredModel]
    serving: dict[str, DesiredServing]


def host_prefix(root: str | None) -> str:
    return (root or "").rstrip("/")


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "serving")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _model_files(paths: list[tuple[str, str, int]]) -> tuple[StoreFile, ...]:
    parents = [posixpath.dirname(p) for p, _, _ in paths]
    common = posixpath.commonpath(parents) if parents else ""
    return tuple(
        StoreFile(store_path=p, sha256=d, size=s, name=posixpath.relpath(p, common) if common else p)
        for p, d, s in paths
    )


class _SiteIndex:
    """Lookups shared by every host of a site, built once (a 10,000-host plan must stay linear)."""

    def __init__(self, inv: LoadedInventory) -> None:
        site = inv.site
        self.catalog = load_catalog()
        self.firmware = {f.name: f for f in site.firmware}
        self.runtimes = {r.name: r for r in site.runtimes}
        self.models = {m.name: m for m in site.models}
        self.deployments: dict[str, list[Deployment]] = {}
        for dep in site.deployments:
            for name in dict.fromkeys(dep.hosts):
                self.deployments.setdefault(name, []).append(dep)
        self.model_files = {m.name: _model_files([(f.path, f.sha256, f.size) for f in m.files]) for m in site.models}
        self.runtime_files = {r.name: tuple(StoreFile(store_path=a.path, sha256=a.sha256, size=a.size,
                                                      name=posixpath.basename(a.path)) for a in r.artifacts)
                              for r in site.runtimes}


def desired_host(inv: LoadedInventory, host: Host, index: _SiteIndex | None = None) -> DesiredHost:
    site = inv.site
    ix = index or _SiteIndex(inv)
    catalog = ix.catalog
    root = host_prefix(inv.host_root(host))
    firmware = ix.firmware
    fw: dict[str, DesiredFirmware] = {}
    for slot in host.accelerators:
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
    deployments = ix.deployments.get(host.name, [])
    runtimes: dict[str, DesiredRuntime] = {}
    models: dict[str, DesiredModel] = {}
    serving: dict[str, DesiredServing] = {}
    devices = [str(i) for i in range(sum(s.count for s in host.accelerators))]
    python = host.python_interpreter or (sys.executable if host.connection == "local" else "/usr/bin/python3")
    for dep in deployments:
        rt = ix.runtimes[dep.runtime]
        rt_prefix = f"{root}/opt/sovkit/runtimes/{rt.name}/{rt.version}"
        runtimes[rt.name] = DesiredRuntime(
            name=rt.name, version=rt.version, package=rt.package, vendor=rt.vendor,
            artifacts=ix.runtime_files[rt.name], signature=rt.signature, prefix=rt_prefix,
        )
        m = ix.models[dep.model]
        model_dir = f"{root}/opt/sovkit/models/{m.name}"
        models[m.name] = DesiredModel(
            name=m.name, version=m.version, publisher=m.publisher, files=ix.model_files[m.name],
            signature=m.signature, signature_format=m.signature_format, path=model_dir,
        )
        config_path = f"{root}/etc/sovkit/serving/{dep.name}.yaml"
        values = {
            "site": site.metadata.name, "deployment": dep.name, "role": dep.role, "model": m.name,
            "model_version": m.version, "model_path": f"{model_dir}/current", "runtime": rt.name,
            "runtime_version": rt.version, "runtime_prefix": rt_prefix, "tensor_parallel": dep.tensor_parallel,
            "devices": devices[: dep.tensor_parallel] if devices else [], "port": dep.port,
            "python": python, "runtime_module": rt.package.replace("-", "_"), "config_path": config_path,
        }
        config = _env().get_template("runtime.yaml.j2").render(**values)
        unit = _env().get_template("unit.service.j2").render(**values)
        serving[dep.name] = DesiredServing(
            deployment=dep.name, role=dep.role, model=m.name, model_version=m.version, runtime=rt.name,
            runtime_version=rt.version, port=dep.port, tensor_parallel=dep.tensor_parallel,
            config=config, config_path=config_path,
            config_sha256=hashlib.sha256((config + unit).encode()).hexdigest(),
            unit=unit, unit_path=f"{root}/etc/systemd/system/sovkit-{dep.name}.service",
        )
    return DesiredHost(name=host.name, root=root, firmware=fw, runtimes=runtimes, models=models, serving=serving)


def desired_site(inv: LoadedInventory) -> dict[str, DesiredHost]:
    index = _SiteIndex(inv)
    return {h.name: desired_host(inv, h, index) for h in inv.site.hosts}


def pinned_artifacts(hosts: dict[str, DesiredHost]) -> dict[str, str]:
    """Every artifact the desired state needs: store path -> pinned sha256 (bound into saved plans)."""
    out: dict[str, str] = {}
    for h in hosts.values():
        for f in h.firmware.values():
            out[f.image.store_path] = f.image.sha256
        for r in h.runtimes.values():
            out.update({a.store_path: a.sha256 for a in r.artifacts})
        for m in h.models.values():
            out.update({a.store_path: a.sha256 for a in m.files})
    return dict(sorted(out.items()))



