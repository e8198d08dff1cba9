"""Serving: each deployment's server process and each serving group's router, launched as its runtime documents.

The launch (argv and environment, in the runtime's own format) comes from the runtime profile in the catalog
(:mod:`sovkit.components.launch`); devices and ports from the inventory's placement
(:mod:`sovkit.inventory.serving`). What reaches the host is data: a supervisor spec (JSON) and, on systemd
hosts, a unit, both rendered here on the controller with their digest in the plan. Starting, readiness, the
smoke request and rollback are :mod:`sovkit.provision.serving`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from sovkit import identifiers as ids
from sovkit.catalog import Catalog
from sovkit.components.base import _M, Change, ComponentKind, Finding, HostContext, Row, SiteIndex
from sovkit.components.launch import (
    KvTransferInput,
    Launch,
    LaunchInput,
    SpeculativeInput,
    render_launch,
    supervisor_spec,
    systemd_unit,
)
from sovkit.components.model import model_dir
from sovkit.components.runtime import runtime_prefix
from sovkit.errors import PlanError
from sovkit.inventory.models import Deployment, ServingGroup
from sovkit.inventory.serving import placements
from sovkit.resources import templates_dir
from sovkit.state.models import ServingRecord

ROUTER_RUNTIME = "sovkit-router"


@cache
def router_source() -> str:
    """The P/D router sovkit ships (templates/serving/router.py): copied to the router host, run with its Python."""
    return (templates_dir() / "serving" / "router.py").read_text(encoding="utf-8")


def router_version() -> str:
    """The router's version is its source digest: a changed router is a changed config, so apply restarts it."""
    return hashlib.sha256(router_source().encode()).hexdigest()[:12]


class DesiredServing(_M):
    """One process to run on a host: a deployment's server or a group's router."""

    deployment: str
    kind: Literal["deployment", "router"]
    group: str | None
    role: str
    model: str
    model_version: str
    runtime: str
    runtime_version: str
    port: int
    tensor_parallel: int
    devices: tuple[int, ...]
    endpoint: str
    service: str
    service_manager: Literal["systemd", "supervisor"]
    spec: str
    spec_path: str
    unit: str
    unit_path: str
    rundir: str
    record_path: str
    router_path: str
    readiness_path: str
    models_path: str
    served_model_name: str
    takes_traffic: bool
    deadline_s: int
    config_sha256: str

    def record(self, status: str = "started") -> dict[str, Any]:
        """The state record this process has once started (what the role writes beside the spec for rollback)."""
        return {"role": self.role, "model": self.model, "model_version": self.model_version,
                "runtime": self.runtime, "runtime_version": self.runtime_version,
                "config_sha256": self.config_sha256, "port": self.port, "endpoint": self.endpoint,
                "rundir": self.rundir, "status": status}


class InstalledServing(ServingRecord, Row):
    """The state's own serving record (one type: a field added there is reported, never refused) plus its name."""

    name: str


def _paths(root: str, name: str) -> dict[str, str]:
    return {
        "spec_path": f"{root}/etc/sovkit/serving/{name}.json",
        "record_path": f"{root}/etc/sovkit/serving/{name}.record.json",
        "unit_path": f"{root}/etc/systemd/system/sovkit-{name}.service",
        "rundir": f"{root}/var/lib/sovkit/serving",
        "router_path": f"{root}/usr/lib/sovkit/router.py",
    }


def _endpoint(address: str, port: int) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


class _Site:
    """Per-site lookups for serving (built once per plan)."""

    def __init__(self, site: SiteIndex) -> None:
        s = site.inv.site
        self.runtimes = {r.name: r for r in s.runtimes}
        self.models = {m.name: m for m in s.models}
        self.deployments = {d.name: d for d in s.deployments}
        self.hosts = {h.name: h for h in s.hosts}
        self.group_of: dict[str, ServingGroup] = {}
        for g in s.serving_groups:
            self.group_of[g.prefill] = g
            self.group_of[g.decode] = g
        self.placement = placements(s, site.catalog)
        self.catalog: Catalog = site.catalog

    def devices(self, host: str, deployment: str) -> tuple[int, ...]:
        return tuple(self.placement.get(deployment, host).devices)


