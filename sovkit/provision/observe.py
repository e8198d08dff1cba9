"""Read back what is really on the hosts and turn it into host records (for refresh and drift)."""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sovkit import identifiers as ids
from sovkit.errors import ObserveError
from sovkit.inventory.loader import LoadedInventory
from sovkit.plan.desired import DesiredHost
from sovkit.plan.model import Change, Plan
from sovkit.provision.executor import ExecEvent, Executor, HostOutcome, HostTarget
from sovkit.provision.hostvars import observe_target
from sovkit.state.models import DeviceRecord, FirmwareRecord, HostRecord, ModelRecord, RuntimeRecord, ServingRecord


@dataclass(frozen=True)
class Finding:
    """A value a host reported that sovkit refused (not a plain identifier, or a path outside its prefix)."""

    component: str
    name: str
    message: str


@dataclass
class Observation:
    hosts: dict[str, HostRecord]
    unreachable: dict[str, str] = field(default_factory=dict)
    untrusted: dict[str, list[Finding]] = field(default_factory=dict)


def with_findings(drift: Plan, untrusted: dict[str, list[Finding]]) -> Plan:
    """The drift with each refused host value as its own change (replacing the generic one for that component)."""
    if not untrusted:
        return drift
    flagged = {(h, f.component, f.name) for h, found in untrusted.items() for f in found}
    changes = [c for c in drift.changes if (c.host, c.component, c.name) not in flagged]
    for host, found in untrusted.items():
        for f in found:
            changes.append(Change(host=host, component=f.component, name=f.name, action="update",  # type: ignore[arg-type]
                                  reason=f"untrusted value reported by the host, refused: {f.message}"))
    return drift.model_copy(update={"changes": tuple(changes)})


def _devices(fw: dict[str, Any], stdout: str) -> list[tuple[str, str]] | None:
    """(device id, firmware) of this kind from the vendor tool's JSON; None if any value is not plain."""
    found = [d for d in json.loads(stdout)[fw["devices_key"]] if isinstance(d, dict) and d.get("kind") == fw["kind"]]
    pairs = [(str(d[fw["id_key"]]), str(d[fw["firmware_key"]])) for d in found]
    if all(ids.matches(ids.DEVICE_ID, i) and ids.matches(ids.VERSION, v) for i, v in pairs):
        return pairs
    return None


