"""What a site sends back to the controller: a summary of one verb's run, signed at the site.

The site's gateway signs it with the site's operator key (DSSE); the controller verifies it with the site's
public key from the fleet file and checks it answers *this* request (site name, verb and a fresh nonce), so
an old or another site's summary cannot be passed off as today's. The summary holds counts, outcomes and
digests — never the site's state, inventory or logs, which stay at the site.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.errors import FleetError, VerificationError
from sovkit.signing import dsse
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer

SUMMARY_PAYLOAD_TYPE = "application/vnd.sovkit.fleet-summary+json"
SUMMARY_FORMAT = "sovkit.dev/fleet-summary/v1"
Verb = Literal["plan", "apply", "status", "audit"]
VERBS: tuple[Verb, ...] = ("plan", "apply", "status", "audit")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostFailure(_M):
    host: str
    task: str
    message: str


class SiteSummary(_M):
    format: Literal["sovkit.dev/fleet-summary/v1"] = "sovkit.dev/fleet-summary/v1"
    site: str
    verb: Verb
    nonce: str
    ok: bool
    started: str
    finished: str
    sovkit_version: str
    error: str | None = Field(default=None, description="the verb's error (message — hint) when it failed")
    state_serial: int | None = None
    policy_allowed: bool | None = None
    findings: dict[str, int] = Field(default_factory=dict, description="deny/warn/waived counts")
    changes: dict[str, int] = Field(default_factory=dict, description="create/update/delete (+held_back) planned")
    rollout: dict[str, Any] | None = None
    batches: int | None = None
    stopped: str | None = None
    failures: list[HostFailure] = Field(default_factory=list)
    endpoints: list[dict[str, Any]] = Field(default_factory=list, description="status: each serving endpoint")
    audit_pack: str | None = Field(default=None, description="audit: where the pack was written at the site")
    audit_manifest_sha256: str | None = None
    attestations: int | None = Field(default=None, description="entries in the site's attestation log")
    attestation_head_sha256: str | None = Field(default=None, description="digest of the log's signed head")


def sign_summary(summary: SiteSummary, signer: Signer) -> str:
    """The summary as one line of JSON: a DSSE envelope signed with the site's key."""
    envelope = dsse.sign(canonical_json(summary.model_dump(mode="json")), SUMMARY_PAYLOAD_TYPE, signer)
    return json.dumps(envelope.to_dict(), separators=(",", ":"))


def verify_summary(raw: str, key: PublicKey, site: str, verb: str, nonce: str) -> SiteSummary:
    """Check the signature (site key), then that the summary answers this request; FleetError otherwise."""
    try:
        envelope = dsse.Envelope.from_json(raw.encode(), f"site {site}'s summary")
        if envelope.payload_type != SUMMARY_PAYLOAD_TYPE:
            raise FleetError(f"site {site} answered with a {envelope.payload_type} envelope, not a summary",
                             "the gateway runs another program than sovkit's fleet agent")
        payload = dsse.verify(envelope, [key])
    except VerificationError as exc:
        raise FleetError(f"site {site}'s summary does not verify with its key: {exc.message}",
                         "the summary was not signed by the site's operator key in the fleet file (wrong key, "
                         "or tampered on the way)") from exc
    try:
        summary = SiteSummary.model_validate_json(payload)
    except ValidationError as exc:
        raise FleetError(f"site {site}'s signed summary is malformed: {exc.errors()[0]['msg']}",
                         "the gateway's sovkit is incompatible with this one; upgrade it") from exc
    for what, got, want in (("site", summary.site, site), ("verb", summary.verb, verb),
                            ("nonce", summary.nonce, nonce)):
        if got != want:
            raise FleetError(f"site {site}'s signed summary answers another request ({what} {got!r}, expected "
                             f"{want!r})", "a replayed or misrouted answer: check the gateway and the fleet file")
    return summary
