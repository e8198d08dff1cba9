"""The audit report as data: one model feeds both report.json and report.html, so they cannot disagree.

``report.json`` is this model dumped as JSON; ``REPORT_SCHEMA`` names its
version so a regulator's tooling can refuse a shape it does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from sovkit.components.base import Provenance
from sovkit.components.firmware import InstalledFirmware
from sovkit.components.model import InstalledModel
from sovkit.components.runtime import InstalledRuntime
from sovkit.components.serving import InstalledServing
from sovkit.inventory.models import BaseModelRef

__all__ = ["REPORT_SCHEMA", "AuditReport", "ControlResult", "ControlSection", "DataFlow", "DeploymentSummary",
           "DriftChange", "DriftSection", "Finding",
           "HostInstall", "HostSummary", "InstalledFirmware", "InstalledModel", "InstalledRuntime",
           "InstalledServing", "LogCheck", "ModelBomRef", "Overview", "PolicySection", "Provenance",
           "RuleEvidence", "RuleResult", "TimelineEntry", "TrustRootKey", "UncoveredControl", "WaiverSummary"]

REPORT_SCHEMA = "https://sovkit.dev/audit-report/v1"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostSummary(_M):
    name: str
    rack: str
    address: str
    arch: str
    cpu: str
    accelerators: list[str] = []


class DeploymentSummary(_M):
    name: str
    model: str
    runtime: str
    hosts: list[str]
    role: str


class Overview(_M):
    site: str
    description: str
    operator: str
    country: str
    region: str | None
    allowed_jurisdictions: list[str]
    air_gapped: bool
    allowed_egress: list[str]
    transfers: list[dict[str, str]]
    inventory_digest: str
    state_lineage: str
    state_serial: int
    racks: list[dict[str, Any]]
    hosts: list[HostSummary]
    deployments: list[DeploymentSummary]


class DataFlow(_M):
    """Somewhere data goes or is kept, with where that is and whether residency allows it."""

    category: Literal["artifact-store", "data-store", "backup", "endpoint", "telemetry", "log-sink",
                      "model-registry"]
    name: str
    target: str
    jurisdiction: str
    personal_data: bool = False
    detail: str = ""
    residency: Literal["inside", "transfer", "outside"]
    transfer_basis: str | None = None


class Finding(_M):
    id: str
    severity: str
    msg: str
    resource: str
    remediation: str = ""
    waived: bool = False
    waiver_reason: str | None = None
    waiver_expires: str | None = None


class WaiverSummary(_M):
    rule: str
    resource: str
    reason: str
    expires: str
    expired: bool


class TrustRootKey(_M):
    """A trust-root public key the policy input's signature checks used, as copied into the pack."""

    section: Literal["publishers", "vendors"]
    name: str
    keyid: str | None = None
    path: str | None = Field(default=None, description="the key's copy in the pack; None when the inventory's key "
                                                       "file was missing or not a public key")


class PolicySection(_M):
    allowed: bool
    pack_digest: str
    bundle: str
    findings: list[Finding]
    waivers: list[WaiverSummary]
    input: str | None = Field(default=None, description="the exact input document the decision was made on")
    trust_roots: list[TrustRootKey] = []


class HostInstall(_M):
    host: str
    last_apply: str | None
    updated_at: str | None
    firmware: list[InstalledFirmware] = []
    runtimes: list[InstalledRuntime] = []
    models: list[InstalledModel] = []
    serving: list[InstalledServing] = []
    extra_kinds: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="rows of component kinds registered beyond the built-in ones: kind -> "
                                          "rows (left out of report.json while empty)")

    @model_serializer(mode="wrap")
    def _drop_empty_extra(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict) and not data.get("extra_kinds"):
            data.pop("extra_kinds", None)
        return data


class TimelineEntry(_M):
    index: int
    digest: str
    previous: str | None
    predicate_type: str
    operation: str | None
    time: str | None
    host: str | None
    outcome: str | None
    subjects: int
    keyids: list[str]


class DriftChange(_M):
    host: str
    component: str
    name: str
    reason: str


class DriftSection(_M):
    recorded_at: str
    unreachable: dict[str, str]
    changes: list[DriftChange]


class ModelBomRef(_M):
    model: str
    version: str
    path: str
    publisher: str = ""
    license: str = ""
    origin: str = ""
    base_models: list[BaseModelRef] = []


class LogCheck(_M):
    """The copied attestation log verified when the pack was written, with the key that signs the pack."""

    verified: bool
    keyids: list[str]
    entries: int
    problems: list[str] = []


class RuleEvidence(_M):
    """What a rule was checked against for one resource: the artifact digests and the attestations naming them."""

    resource: str
    digests: list[str] = []
    attestations: list[str] = Field(default=[], description="log entries whose subjects carry one of the digests: "
                                                            "'<index> sha256:<entry digest>'")


class RuleResult(_M):
    """One policy rule as evaluated for the pack: fail (a denial), waived (only waived denials), warn, or pass."""

    rule: str
    title: str = ""
    result: Literal["pass", "warn", "fail", "waived"]
    controls: list[str] = []
    resources: list[str] = Field(default=[], description="resources the rule's findings name")
    evidence: list[RuleEvidence] = []


class ControlResult(_M):
    catalog: str
    control: str
    ref: str
    title: str
    status: Literal["satisfied", "not-satisfied"]
    rules: list[str]


class UncoveredControl(_M):
    catalog: str
    control: str
    ref: str
    title: str
    reason: str


class ControlSection(_M):
    """The control view: control -> rules -> result -> evidence, from the control mapping shipped with the pack."""

    mapping: str = Field(description="the control mapping's copy in the pack")
    rules: list[RuleResult]
    controls: list[ControlResult]
    uncovered: list[UncoveredControl] = []


class AuditReport(_M):
    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    generated_at: str
    generator: str
    overview: Overview
    data_flows: list[DataFlow]
    policy: PolicySection
    installed: list[HostInstall]
    attestations: list[TimelineEntry]
    attestation_log: str | None
    drift: DriftSection | None
    model_boms: list[ModelBomRef]
    signed_by: str | None = Field(default=None, description="keyid of the key that signs the pack's manifest")
    attestation_check: LogCheck | None = None
    controls: ControlSection | None = Field(default=None, description="the control view (packs written before "
                                                                        "OSCAL support have none)")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"
