"""Saved plans: canonical JSON bound to what they were made against, signed as a DSSE envelope.

``apply FILE`` re-derives every binding and refuses the plan, naming the
binding, when anything moved: the state (lineage, serial), the inventory, the
policy pack, or an artifact in the store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sovkit import __version__
from sovkit.errors import PlanError, VerificationError
from sovkit.fsutil import atomic_write
from sovkit.plan.model import Plan
from sovkit.signing import dsse
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer
from sovkit.state.models import now

PLAN_PAYLOAD_TYPE = "application/vnd.sovkit.plan+json"
PLAN_FORMAT = "sovkit.dev/plan/v1"


class Bindings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    state_lineage: str
    state_serial: int
    inventory_digest: str
    policy_pack_digest: str
    artifact_digests: dict[str, str]


class SavedPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str = PLAN_FORMAT
    created: str
    sovkit_version: str
    inventory: str
    bindings: Bindings
    plan: Plan
    decision: dict[str, Any]

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


def make_saved_plan(inventory: Path, bindings: Bindings, plan: Plan, decision: dict[str, Any]) -> SavedPlan:
    return SavedPlan(created=now(), sovkit_version=__version__, inventory=str(inventory.resolve()),
                     bindings=bindings, plan=plan, decision=decision)


def write_plan(path: Path, saved: SavedPlan, signer: Signer) -> None:
    envelope = dsse.sign(saved.canonical(), PLAN_PAYLOAD_TYPE, signer)
    try:
        atomic_write(path, (json.dumps(envelope.to_dict(), indent=2) + "\n").encode())
    except OSError as exc:
        raise PlanError(f"cannot write plan {path}: {exc.strerror}",
                        "free space (or fix permissions) there and plan again; no plan file was written") from exc


_ENVELOPE_START = re.compile(rb'\A\s*\{\s*"(payload|payloadType|signatures)"\s*:')


def looks_like_plan(path: Path) -> bool:
    """Whether ``path`` is (or was meant to be) a saved plan rather than an inventory.

    A DSSE envelope is JSON starting with one of its own keys; an inventory never does. Only the start is
    looked at, so a plan cut short (a full disk, an interrupted copy) is still recognised as a plan and
    reported as damaged, instead of being read as a broken inventory.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return _ENVELOPE_START.match(head) is not None


def read_plan(path: Path, key: PublicKey) -> SavedPlan:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}", "check the path") from exc
    try:
        json.loads(raw)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise PlanError(f"plan file {path} is damaged or truncated: it is not complete JSON{where}, "
                        f"{len(raw):,} bytes", "the file was cut short or altered; run `sovkit plan -o` "
                        "again (a plan cannot be repaired: it is signed)") from None
    try:
        envelope = dsse.Envelope.from_json(raw, str(path))
        if envelope.payload_type != PLAN_PAYLOAD_TYPE:
            raise PlanError(f"{path} is not a sovkit plan (payload type {envelope.payload_type})",
                            "pass a file written by `sovkit plan -o`")
        payload = dsse.verify(envelope, [key])
    except VerificationError as exc:
        raise PlanError(f"plan {path} failed verification at step {exc.step}: {exc.message}",
                        "the plan was altered or signed with another key; run `sovkit plan -o` again") from exc
    try:
        return SavedPlan.model_validate_json(payload)
    except ValidationError as exc:
        raise PlanError(f"plan {path} is signed but malformed: {exc.errors()[0]['msg']}",
                        "it was written by an incompatible sovkit version; plan again") from exc


def check_bindings(b: Bindings, current: Bindings) -> None:
    """Raise PlanError naming the first binding that no longer holds."""
    if b.state_lineage and b.state_lineage != current.state_lineage:
        raise PlanError(f"plan is stale: state lineage changed ({b.state_lineage} → {current.state_lineage})",
                        "the plan was made against another state; run `sovkit plan` again")
    if b.state_serial != current.state_serial:
        raise PlanError(f"plan is stale: state serial changed ({b.state_serial} → {current.state_serial})",
                        "something was applied since this plan was made; run `sovkit plan` again")
    if b.inventory_digest != current.inventory_digest:
        raise PlanError("plan is stale: the inventory changed since the plan was made "
                        f"({b.inventory_digest[:12]}… → {current.inventory_digest[:12]}…)",
                        "run `sovkit plan` again")
    if b.policy_pack_digest != current.policy_pack_digest:
        raise PlanError("plan is stale: the policy pack changed since the plan was made "
                        f"({b.policy_pack_digest[:12]}… → {current.policy_pack_digest[:12]}…)",
                        "run `sovkit plan` again")
    for path, digest in b.artifact_digests.items():
        now_digest = current.artifact_digests.get(path)
        if now_digest != digest:
            raise PlanError(f"plan is stale: artifact {path} changed in the store "
                            f"({digest[:12]}… → {(now_digest or 'missing')[:12]}…)",
                            "restore the approved artifact or run `sovkit plan` again")