class Serving(ComponentKind):
    name = "serving"
    order = 40
    field = "serving"
    var = "serving"
    record = ServingRecord

    def index(self, site: SiteIndex) -> Any:
        return _Site(site)

    def _launch_input(self, ctx: HostContext, site: _Site, dep: Deployment) -> LaunchInput:
        rt, m = site.runtimes[dep.runtime], site.models[dep.model]
        prefix = runtime_prefix(ctx.root, rt.name, rt.version)
        group = site.group_of.get(dep.name)
        kv = None
        if group is not None:
            decode_host = site.hosts[site.deployments[group.decode].hosts[0]]
            kv = KvTransferInput(connector=group.kv_transfer.connector, peer_host=decode_host.address,
                                 port=group.kv_transfer.port)
        spec = None
        if dep.speculative is not None:
            spec = SpeculativeInput(method=dep.speculative.method, num_tokens=dep.speculative.num_tokens,
                                    draft_model_path=f"{model_dir(ctx.root, dep.speculative.draft_model)}/current")
        return LaunchInput(
            python=ctx.python, runtime_prefix=prefix, runtime_bin=f"{prefix}/bin",
            model_path=f"{model_dir(ctx.root, m.name)}/current", served_model_name=m.name, bind="0.0.0.0",
            port=dep.port, tp=dep.tensor_parallel, max_model_len=dep.max_model_len, max_batch=dep.max_batch,
            devices=list(site.devices(ctx.host.name, dep.name)), role=dep.role if group else "both", kv=kv,
            speculative=spec)

    def _entry(self, ctx: HostContext, *, name: str, kind: Literal["deployment", "router"], group: str | None,
               role: str, model: str, model_version: str, runtime: str, runtime_version: str, port: int,
               tp: int, devices: tuple[int, ...], launch: Launch, readiness: str, models_path: str,
               takes_traffic: bool, deadline_s: int, extra_digest: str = "") -> DesiredServing:
        paths = _paths(ctx.root, name)
        service = f"sovkit-{name}"
        manager = ctx.host.service_manager
        # the model path is the `current` link, so the version goes into the environment (the runtime ignores
        # it): a new model version changes the launch, which restarts the process, and a rollback restores it
        launch = Launch(argv=launch.argv, env={**launch.env, "SOVKIT_MODEL": f"{model}@{model_version}"})
        spec = json.dumps({**supervisor_spec(launch, service), "rundir": paths["rundir"]}, indent=2,
                          sort_keys=True) + "\n"
        unit = systemd_unit(launch, f"sovkit {role} server {name} ({model} {model_version})",
                            workdir=paths["rundir"]) if manager == "systemd" else ""
        digest = hashlib.sha256((spec + unit + extra_digest).encode()).hexdigest()
        return DesiredServing(
            deployment=name, kind=kind, group=group, role=role, model=model, model_version=model_version,
            runtime=runtime, runtime_version=runtime_version, port=port, tensor_parallel=tp, devices=devices,
            endpoint=_endpoint(ctx.host.address, port), service=service, service_manager=manager, spec=spec,
            unit=unit, readiness_path=readiness, models_path=models_path, served_model_name=model,
            takes_traffic=takes_traffic, deadline_s=deadline_s, config_sha256=digest, **paths)

    def desired(self, ctx: HostContext) -> dict[str, Any]:
        site: _Site = ctx.site.of(self)
        out: dict[str, DesiredServing] = {}
        for dep in ctx.deployments:
            rt, m = site.runtimes[dep.runtime], site.models[dep.model]
            profile = site.catalog.runtimes[rt.family]
            group = site.group_of.get(dep.name)
            try:
                launch = render_launch(profile, self._launch_input(ctx, site, dep))
            except ValidationError as exc:
                first = exc.errors()[0]
                raise PlanError(f"deployment {dep.name} on host {ctx.host.name} cannot be launched: "
                                f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', '')}",
                                "run `sovkit check`: the serving rules (SV-*) say what to fix") from None
            out[dep.name] = self._entry(
                ctx, name=dep.name, kind="deployment", group=group.name if group else None, role=dep.role,
                model=m.name, model_version=m.version, runtime=rt.name, runtime_version=rt.version,
                port=dep.port, tp=dep.tensor_parallel, devices=site.devices(ctx.host.name, dep.name),
                launch=launch, readiness=profile.endpoints.readiness.path, models_path=profile.endpoints.models.path,
                takes_traffic=group is None, deadline_s=dep.readiness_timeout_s)
        for group in ctx.site.inv.site.serving_groups:
            if group.router.host != ctx.host.name:
                continue
            out[f"{group.name}-router"] = self._router(ctx, site, group)
        return out

    def _router(self, ctx: HostContext, site: _Site, group: ServingGroup) -> DesiredServing:
        prefill, decode = site.deployments[group.prefill], site.deployments[group.decode]
        m = site.models[decode.model]
        name = f"{group.name}-router"
        paths = _paths(ctx.root, name)

        argv = [ctx.python, paths["router_path"], "--host", "0.0.0.0", "--port", str(group.router.port)]
        for h in dict.fromkeys(prefill.hosts):
            argv += ["--prefill", _endpoint(site.hosts[h].address, prefill.port)]
        for h in dict.fromkeys(decode.hosts):  # each decode with its KV listener: the router tells prefill where
            address = site.hosts[h].address
            argv += ["--decode", _endpoint(address, decode.port),
                     "--decode-kv", f"[{address}]:{group.kv_transfer.port}" if ":" in address
                     else f"{address}:{group.kv_transfer.port}"]
        # like every serving process, the router's environment names the group's model version (it ignores
        # it): a new version restarts the whole group, and a rollback restores it as a whole
        launch = Launch(argv=argv, env={"SOVKIT_SERVING_GROUP": group.name})
        return self._entry(
            ctx, name=name, kind="router", group=group.name, role="router", model=m.name,
            model_version=m.version, runtime=ROUTER_RUNTIME, runtime_version=router_version(),
            port=group.router.port, tp=1, devices=(), launch=launch, readiness="/health",
            models_path="/v1/models", takes_traffic=True,
            deadline_s=max(prefill.readiness_timeout_s, decode.readiness_timeout_s),
            extra_digest=router_source())

    def changes(self, host: str, name: str, want: DesiredServing, have: ServingRecord | None) -> Change | None:
        after = {"role": want.role, "model": f"{want.model} {want.model_version}", "port": want.port,
                 "config_sha256": want.config_sha256}
        if have is None:
            what = (f"router of group {want.group} (prefill, then decode)" if want.kind == "router"
                    else f"{want.role} server for {want.model} {want.model_version}")
            return Change(host=host, component=self.name, name=name, action="create", after=after,
                          reason=f"{what} on port {want.port}")
        before = {"role": have.role, "model": f"{have.model} {have.model_version}", "port": have.port,
                  "config_sha256": have.config_sha256}
        if have.config_sha256 == want.config_sha256:
            if have.status in ("stopped", "unhealthy", "start-failed"):
                return Change(host=host, component=self.name, name=name, action="update", before=before,
                              after=after, reason=f"service is {have.status}: restart it"
                              + (f" ({have.detail})" if have.detail else ""))
            return None
        moved = [f"{k} {before[k]} → {after[k]}" for k in ("role", "model", "port") if before[k] != after[k]]
        return Change(host=host, component=self.name, name=name, action="update", before=before, after=after,
                      reason="serving configuration changed" + (f": {', '.join(moved)}" if moved else ""))

    def from_record(self, name: str, result: dict[str, Any], current: Any | None,
                    signatures_ok: Mapping[str, bool]) -> ServingRecord:
        return ServingRecord(
            role=result["role"], model=result["model"], model_version=str(result["model_version"]),
            runtime=result["runtime"], runtime_version=str(result["runtime_version"]),
            config_sha256=result["config_sha256"], port=int(result["port"]),
            endpoint=str(result.get("endpoint") or ""), status=result.get("status") or "installed",
            rundir=str(result.get("rundir") or ""),
            detail=str(result.get("detail") or "")[:500],
        )

    def apply_vars(self, want: DesiredServing, store: Path, root: str,
                   have: ServingRecord | None = None) -> dict[str, Any]:
        # a process recorded under another run directory (the host's root moved) is stopped before this one
        # starts: it would still hold the port
        moved = have.rundir if have is not None and have.rundir and have.rundir != want.rundir else ""
        return {"name": want.deployment, "stop_first": moved, "service": want.service, "manager": want.service_manager,
                "spec": want.spec, "spec_path": want.spec_path, "unit": want.unit, "unit_path": want.unit_path,
                "rundir": want.rundir, "record_path": want.record_path,
                "record": json.dumps(want.record(), sort_keys=True) + "\n",
                "config_sha256": want.config_sha256, "fields": want.record(),
                "router_path": want.router_path if want.kind == "router" else "",
                "router": router_source() if want.kind == "router" else ""}

    def removal(self, host: str, name: str, have: Any | None, root: str) -> list[str]:
        """Spec, record and unit are removed by their paths (the service is stopped first by the remove role)."""
        p = _paths(root, name)
        return [p["spec_path"], p["record_path"], p["unit_path"]]

    def observe_vars(self, desired: Mapping[str, DesiredServing], recorded: Mapping[str, Any],
                     catalog: Catalog) -> list[dict[str, Any]]:
        return [{"name": s.deployment, "paths": [s.spec_path] + ([s.unit_path] if s.unit else [])
                 + ([s.router_path] if s.kind == "router" else []),
                 "service": s.service, "manager": s.service_manager, "rundir": s.rundir,
                 "base": f"http://127.0.0.1:{s.port}", "models_path": s.models_path}
                for s in desired.values()]

    def parse(self, spec: list[dict[str, Any]], observed: dict[str, Any], desired: Mapping[str, DesiredServing],
              recorded: Mapping[str, ServingRecord], findings: list[Finding]) -> dict[str, Any]:
        out: dict[str, ServingRecord] = {}
        contents = iter(observed["serving"])
        status = list(observed.get("serving_status") or [])
        models = list(observed.get("serving_models") or [])
        for i, s in enumerate(spec):
            parts = [next(contents, None) for _ in s["paths"]]
            srec = recorded.get(s["name"])
            want = desired.get(s["name"])
            ref = srec or (ServingRecord.model_validate(want.record("installed")) if want else None)
            if ref is None or any(p is None for p in parts):
                continue
            text = "".join(base64.b64decode(p).decode("utf-8", "replace") for p in parts if p is not None)
            rec = ref.model_copy(update={"config_sha256": hashlib.sha256(text.encode()).hexdigest()})
            seen = _seen(s["manager"], status[i] if i < len(status) else None, models[i] if i < len(models) else None)
            out[s["name"]] = _with_health(rec, seen, s["name"], findings)
        return out

    def subjects(self, recorded: Mapping[str, ServingRecord], desired: Mapping[str, Any] | None) -> dict[str, str]:
        return {f"serving/{dep}": s.config_sha256 for dep, s in sorted(recorded.items())}

    def audit_rows(self, recorded: Mapping[str, ServingRecord], index: Any) -> list[InstalledServing]:
        return [InstalledServing.model_validate({**s.model_dump(), "name": n}) for n, s in sorted(recorded.items())]


