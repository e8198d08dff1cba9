"""The fleet agent: what a site's gateway runs when the controller drives the site (`sovkit fleet agent`).

It runs one verb (plan, apply, status, audit) with the site's own inventory, state, artifact store and
attestation log — everything stays at the site — and returns a summary signed with the site's operator key
for the controller. A verb that fails is still summarised (``ok: false`` and the error), so the controller
always learns what happened; only a site that cannot sign at all answers with nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime

from sovkit import __version__
from sovkit.attest import log as attest_log
from sovkit.attest.log import HEAD_FILE
from sovkit.components.host import desired_site
from sovkit.errors import SovkitError
from sovkit.fleet.summary import HostFailure, SiteSummary, Verb
from sovkit.plan.rollout import Rollout
from sovkit.provision.endpoints import serving_status
from sovkit.signing.manifest import MANIFEST
from sovkit.state.models import now
from sovkit.workflow import apply_inventory, make_plan, record_policy_decision
from sovkit.workspace import Workspace


def _log_facts(ws: Workspace) -> dict[str, object]:
    head = ws.attestations / HEAD_FILE
    try:
        count = len(attest_log.read_log(ws.attestations))
    except SovkitError:
        count = None
    digest = hashlib.sha256(head.read_bytes()).hexdigest() if head.is_file() else None
    return {"attestations": count, "attestation_head_sha256": digest}


def site_summary(ws: Workspace | None, site: str, verb: Verb, nonce: str, rollout: Rollout,
                 open_error: SovkitError | None = None) -> SiteSummary:
    """Run ``verb`` at the site and summarise it. ``ws`` is None when the site could not even be opened."""
    started = now()
    base: dict[str, object] = {"site": site, "verb": verb, "nonce": nonce, "started": started,
                               "sovkit_version": __version__}
    if ws is None:
        err = open_error or SovkitError("the site could not be opened")
        return SiteSummary.model_validate({**base, "ok": False, "finished": now(), "error": _text(err)})
    base["site"] = ws.inventory.site.metadata.name
    fields: dict[str, object] = {}
    try:
        ok = _run(ws, verb, rollout, fields)
        error = None
    except SovkitError as exc:
        ok, error = False, _text(exc)
    with contextlib.suppress(SovkitError):
        fields["state_serial"] = ws.store.read().serial
    fields.update(_log_facts(ws))
    return SiteSummary.model_validate({**base, **fields, "ok": ok, "error": error, "finished": now()})


def _text(exc: SovkitError) -> str:
    return f"{exc.message} — {exc.hint}" if exc.hint else exc.message


def _run(ws: Workspace, verb: Verb, rollout: Rollout, out: dict[str, object]) -> bool:
    if verb == "plan":
        planned = make_plan(ws, rollout=rollout)
        if ws.signer is not None:
            record_policy_decision(ws, planned.decision, "plan")
        out.update(policy_allowed=planned.decision.allowed, findings=_findings(planned.decision.summary()),
                   changes={**planned.plan.summary(), "held_back": planned.plan.held_back},
                   rollout=planned.plan.rollout.model_dump(mode="json"))
        return planned.decision.allowed
    if verb == "apply":
        outcome = apply_inventory(ws, confirm=lambda _: True, rollout=rollout)
        planned = outcome.planned
        out.update(policy_allowed=planned.decision.allowed, findings=_findings(planned.decision.summary()),
                   changes={**planned.plan.summary(), "held_back": planned.plan.held_back},
                   rollout=planned.plan.rollout.model_dump(mode="json"))
        report = outcome.report
        if report is None:
            return True
        out.update(batches=len(report.batches), stopped=report.stopped,
                   failures=[HostFailure(host=h, task=t, message=m) for h, t, m in report.failures])
        return report.ok
    if verb == "status":
        endpoints = serving_status(desired_site(ws.inventory), ws.store.read(), 10.0)
        out["endpoints"] = [e.model_dump(mode="json", include={"host", "name", "role", "endpoint", "healthy",
                                                                "model_version", "latency_ms", "error"})
                            for e in endpoints]
        return all(e.healthy for e in endpoints)
    from sovkit.audit.pack import build_audit_pack  # CycloneDX loads only when auditing

    if ws.signer is None:
        raise SovkitError("the audit pack must be signed", "give the site's operator key (--key)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    pack = build_audit_pack(ws, ws.directory / "audit" / stamp, ws.signer, ws.extra_policies)
    manifest = pack.path / MANIFEST
    out.update(audit_pack=str(pack.path),
               audit_manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file()
               else None)
    return True


def _findings(summary: dict[str, object]) -> dict[str, int]:
    found = summary.get("findings")
    counts = {"deny": 0, "warn": 0, "waived": 0}
    for f in found if isinstance(found, list) else []:
        if isinstance(f, dict):
            if f.get("waived"):
                counts["waived"] += 1
            elif f.get("severity") in counts:
                counts[str(f["severity"])] += 1
    return counts