def _parse(target: HostTarget, desired: DesiredHost, recorded: HostRecord, obs: dict[str, Any],
           findings: list[Finding] | None = None) -> HostRecord:
    """Turn the observe play's output into a host record. Everything a host reports is untrusted input:
    device ids, versions and link targets must be plain identifiers (and a model's ``current`` must point at
    ``<model dir>/<version>``), else the component is recorded as version ``untrusted`` — which the diff
    plans to repair — and a :class:`Finding` is added; the refused value itself is never stored."""
    found = findings if findings is not None else []
    spec = target.variables["sovkit_observe"]
    out = HostRecord(last_apply=recorded.last_apply, updated_at=recorded.updated_at)
    for fw, stdout, rc in zip(spec["firmware"], obs["firmware"], obs["firmware_rc"], strict=False):
        if rc != 0 or not stdout:
            continue
        try:
            devices = _devices(fw, stdout)
        except (ValueError, KeyError, TypeError):
            continue
        rec = recorded.firmware.get(fw["kind"])
        sha = rec.image_sha256 if rec else ""
        if devices is None:
            found.append(Finding("firmware", fw["kind"], "the vendor tool reports a device id or firmware "
                                 "version that is not a plain identifier"))
            out.firmware[fw["kind"]] = FirmwareRecord(kind=fw["kind"], version=ids.UNTRUSTED, image_sha256=sha)
            continue
        if not devices:
            continue
        versions = {v for _, v in devices}
        out.firmware[fw["kind"]] = FirmwareRecord(
            kind=fw["kind"], version=versions.pop() if len(versions) == 1 else "mixed", image_sha256=sha,
            devices={i: DeviceRecord(kind=fw["kind"], firmware=v) for i, v in devices},
        )
    for rt, stdout, rc in zip(spec["runtimes"], obs["runtimes"], obs["runtimes_rc"], strict=False):
        version = stdout.strip() if rc == 0 else ""
        if not version:
            continue
        if not ids.matches(ids.VERSION, version):
            found.append(Finding("runtime", rt["name"], f"installed version {ids.describe(version)} is not a "
                                 "plain version"))
            version = ids.UNTRUSTED
        rrec = recorded.runtimes.get(rt["name"])
        want = desired.runtimes.get(rt["name"])
        artifacts = rrec.artifacts if rrec else ({a.store_path: a.sha256 for a in want.artifacts} if want else {})
        try:
            out.runtimes[rt["name"]] = RuntimeRecord(version=version, package=rt["package"], artifacts=artifacts,
                                                     prefix=rt["prefix"])
        except ValidationError as exc:
            found.append(Finding("runtime", rt["name"], f"not recorded: {exc.errors()[0]['msg']}"))
    file_digests = iter(obs["model_files"])
    for m, current in zip(spec["models"], obs["models_current"], strict=False):
        digests = {name: next(file_digests, None) for name in m["files"]}
        if not current:
            continue
        mrec = recorded.models.get(m["name"])
        version = posixpath.basename(str(current))
        files: dict[str, str] = {k: v if isinstance(v, str) and ids.matches(ids.SHA256, v) else "missing"
                                 for k, v in digests.items()}
        path = str(current)
        if not (ids.matches(ids.VERSION, version) and path == f"{m['dir']}/{version}" and ids.safe_path(path)):
            found.append(Finding("model", m["name"], f"`current` points at {ids.describe(current)}, not at "
                                 f"{m['dir']}/<version>"))
            # the refused target is not stored; digests read through it are not trusted either
            version, path, files = ids.UNTRUSTED, f"{m['dir']}/current", dict.fromkeys(m["files"], "missing")
        try:
            out.models[m["name"]] = ModelRecord(
                version=version, files=files, path=path, previous=mrec.previous if mrec else None,
                signature_verified=mrec.signature_verified if mrec else False,
            )
        except ValidationError as exc:
            found.append(Finding("model", m["name"], f"not recorded: {exc.errors()[0]['msg']}"))
    contents = iter(obs["serving"])
    for s in spec["serving"]:
        parts = [next(contents, None) for _ in s["paths"]]
        if any(p is None for p in parts):
            continue
        text = "".join(base64.b64decode(p).decode("utf-8", "replace") for p in parts if p is not None)
        srec = recorded.serving.get(s["deployment"])
        want_s = desired.serving.get(s["deployment"])
        ref = srec or (ServingRecord(role=want_s.role, model=want_s.model, model_version=want_s.model_version,
                                     runtime=want_s.runtime, runtime_version=want_s.runtime_version,
                                     config_sha256="", port=want_s.port) if want_s else None)
        if ref is None:
            continue
        out.serving[s["deployment"]] = ref.model_copy(
            update={"config_sha256": hashlib.sha256(text.encode()).hexdigest()})
    return out


def observe(
    inv: LoadedInventory,
    desired: dict[str, DesiredHost],
    recorded: dict[str, HostRecord],
    executor: Executor,
    workdir: Path,
    on_event: Callable[[ExecEvent], None] = lambda e: None,
) -> Observation:
    """Read every desired host back; raises ObserveError naming each host that could not be read (fail closed:
    a refresh that silently fell back to recorded state would report "no drift" for a host nobody looked at)."""
    known_hosts = workdir.parent / "known_hosts"
    targets = {h: observe_target(inv, d, recorded.get(h, HostRecord()), known_hosts) for h, d in desired.items()}
    raw: dict[str, dict[str, Any]] = {}

    def handle(event: ExecEvent) -> None:
        if event.kind == "record" and "sovkit_observed" in event.data:
            raw[event.host] = event.data["sovkit_observed"]
        on_event(event)

    result = executor.run("observe.yml", list(targets.values()), handle, workdir,
                          run_id=f"observe-{uuid.uuid4().hex[:12]}")
    out = Observation(hosts={})
    for host, target in targets.items():
        outcome: HostOutcome = result.hosts.get(host, HostOutcome())
        if host not in raw or outcome.failed or outcome.unreachable or result.cancelled:
            what = "unreachable" if outcome.unreachable else "observe failed"
            task = f" at {outcome.failed_task}" if outcome.failed_task else ""
            out.unreachable[host] = f"{what}{task}: {outcome.error}" if outcome.error else \
                "the observe play returned no observation"
            continue
        found: list[Finding] = []
        out.hosts[host] = _parse(target, desired[host], recorded.get(host, HostRecord()), raw[host], found)
        if found:
            out.untrusted[host] = found
    if out.unreachable:  # fail closed: a host not read back is never replaced by its recorded state
        raise ObserveError(out.unreachable)
    return out
