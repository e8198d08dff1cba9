"""The predicates sovkit attests: what was provisioned on a host, what the policy decided, what drifted.

Both are in-toto Statement v1 predicates (field by field in docs/attestations.md). Models here
are the schema: statements are built from them, so a field cannot be forgotten or misspelt.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sovkit.plan.rollout import Rollout
from sovkit.provision.serving import ServingCheck
from sovkit.signing.statement import Statement, Subject

PROVISION_PREDICATE = "https://sovkit.dev/attestation/provision/v1"
POLICY_DECISION_PREDICATE = "https://sovkit.dev/attestation/policy-decision/v1"
DRIFT_PREDICATE = "https://sovkit.dev/attestation/drift/v1"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceFirmware(_M):
    """One accelerator device and the firmware version read back from it after flashing."""

    kind: str
    device: str
    firmware: str = Field(description="version reported by the device itself (vendor tool read-back)")
    image_sha256: str


class RuntimeVersion(_M):
    name: str
    version: str
    package: str


class ModelSignatureResult(_M):
    """The publisher-signature check made by preflight before the model was installed."""

    verified: bool
    signer: str
    keyid: str | None = None
    format: str = "dsse"
    reason: str = ""


class InstalledModel(_M):
    name: str
    version: str
    previous: str | None = None
    signature: ModelSignatureResult | None = None


class PolicyRef(_M):
    pack_digest: str
    allowed: bool
    findings: int = 0
    waived: int = 0


class ProvisionPredicate(_M):
    """Per host per apply (or rollback): what is installed now and under which plan and decision."""

    operation: Literal["apply", "rollback"]
    site: str
    host: str
    devices: list[DeviceFirmware]
    runtimes: list[RuntimeVersion]
    models: list[InstalledModel]
    serving: dict[str, str] = Field(default_factory=dict, description="deployment -> config sha256")
    serving_checks: list[ServingCheck] = Field(
        default_factory=list, description="readiness and smoke checks of the processes this run (re)started on "
        "this host: phase apply, and phase rollback when a failed check was rolled back")
    plan_digest: str | None
    inventory_digest: str
    policy: PolicyRef
    started: str
    finished: str
    run_id: str
    outcome: Literal["success", "failed", "unreachable", "not-started"]
    error: str | None = None
    changes: list[dict[str, Any]] = Field(default_factory=list, description="the plan's changes for this host")
    rollout: Rollout | None = Field(default=None, description="the plan's rollout controls, when any were given")
    batch: int | None = Field(default=None, description="which batch of the rollout ran this host (1-based)")


class PolicyFinding(_M):
    model_config = ConfigDict(extra="allow", frozen=True)
    id: str | None = None
    severity: str | None = None
    resource: str | None = None
    msg: str | None = None
    waived: bool = False


class PolicyDecisionPredicate(_M):
    """For every `check` and `plan`: the decision and every finding, waived ones included."""

    operation: str
    site: str
    inventory_digest: str
    pack_digest: str
    allowed: bool
    findings: list[dict[str, Any]]
    engine: str | None = None
    time: str


class DriftChange(_M):
    """One difference between what a host reports and what the state recorded."""

    component: str
    name: str
    action: str
    reason: str


class DriftPredicate(_M):
    """For every `refresh`: which hosts were read back, what differed from the recorded state, and which serial
    the observation was recorded as (so drift repaired or accepted later can be traced to this read-back)."""

    operation: Literal["refresh"] = "refresh"
    site: str
    inventory_digest: str
    observed: list[str] = Field(description="hosts read back (sorted)")
    unreachable: dict[str, str] = Field(default_factory=dict, description="host -> why it was not observed")
    drift: dict[str, list[DriftChange]] = Field(description="host -> differences; hosts without drift omitted")
    state_lineage: str | None
    state_serial_before: int
    state_serial_after: int
    time: str


def provision_statement(subjects: dict[str, str], predicate: ProvisionPredicate) -> Statement:
    """``subjects`` maps artifact name -> sha256 (every artifact installed on the host)."""
    return Statement(
        subject=[Subject(name=n, digest={"sha256": d}) for n, d in sorted(subjects.items())],
        predicateType=PROVISION_PREDICATE,
        predicate=predicate.model_dump(mode="json"),
    )


def policy_decision_statement(predicate: PolicyDecisionPredicate) -> Statement:
    """The subject is the inventory (its canonical digest): the thing the decision is about."""
    digest = predicate.inventory_digest.removeprefix("sha256:")
    return Statement(
        subject=[Subject(name=f"inventory:{predicate.site}", digest={"sha256": digest})],
        predicateType=POLICY_DECISION_PREDICATE,
        predicate=predicate.model_dump(mode="json"),
    )


def drift_statement(predicate: DriftPredicate) -> Statement:
    """The subject is the inventory, like a policy decision: the site whose hosts were read back."""
    digest = predicate.inventory_digest.removeprefix("sha256:")
    return Statement(
        subject=[Subject(name=f"inventory:{predicate.site}", digest={"sha256": digest})],
        predicateType=DRIFT_PREDICATE,
        predicate=predicate.model_dump(mode="json"),
    )
