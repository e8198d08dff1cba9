"""Gather the facts of an audit from the inventory, the recorded state, the policy decision and the log.

Pure reading: nothing here writes, and every fact comes from a recorded source
(inventory, state, attestation log, refresh record), never from the hosts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from sovkit import __version__
from sovkit.attest.log import LogEntry
from sovkit.audit.model import (
    AuditReport,
    DataFlow,
    DeploymentSummary,
    DriftSection,
    Finding,
    HostInstall,
    HostSummary,
    LogCheck,
    ModelBomRef,
    Overview,
    PolicySection,
    TimelineEntry,
    TrustRootKey,
    WaiverSummary,
)
from sovkit.components import registry
from sovkit.inventory.codes import country_of
from sovkit.inventory.loader import LoadedInventory
from sovkit.inventory.models import Site
from sovkit.policy.api import PolicyDecision
from sovkit.state.models import State, now


def residency_of(site: Site, jurisdiction: str) -> tuple[str, str | None]:
    """Whether data kept/sent in ``jurisdiction`` stays inside the allowed ones, or under which transfer basis."""
    allowed = site.residency.allowed_jurisdictions
    if jurisdiction in allowed or country_of(jurisdiction) in allowed:
        return "inside", None
    for t in site.residency.transfers:
        if t.destination in (jurisdiction, country_of(jurisdiction)):
            return "transfer", f"{t.basis} ({t.reference})"
    return "outside", None


def data_flows(inv: LoadedInventory) -> list[DataFlow]:
    site = inv.site
    rows: list[tuple[str, str, str, str, bool, str]] = []
    store = site.artifact_store
    rows.append(("artifact-store", store.kind, f"{store.url}/{store.repository}" if store.url else store.path,
                 store.jurisdiction or site.jurisdiction.region or site.jurisdiction.country, False,
                 "site-local directory" if store.kind == "local" else f"OCI registry ({store.repository})"))
    rows += [("data-store", d.name, d.location or d.kind, d.jurisdiction, d.personal_data, d.kind)
             for d in site.data_stores]
    personal = {d.name for d in site.data_stores if d.personal_data}
    rows += [("backup", b.name, b.target, b.jurisdiction, b.source in personal, f"backup of {b.source}")
             for b in site.backups]
    rows += [("endpoint", e.name, e.url, e.jurisdiction, e.personal_data, e.direction) for e in site.endpoints]
    rows += [("telemetry", t.name, t.url, t.jurisdiction, False, "metrics") for t in site.telemetry]
    rows += [("log-sink", s.name, s.url, s.jurisdiction, False,
              f"retention {s.retention_days} d" + (", policy decision log" if s.decision_log else ""))
             for s in site.log_sinks]
    rows += [("model-registry", r.name, r.url, r.jurisdiction, False, "model registry")
             for r in site.model_registries]
    flows = []
    for category, name, target, jurisdiction, personal_data, detail in rows:
        where, basis = residency_of(site, jurisdiction)
        flows.append(DataFlow(category=category, name=name, target=target,  # type: ignore[arg-type]
                              jurisdiction=jurisdiction, personal_data=personal_data, detail=detail,
                              residency=where, transfer_basis=basis))  # type: ignore[arg-type]
    return flows


def overview(inv: LoadedInventory, state: State) -> Overview:
    site = inv.site
    return Overview(
        site=site.metadata.name, description=site.metadata.description, operator=site.metadata.operator,
        country=site.jurisdiction.country, region=site.jurisdiction.region,
        allowed_jurisdictions=list(site.residency.allowed_jurisdictions), air_gapped=site.residency.air_gapped,
        allowed_egress=list(site.residency.allowed_egress),
        transfers=[{"name": t.name, "destination": t.destination, "basis": t.basis, "reference": t.reference}
                   for t in site.residency.transfers],
        inventory_digest=inv.digest, state_lineage=state.lineage, state_serial=state.serial,
        racks=[{"name": r.name, "power_budget_w": r.power_budget_w, "location": r.location} for r in site.racks],
        hosts=[HostSummary(name=h.name, rack=h.rack, address=h.address, arch=h.arch, cpu=h.cpu,
                           accelerators=[f"{a.count}× {a.kind}" + (f" (firmware {a.firmware})" if a.firmware else "")
                                         for a in h.accelerators])
               for h in site.hosts],
        deployments=[DeploymentSummary(name=d.name, model=d.model, runtime=d.runtime, hosts=list(d.hosts),
                                       role=d.role) for d in site.deployments],
    )


def finding_row(f: dict[str, Any]) -> Finding:
    waiver = f.get("waived")
    detail = waiver if isinstance(waiver, dict) else {}
    return Finding(id=str(f.get("id", "")), severity=str(f.get("severity", "")), msg=str(f.get("msg", "")),
                   resource=str(f.get("resource", "")), remediation=str(f.get("remediation", "") or ""),
                   waived=bool(waiver), waiver_reason=detail.get("reason"), waiver_expires=detail.get("expires"))


def policy_section(inv: LoadedInventory, decision: PolicyDecision, pack_digest: str, bundle: str,
                   today: date | None = None, input_path: str | None = None,
                   trust_roots: list[TrustRootKey] | None = None) -> PolicySection:
    today = today or date.today()
    findings = [finding_row(f) for f in decision.findings]
    waivers = [WaiverSummary(rule=w.rule, resource=w.resource, reason=w.reason, expires=w.expires.isoformat(),
                             expired=w.expires < today) for w in inv.site.waivers]
    return PolicySection(allowed=decision.allowed, pack_digest=pack_digest, bundle=bundle, findings=findings,
                         waivers=waivers, input=input_path, trust_roots=list(trust_roots or []))


def installed(inv: LoadedInventory, state: State) -> list[HostInstall]:
    """What the state records on each host, each component tied back to the inventory entry it came from
    (each kind builds its own rows; a kind without a HostInstall field lands in ``extra_kinds``)."""
    indexes = {kind.name: kind.audit_index(inv) for kind in registry.kinds()}
    out = []
    for host, rec in sorted(state.hosts.items()):
        rows: dict[str, Any] = {}
        extra: dict[str, list[dict[str, Any]]] = {}
        for kind in registry.kinds():
            kind_rows = kind.audit_rows(kind.records_of(rec), indexes[kind.name])
            if kind.field in HostInstall.model_fields:
                rows[kind.field] = kind_rows
            elif kind_rows:
                extra[kind.name] = [r.model_dump(mode="json") for r in kind_rows]
        out.append(HostInstall(host=host, last_apply=rec.last_apply, updated_at=rec.updated_at,
                               extra_kinds=extra, **rows))
    return out


def _first(d: dict[str, Any], *keys: str) -> str | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, str) and v:
            return v
    return None


def timeline(entries: Iterable[LogEntry]) -> list[TimelineEntry]:
    """One row per attestation, in log order, from the signed statements (not from the state)."""
    rows = []
    for e in entries:
        pred = e.statement.get("predicate") or {}
        outcome = pred.get("outcome")
        if outcome is None and "decision" in pred and isinstance(pred["decision"], dict):
            outcome = "allowed" if pred["decision"].get("allowed") else "denied"
        if outcome is None and "allowed" in pred:
            outcome = "allowed" if pred["allowed"] else "denied"
        rows.append(TimelineEntry(
            index=e.index, digest=e.digest, previous=e.previous, predicate_type=e.predicate_type,
            operation=_first(pred, "operation"),
            time=_first(pred, "finished", "finished_at", "time", "timestamp", "started", "evaluated_at"),
            host=_first(pred, "host"), outcome=str(outcome) if outcome is not None else None,
            subjects=len(e.statement.get("subject") or []),
            keyids=[s.keyid for s in e.envelope.signatures],
        ))
    return rows


def model_bom_ref(model: Any, path: str) -> ModelBomRef:
    """The BOM's file plus what a reader of the report needs at a glance: publisher, licence, origin, lineage."""
    return ModelBomRef(model=model.name, version=model.version, path=path, publisher=model.publisher,
                       license=model.license, origin=model.origin, base_models=list(model.base_models))


def build_report(inv: LoadedInventory, state: State, decision: PolicyDecision, pack_digest: str, bundle: str,
                 entries: list[LogEntry], log_path: str | None, drift: DriftSection | None,
                 boms: list[ModelBomRef], *, input_path: str | None = None,
                 trust_roots: list[TrustRootKey] | None = None, signed_by: str | None = None,
                 log_check: LogCheck | None = None) -> AuditReport:
    return AuditReport(
        generated_at=now(), generator=f"sovkit {__version__}", overview=overview(inv, state),
        data_flows=data_flows(inv),
        policy=policy_section(inv, decision, pack_digest, bundle, input_path=input_path, trust_roots=trust_roots),
        installed=installed(inv, state), attestations=timeline(entries), attestation_log=log_path, drift=drift,
        model_boms=boms, signed_by=signed_by, attestation_check=log_check,
    )
