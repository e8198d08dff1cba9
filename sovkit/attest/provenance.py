"""From an apply (or rollback) to provision statements, and back: subjects checked against recorded state.

Subjects are named by the artifact's path in the store when the inventory still pins that exact
digest (so a verifier can hash the store file), else by a stable synthetic name
(``model/<name>/<version>/<file>``). Verification compares digests, not names, so an inventory
edited since the apply does not make a valid attestation fail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovkit.attest.log import LogEntry
from sovkit.attest.predicates import (
    PROVISION_PREDICATE,
    DeviceFirmware,
    InstalledModel,
    ModelSignatureResult,
    PolicyRef,
    ProvisionPredicate,
    RuntimeVersion,
    provision_statement,
)
from sovkit.components import registry
from sovkit.components.host import DesiredHost
from sovkit.digest import sha256_file
from sovkit.plan.model import Plan
from sovkit.provision.apply import ApplyReport
from sovkit.signing.canonical import canonical_json
from sovkit.signing.statement import Statement
from sovkit.signing.steps import Step
from sovkit.state.models import HostRecord, State


def plan_digest(plan: Plan) -> str:
    """sha256 over the plan's canonical JSON (the same bytes whatever the key order in memory)."""
    return "sha256:" + hashlib.sha256(canonical_json(plan.model_dump(mode="json"))).hexdigest()


def host_subjects(record: HostRecord, desired: DesiredHost | None) -> dict[str, str]:
    """Every artifact recorded as installed on a host: subject name -> sha256 (each kind names its own)."""
    out: dict[str, str] = {}
    for kind in registry.kinds():
        out.update(kind.subjects(kind.records_of(record), kind.desired_of(desired) if desired else None))
    return out


def _outcome(report: ApplyReport, host: str) -> tuple[str, str | None]:
    if host in report.preflight.failed_hosts:
        return "not-started", report.preflight.failed_hosts[host]
    if host in report.skipped:
        return "not-started", report.skipped[host]
    o = report.hosts.get(host)
    if o is None:
        return "success", None
    if o.unreachable:
        return "unreachable", o.error or None
    if o.failed:
        return "failed", f"{o.failed_task}: {o.error}"
    return "success", None


@dataclass(frozen=True)
class ApplyContext:
    """What an apply was made under, beside its report."""

    operation: str
    site: str
    plan: Plan | None
    inventory_digest: str
    policy_pack_digest: str
    policy_allowed: bool
    findings: list[dict[str, Any]]


def provision_statements(report: ApplyReport, ctx: ApplyContext, hosts: Iterable[str],
                         desired: dict[str, DesiredHost]) -> list[Statement]:
    """One statement per host the apply touched (or tried to), describing what is installed there now."""
    out: list[Statement] = []
    digest = plan_digest(ctx.plan) if ctx.plan is not None else None
    waived = sum(1 for f in ctx.findings if f.get("waived"))
    policy = PolicyRef(pack_digest=ctx.policy_pack_digest, allowed=ctx.policy_allowed,
                       findings=len(ctx.findings), waived=waived)
    for host in hosts:
        record = report.state.hosts.get(host, HostRecord())
        outcome, error = _outcome(report, host)
        devices = [DeviceFirmware(kind=kind, device=dev, firmware=d.firmware, image_sha256=fw.image_sha256)
                   for kind, fw in sorted(record.firmware.items()) for dev, d in sorted(fw.devices.items())]
        runtimes = [RuntimeVersion(name=n, version=r.version, package=r.package)
                    for n, r in sorted(record.runtimes.items())]
        models = []
        for name, m in sorted(record.models.items()):
            check = report.preflight.signatures.get(f"model:{name}@{m.version}")
            want = desired.get(host)
            fmt = want.models[name].signature_format if want and name in want.models else "dsse"
            if check is not None:
                sig = ModelSignatureResult(verified=check.verified, signer=check.signer, keyid=check.keyid,
                                           format=fmt, reason=check.reason)
            else:
                sig = ModelSignatureResult(verified=m.signature_verified, signer="", format=fmt,
                                           reason="checked at an earlier apply" if m.signature_verified
                                           else "not verified")
            models.append(InstalledModel(name=name, version=m.version, previous=m.previous, signature=sig))
        changes = [c.model_dump(mode="json", exclude={"before", "after"}) for c in ctx.plan.for_host(host)] \
            if ctx.plan is not None else []
        predicate = ProvisionPredicate(
            operation="rollback" if ctx.operation == "rollback" else "apply", site=ctx.site, host=host,
            devices=devices, runtimes=runtimes, models=models,
            serving={d: s.config_sha256 for d, s in sorted(record.serving.items())},
            serving_checks=[c for c in report.serving_checks if c.host == host],
            plan_digest=digest, inventory_digest=ctx.inventory_digest, policy=policy,
            started=report.started, finished=report.finished, run_id=report.run_id,
            outcome=outcome,  # type: ignore[arg-type]
            error=error, changes=changes,
            rollout=ctx.plan.rollout if ctx.plan is not None and not ctx.plan.rollout.default else None,
            batch=next((i + 1 for i, b in enumerate(report.batches) if host in b), None)
            if len(report.batches) > 1 else None,
        )
        out.append(provision_statement(host_subjects(record, desired.get(host)), predicate))
    return out


