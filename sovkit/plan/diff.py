"""The diff: a pure function from (desired, observed) to a Plan. No I/O, no clock."""

from __future__ import annotations

import posixpath

from sovkit.identifiers import UNTRUSTED
from sovkit.plan.desired import DesiredHost
from sovkit.plan.model import COMPONENT_ORDER, Change, Plan
from sovkit.state.models import HostRecord


def _version_key(v: str) -> tuple[tuple[int, str], ...]:
    parts = []
    for piece in v.replace("-", ".").split("."):
        parts.append((int(piece), "") if piece.isdigit() else (-1, piece))
    return tuple(parts)


def _moved(recorded: str, wanted: str) -> str | None:
    """A reason when a component recorded at one path is wanted at another (the host's ``root`` changed).

    An empty recorded path (a state written before paths were recorded) is not a move.
    """
    if recorded and recorded.rstrip("/") != wanted.rstrip("/"):
        return f"install path changes {recorded} → {wanted} (the old copy is left in place)"
    return None


def _host_changes(want: DesiredHost, have: HostRecord) -> tuple[list[Change], int]:
    changes: list[Change] = []
    same = 0
    h = want.name
    for kind, fw in want.firmware.items():
        rec = have.firmware.get(kind)
        after = {"version": fw.version, "image_sha256": fw.image.sha256, "devices": fw.count}
        if rec is None:
            changes.append(Change(host=h, component="firmware", name=kind, action="create", after=after,
                                  reason=f"flash {fw.version} on {fw.count} device(s)"))
            continue
        stale = sorted(d for d, dev in rec.devices.items() if dev.firmware != fw.version)
        before = {"version": rec.version, "image_sha256": rec.image_sha256, "devices": len(rec.devices)}
        if rec.version != fw.version or stale or len(rec.devices) != fw.count:
            if rec.version == UNTRUSTED:
                reason = f"the devices reported untrusted values (refused); flash {fw.version}"
            elif rec.version != fw.version:
                direction = "DOWNGRADE" if _version_key(fw.version) < _version_key(rec.version) else "upgrade"
                reason = f"{direction} {rec.version} → {fw.version}"
            elif len(rec.devices) != fw.count:
                reason = f"{len(rec.devices)} device(s) recorded, {fw.count} declared"
            else:
                reason = f"device(s) {', '.join(stale)} report other firmware (drift)"
            changes.append(Change(host=h, component="firmware", name=kind, action="update", before=before,
                                  after=after, reason=reason))
        else:
            same += 1
    for name, rt in want.runtimes.items():
        rrec = have.runtimes.get(name)
        after = {"version": rt.version, "artifacts": {a.store_path: a.sha256 for a in rt.artifacts}}
        if rrec is None:
            changes.append(Change(host=h, component="runtime", name=name, action="create", after=after,
                                  reason=f"install {rt.package} {rt.version}"))
            continue
        # the prefix ends in the version: only a same-version prefix that differs is a move
        rt_moved = _moved(rrec.prefix, rt.prefix) if rrec.version == rt.version else None
        if rrec.version != rt.version or rrec.artifacts != after["artifacts"] or rt_moved:
            why = (f"{rrec.version} → {rt.version}" if rrec.version != rt.version
                   else "installed artifacts differ from the pinned ones" if rrec.artifacts != after["artifacts"]
                   else str(rt_moved))
            if rrec.version == UNTRUSTED:
                why = f"the host reported an untrusted version (refused); reinstall {rt.version}"
            before = {"version": rrec.version, "artifacts": rrec.artifacts}
            if rt_moved:
                before, after = {**before, "prefix": rrec.prefix}, {**after, "prefix": rt.prefix}
            changes.append(Change(host=h, component="runtime", name=name, action="update",
                                  before=before, after=after, reason=why))
        else:
            same += 1
    for name, m in want.models.items():
        mrec = have.models.get(name)
        files = {f.name: f.sha256 for f in m.files}
        after = {"version": m.version, "files": files}
        if mrec is None:
            changes.append(Change(host=h, component="model", name=name, action="create", after=after,
                                  reason=f"install {name} {m.version} ({len(files)} files) and activate"))
        elif mrec.version == UNTRUSTED:
            changes.append(Change(host=h, component="model", name=name, action="update",
                                  before={"version": mrec.version, "files": mrec.files}, after=after,
                                  reason=f"the host reported an untrusted active version (refused); "
                                         f"reinstall {m.version} and re-point current"))
        elif mrec.version != m.version:
            changes.append(Change(host=h, component="model", name=name, action="update",
                                  before={"version": mrec.version, "files": mrec.files}, after=after,
                                  reason=f"{mrec.version} → {m.version}; previous kept for rollback"))
        elif mrec.path and _moved(posixpath.dirname(mrec.path), m.path):
            changes.append(Change(host=h, component="model", name=name, action="update",
                                  before={"version": mrec.version, "path": posixpath.dirname(mrec.path)},
                                  after={**after, "path": m.path},
                                  reason=str(_moved(posixpath.dirname(mrec.path), m.path))))
        elif mrec.files != files:
            bad = sorted(f for f in set(files) | set(mrec.files) if files.get(f) != mrec.files.get(f))
            changes.append(Change(host=h, component="model", name=name, action="update",
                                  before={"version": mrec.version, "files": mrec.files}, after=after,
                                  reason=f"file digests differ on host (drift): {', '.join(bad)}"))
        else:
            same += 1
    for name, s in want.serving.items():
        srec = have.serving.get(name)
        after = {"role": s.role, "model": f"{s.model} {s.model_version}", "port": s.port,
                 "config_sha256": s.config_sha256}
        if srec is None:
            changes.append(Change(host=h, component="serving", name=name, action="create", after=after,
                                  reason=f"{s.role} server for {s.model} {s.model_version} on port {s.port}"))
        elif srec.config_sha256 != s.config_sha256:
            before = {"role": srec.role, "model": f"{srec.model} {srec.model_version}", "port": srec.port,
                      "config_sha256": srec.config_sha256}
            moved = [f"{k} {before[k]} → {after[k]}" for k in ("role", "model", "port") if before[k] != after[k]]
            changes.append(Change(host=h, component="serving", name=name, action="update", before=before,
                                  after=after, reason="serving configuration changed"
                                  + (f": {', '.join(moved)}" if moved else "")))
        else:
            same += 1
    for component, recorded, wanted in (
        ("serving", have.serving, want.serving),
        ("model", have.models, want.models),
        ("runtime", have.runtimes, want.runtimes),
    ):
        for name in sorted(set(recorded) - set(wanted)):
            changes.append(Change(host=h, component=component, name=name, action="delete",  # type: ignore[arg-type]
                                  reason="no longer deployed on this host"))
    changes.sort(key=lambda c: COMPONENT_ORDER[c.component])
    return changes, same


def diff(site: str, desired: dict[str, DesiredHost], observed: dict[str, HostRecord]) -> Plan:
    """Changes that take ``observed`` to ``desired``, host by host, firmware → runtime → model → serving."""
    changes: list[Change] = []
    unchanged = 0
    for name, want in desired.items():
        host_changes, same = _host_changes(want, observed.get(name, HostRecord()))
        changes.extend(host_changes)
        unchanged += same
    for name in sorted(set(observed) - set(desired)):
        changes.append(Change(host=name, component="host", name=name, action="delete",
                              reason="host removed from the inventory: its state record is dropped"))
    return Plan(site=site, changes=tuple(changes), unchanged=unchanged)
