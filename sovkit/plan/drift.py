"""Drift: what changed on the hosts behind sovkit's back (observed vs recorded state)."""

from __future__ import annotations

from sovkit.plan.model import Change, Plan
from sovkit.state.models import HostRecord

#: serving statuses that mean the process is not serving what was recorded (observe sets them; apply restarts)
_DOWN = ("stopped", "unhealthy", "start-failed")


def recorded_drift(site: str, recorded: dict[str, HostRecord], observed: dict[str, HostRecord]) -> Plan:
    """Observed vs recorded, as the changes that would restore the recorded state (hosts never recorded: none)."""
    changes: list[Change] = []
    for host, seen in observed.items():
        rec = recorded.get(host)
        if rec is None:
            continue
        for kind, fw in rec.firmware.items():
            now_fw = seen.firmware.get(kind)
            got = {d: r.firmware for d, r in now_fw.devices.items()} if now_fw else {}
            want = {d: r.firmware for d, r in fw.devices.items()}
            if got != want:
                changes.append(Change(host=host, component="firmware", name=kind, action="update",
                                      reason=f"devices report {got or 'nothing'}, recorded {want}"))
        for name, rt in rec.runtimes.items():
            now_rt = seen.runtimes.get(name)
            if now_rt is None or now_rt.version != rt.version:
                changes.append(Change(host=host, component="runtime", name=name, action="update",
                                      reason=f"host has {now_rt.version if now_rt else 'nothing'}, "
                                             f"recorded {rt.version}"))
        for name, m in rec.models.items():
            now_m = seen.models.get(name)
            if now_m is None:
                changes.append(Change(host=host, component="model", name=name, action="update",
                                      reason="model missing on the host"))
                continue
            bad = sorted(f for f in m.files if now_m.files.get(f) != m.files[f])
            if now_m.version != m.version or bad:
                what = f"active version {now_m.version}, recorded {m.version}" if now_m.version != m.version \
                    else f"file digests differ from the recorded ones: {', '.join(bad)}"
                changes.append(Change(host=host, component="model", name=name, action="update", reason=what))
        for name, s in rec.serving.items():
            now_s = seen.serving.get(name)
            if now_s is None or now_s.config_sha256 != s.config_sha256:
                changes.append(Change(host=host, component="serving", name=name, action="update",
                                      reason="serving config on the host differs from the recorded one"))
            elif now_s.status in _DOWN and s.status not in _DOWN:
                changes.append(Change(host=host, component="serving", name=name, action="update",
                                      reason=f"service is {now_s.status} (recorded {s.status})"
                                      + (f": {now_s.detail}" if now_s.detail else "")))
    return Plan(site=site, changes=tuple(changes))
