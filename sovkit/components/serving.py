"""Serving: one deployment's runtime config and systemd unit, rendered on the controller (digest in the plan)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from sovkit.catalog import Catalog
from sovkit.components.base import _M, Change, ComponentKind, Finding, HostContext, Row, SiteIndex
from sovkit.components.model import model_dir
from sovkit.components.runtime import runtime_prefix
from sovkit.resources import templates_dir
from sovkit.state.models import ServingRecord


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


class InstalledServing(ServingRecord, Row):
    """The state's own serving record (one type: a field added there is reported, never refused) plus its name."""

    name: str


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "serving")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _paths(root: str, deployment: str) -> tuple[str, str]:
    return f"{root}/etc/sovkit/serving/{deployment}.yaml", f"{root}/etc/systemd/system/sovkit-{deployment}.service"


class Serving(ComponentKind):
    name = "serving"
    order = 40
    field = "serving"
    var = "serving"
    record = ServingRecord

    def index(self, site: SiteIndex) -> Any:
        return {r.name: r for r in site.inv.site.runtimes}, {m.name: m for m in site.inv.site.models}

    def desired(self, ctx: HostContext) -> dict[str, Any]:
        site = ctx.site.inv.site
        runtimes, models = ctx.site.of(self)
        devices = [str(i) for i in range(sum(s.count for s in ctx.host.accelerators))]
        out: dict[str, DesiredServing] = {}
        for dep in ctx.deployments:
            rt, m = runtimes[dep.runtime], models[dep.model]
            config_path, unit_path = _paths(ctx.root, dep.name)
            values = {
                "site": site.metadata.name, "deployment": dep.name, "role": dep.role, "model": m.name,
                "model_version": m.version, "model_path": f"{model_dir(ctx.root, m.name)}/current",
                "runtime": rt.name, "runtime_version": rt.version,
                "runtime_prefix": runtime_prefix(ctx.root, rt.name, rt.version),
                "tensor_parallel": dep.tensor_parallel, "devices": devices[: dep.tensor_parallel] if devices else [],
                "port": dep.port, "python": ctx.python, "runtime_module": rt.package.replace("-", "_"),
                "config_path": config_path,
            }
            config = _env().get_template("runtime.yaml.j2").render(**values)
            unit = _env().get_template("unit.service.j2").render(**values)
            out[dep.name] = DesiredServing(
                deployment=dep.name, role=dep.role, model=m.name, model_version=m.version, runtime=rt.name,
                runtime_version=rt.version, port=dep.port, tensor_parallel=dep.tensor_parallel,
                config=config, config_path=config_path,
                config_sha256=hashlib.sha256((config + unit).encode()).hexdigest(),
                unit=unit, unit_path=unit_path,
            )
        return out

    def changes(self, host: str, name: str, want: DesiredServing, have: ServingRecord | None) -> Change | None:
        after = {"role": want.role, "model": f"{want.model} {want.model_version}", "port": want.port,
                 "config_sha256": want.config_sha256}
        if have is None:
            return Change(host=host, component=self.name, name=name, action="create", after=after,
                          reason=f"{want.role} server for {want.model} {want.model_version} on port {want.port}")
        if have.config_sha256 == want.config_sha256:
            return None
        before = {"role": have.role, "model": f"{have.model} {have.model_version}", "port": have.port,
                  "config_sha256": have.config_sha256}
        moved = [f"{k} {before[k]} → {after[k]}" for k in ("role", "model", "port") if before[k] != after[k]]
        return Change(host=host, component=self.name, name=name, action="update", before=before, after=after,
                      reason="serving configuration changed" + (f": {', '.join(moved)}" if moved else ""))

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> ServingRecord:
        return ServingRecord(
            role=result["role"], model=result["model"], model_version=str(result["model_version"]),
            runtime=result["runtime"], runtime_version=str(result["runtime_version"]),
            config_sha256=result["config_sha256"], port=int(result["port"]),
        )

    def apply_vars(self, want: DesiredServing, store: Path, root: str) -> dict[str, Any]:
        return {"deployment": want.deployment, "role": want.role, "model": want.model,
                "model_version": want.model_version, "runtime": want.runtime,
                "runtime_version": want.runtime_version, "port": want.port, "config": want.config,
                "config_path": want.config_path, "unit": want.unit, "unit_path": want.unit_path,
                "config_sha256": want.config_sha256}

    def removal(self, host: str, name: str, have: Any | None, root: str) -> list[str]:
        """Config and unit are removed by their paths, recorded or not."""
        return list(_paths(root, name))

    def observe_vars(self, desired: Mapping[str, DesiredServing], recorded: Mapping[str, Any],
                     catalog: Catalog) -> list[dict[str, Any]]:
        return [{"deployment": s.deployment, "paths": [s.config_path, s.unit_path]} for s in desired.values()]

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, DesiredServing],
              recorded: Mapping[str, ServingRecord], findings: list[Finding]) -> dict[str, Any]:
        out: dict[str, ServingRecord] = {}
        contents = iter(observed["serving"])
        for s in spec:
            parts = [next(contents, None) for _ in s["paths"]]
            if any(p is None for p in parts):
                continue
            text = "".join(base64.b64decode(p).decode("utf-8", "replace") for p in parts if p is not None)
            srec = recorded.get(s["deployment"])
            want = desired.get(s["deployment"])
            ref = srec or (ServingRecord(role=want.role, model=want.model, model_version=want.model_version,
                                         runtime=want.runtime, runtime_version=want.runtime_version,
                                         config_sha256="", port=want.port) if want else None)
            if ref is None:
                continue
            out[s["deployment"]] = ref.model_copy(update={"config_sha256": hashlib.sha256(text.encode()).hexdigest()})
        return out

    def subjects(self, recorded: Mapping[str, ServingRecord], desired: Mapping[str, Any] | None) -> dict[str, str]:
        return {f"serving/{dep}": s.config_sha256 for dep, s in sorted(recorded.items())}

    def audit_rows(self, recorded: Mapping[str, ServingRecord], index: Any) -> list[InstalledServing]:
        return [InstalledServing.model_validate({**s.model_dump(), "name": n}) for n, s in sorted(recorded.items())]