def _json(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _seen(manager: str, status_raw: Any, models_raw: Any) -> dict[str, Any] | None:
    """What the host said of one process: running (supervisor status, or `systemctl is-active`), answering,
    and the model version it serves (untrusted; checked by the caller)."""
    if status_raw is None:
        return None
    running = (status_raw.strip() == "active") if manager == "systemd" and isinstance(status_raw, str) \
        else bool(_json(status_raw).get("running"))
    probed = _json(models_raw)
    listed = probed.get("models") if isinstance(probed.get("models"), list) else []
    first = listed[0] if listed and isinstance(listed[0], dict) else {}
    return {"running": running, "ok": bool(probed.get("ok")), "error": probed.get("error"),
            "version": first.get("version")}


def _with_health(rec: ServingRecord, seen: Any, name: str, findings: list[Finding]) -> ServingRecord:
    """Fold what the observe play saw of the process (running? which model version does it serve?) into the
    record; a version the host reports that is not a plain version is a finding, never stored."""
    if not isinstance(seen, dict):
        return rec.model_copy(update={"status": "stopped", "detail": "not observed"})
    if not seen.get("running"):
        return rec.model_copy(update={"status": "stopped", "detail": "the service is not running"})
    if rec.role == "router":  # a router whose upstreams are down is not itself broken: they are reported
        return rec.model_copy(update={"status": "ready", "detail": ""})
    if not seen.get("ok"):
        return rec.model_copy(update={"status": "unhealthy",
                                      "detail": str(seen.get("error") or "no answer")[:200]})
    version = seen.get("version")
    if version is not None and not ids.matches(ids.VERSION, version):
        findings.append(Finding("serving", name, f"reported model version {ids.describe(version)}"))
        return rec.model_copy(update={"status": "unhealthy", "served_version": None,
                                      "detail": "reported an untrusted model version"})
    if version is not None and rec.role != "router" and version != rec.model_version:
        return rec.model_copy(update={"status": "unhealthy", "served_version": version,
                                      "detail": f"serves {rec.model} {version}, recorded {rec.model_version}"})
    return rec.model_copy(update={"status": "ready", "served_version": version, "detail": ""})
