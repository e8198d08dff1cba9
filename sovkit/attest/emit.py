"""Appending sovkit's own attestations to the log: provision (apply, rollback), policy decisions, drift.

One function per kind of event, so apply and rollback (and any later operation) build and append their
statements the same way, with the same error when the log cannot take them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sovkit.attest import log as attest_log
from sovkit.attest.predicates import (
    DriftChange,
    DriftPredicate,
    PolicyDecisionPredicate,
    drift_statement,
    policy_decision_statement,
)
from sovkit.attest.provenance import ApplyContext, provision_statements
from sovkit.components.host import DesiredHost
from sovkit.errors import SovkitError
from sovkit.plan.model import Plan
from sovkit.provision.apply import ApplyReport
from sovkit.signing.keys import Signer
from sovkit.state.models import now


def attest_provision(log_dir: Path, report: ApplyReport, ctx: ApplyContext, hosts: list[str],
                     desired: dict[str, DesiredHost], signer: Signer) -> list[attest_log.LogEntry]:
    """One provision statement per host touched; a full disk is reported as the state being ahead of the log."""
    try:
        return attest_log.append(log_dir, provision_statements(report, ctx, hosts, desired), signer)
    except OSError as exc:
        raise SovkitError(
            f"{ctx.operation} {report.run_id} completed and its state is recorded (serial {report.state.serial}), "
            f"but its attestations could not be written to {log_dir}: {exc.strerror}",
            f"free space there; the log is unchanged, so `sovkit attest verify` shows no entry for this "
            f"{ctx.operation}") from exc


def attest_policy_decision(log_dir: Path, *, operation: str, site: str, inventory_digest: str, pack_digest: str,
                           summary: dict[str, Any], signer: Signer) -> attest_log.LogEntry:
    """Every `check` and `plan` records the decision and all its findings (waived ones too)."""
    predicate = PolicyDecisionPredicate(
        operation=operation, site=site, inventory_digest=inventory_digest, pack_digest=pack_digest,
        allowed=bool(summary.get("allowed")), findings=list(summary.get("findings", [])),
        engine=summary.get("engine"), time=now(),
    )
    return attest_log.append(log_dir, [policy_decision_statement(predicate)], signer)[0]


def attest_drift(log_dir: Path, *, site: str, inventory_digest: str, observed: list[str],
                 unreachable: dict[str, str], drift: Plan, lineage: str | None, serial_before: int,
                 serial_after: int, signer: Signer) -> attest_log.LogEntry:
    """A refresh's read-back as a signed statement: what was observed and how it differed from the record."""
    per_host: dict[str, list[DriftChange]] = {}
    for c in drift.changes:
        per_host.setdefault(c.host, []).append(
            DriftChange(component=c.component, name=c.name, action=c.action, reason=c.reason))
    predicate = DriftPredicate(
        site=site, inventory_digest=inventory_digest, observed=sorted(observed), unreachable=dict(unreachable),
        drift=per_host, state_lineage=lineage, state_serial_before=serial_before, state_serial_after=serial_after,
        time=now(),
    )
    try:
        return attest_log.append(log_dir, [drift_statement(predicate)], signer)[0]
    except OSError as exc:
        raise SovkitError(
            f"refresh recorded the observed state (serial {serial_after}), but its drift attestation could not "
            f"be written to {log_dir}: {exc.strerror}",
            "free space there and run `sovkit refresh` again; the log is unchanged") from exc