def latest_per_host(entries: list[LogEntry]) -> dict[str, LogEntry]:
    latest: dict[str, LogEntry] = {}
    for e in entries:
        if e.predicate_type == PROVISION_PREDICATE:
            latest[str(e.predicate.get("host"))] = e
    return latest


def check_subjects(entries: list[LogEntry], state: State | None, artifact_root: Path | None) -> Step:
    """The latest provision attestation of each host against the recorded state and the artifact store.

    Digests in both directions: every attested artifact is recorded for the host, and every recorded
    artifact is attested; and an attested artifact still in the store must hash to the attested digest.
    """
    def fail(msg: str, hint: str) -> Step:
        return Step.failed_with("subjects", [msg], hint=hint)

    latest = latest_per_host(entries)
    if state is None and artifact_root is None:
        return Step.not_checked("subjects", "not checked: no state.json beside the log and no artifact store "
                                            "(pass the inventory or the state directory)")
    checked = 0
    for host, entry in sorted(latest.items()):
        subjects = {str(s["name"]): str(s["digest"].get("sha256")) for s in entry.subjects}
        if artifact_root is not None:
            for name, digest in sorted(subjects.items()):
                f = artifact_root / name
                if f.is_file() and sha256_file(f) != digest:
                    return fail(f"subject {name} of host {host} (entry {entry.index}): the file in the artifact "
                                f"store has sha256 {sha256_file(f)[:16]}…, the attestation says {digest[:16]}…",
                                "the store file was changed after it was installed: restore it and investigate")
        if state is not None:
            if host not in state.hosts:
                if entry.predicate.get("outcome") == "success" and subjects:
                    return fail(f"host {host}: attested by entry {entry.index} but absent from the recorded state",
                                "the state was edited or the host removed without an attestation")
                continue
            recorded = host_subjects(state.hosts[host], None)
            want, have = set(subjects.values()), set(recorded.values())
            if want - have:
                name = next(n for n, d in sorted(subjects.items()) if d in want - have)
                return fail(f"subject {name} of host {host} (entry {entry.index}, sha256 {subjects[name][:16]}…) "
                            "is not in the recorded state",
                            "the state changed after the attestation (refresh found drift, or it was edited)")
            if have - want:
                name = next(n for n, d in sorted(recorded.items()) if d in have - want)
                return fail(f"host {host}: the recorded state has {name} (sha256 {recorded[name][:16]}…) which its "
                            f"latest attestation (entry {entry.index}) does not attest",
                            "the state changed after the last attested apply (refresh found drift, or it was "
                            "edited)")
        checked += 1
    if not latest:
        return Step.passed("subjects", "no provision attestations to check")
    where = " and ".join(w for w, on in (("recorded state", state is not None),
                                         ("artifact store", artifact_root is not None)) if on)
    return Step.passed("subjects", f"latest attestation of {checked} host(s) matches the {where}")
