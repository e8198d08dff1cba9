"""Read back what is really on the hosts and turn it into host records (for refresh and drift)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovkit.errors import ObserveError
from sovkit.inventory.loader import LoadedInventory
from sovkit.plan.desired import DesiredHost
from sovkit.provision.executor import ExecEvent, Executor, HostOutcome, HostTarget
from sovkit.provision.hostvars import observe_target
from sovkit.state.models import DeviceRecord, FirmwareRecord, HostRecord, ModelRecord, RuntimeRecord, ServingRecord


@dataclass
class Observation:
    hosts: dict[str, HostRecord]
    unreachable: dict[str, str] = field(default_factory=dict)


def _parse(target: HostTarget, desired: DesiredHost, recorded: HostRecord, obs: dict[str, Any]) -> HostRecord:
    spec = target.variables["sovkit_observe"]
    out = HostRecord(last_apply=recorded.last_apply, updated_at=recorded.updated_at)
    for fw, stdout, rc in zip(spec["firmware"], obs["firmware"], obs["firmware_rc"], strict=False):
        if rc != 0 or not stdout:
            continue
        try:
            devices = [d for d in json.loads(stdout)[fw["devices_key"]] if d.get("kind") == fw["kind"]]
        except (ValueError, KeyError, TypeError):
            continue
        if not devices:
            continue
        versions = {str(d[fw["firmware_key"]]) for d in devices}
        rec = recorded.firmware.get(fw["kind"])
        out.firmware[fw["kind"]] = FirmwareRecord(
            kind=fw["kind"], version=versions.pop() if len(versions) == 1 else "mixed",
            image_sha256=rec.image_sha256 if rec else "",
            devices={str(d[fw["id_key"]]): DeviceRecord(kind=fw["kind"], firmware=str(d[fw["firmware_key"]]))
                     for d in devices},
        )
    for rt, stdout, rc in zip(spec["runtimes"], obs["runtimes"], obs["runtimes_rc"], strict=False):
        version = stdout.strip() if rc == 0 else ""
        if not version:
            continue
        rrec = recorded.runtimes.get(rt["name"])
        want = desired.runtimes.get(rt["name"])
        artifacts = rrec.artifacts if rrec else ({a.store_path: a.sha256 for a in want.artifacts} if want else {})
        out.runtimes[rt["name"]] = RuntimeRecord(version=version, package=rt["package"], artifacts=artifacts,
                                                 prefix=rt["prefix"])
    file_digests = iter(obs["model_files"])
    for m, current in zip(spec["models"], obs["models_current"], strict=False):
        digests = {name: next(file_digests, None) for name in m["files"]}
        if not current:
            continue
        mrec = recorded.models.get(m["name"])
        out.models[m["name"]] = ModelRecord(
            version=os.path.basename(current),
            files={k: v for k, v in digests.items() if v is not None} | {
                k: "missing" for k, v in digests.items() if v is None},
            path=current, previous=mrec.previous if mrec else None,
            signature_verified=mrec.signature_verified if mrec else False,
        )
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
        out.hosts[host] = _parse(target, desired[host], recorded.get(host, HostRecord()), raw[host])
    if out.unreachable:  # fail closed: a host not read back is never replaced by its recorded state
        raise ObserveError(out.unreachable)
    return out
