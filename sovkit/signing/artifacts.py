"""Detached signatures over artifacts (firmware images, runtime packages, model files).

Format: a DSSE envelope whose payload is an in-toto Statement v1 listing every
file as a subject (name = path in the artifact store, sha256 digest), with
predicate type ``https://sovkit.dev/attestation/artifact-signature/v1``. The
signer is the vendor (firmware, runtime) or publisher (model) named in the
inventory's trust roots. The predicate names what was signed: ``{"kind", "name",
"version"}``, and optionally when (``"signed_at"``: the signer's own claim, used to judge the signer's trust
root by its validity window and revocation). Verification checks the envelope against that key, that the signed
digests are exactly the digests the inventory pins, and that the signed kind, name
and version are exactly the ones the inventory claims: a signature binds the label
too, so an inventory cannot relabel a signed artifact (say a model's version) and
keep the publisher's "verified".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from sovkit.errors import VerificationError
from sovkit.signing import dsse
from sovkit.signing.keys import PublicKey, Signer
from sovkit.signing.statement import ARTIFACT_SIGNATURE_PREDICATE, Statement, Subject


def sign_artifacts(
    files: dict[str, str], signer: Signer, kind: str, name: str, version: str, signed_at: str | None = None
) -> dsse.Envelope:
    """Sign ``{store path: sha256}`` as one statement (``signed_at``: when, as the signer states it)."""
    predicate = {"kind": kind, "name": name, "version": version}
    if signed_at is not None:
        predicate["signed_at"] = signed_at
    statement = Statement(
        subject=[Subject(name=p, digest={"sha256": d}) for p, d in sorted(files.items())],
        predicateType=ARTIFACT_SIGNATURE_PREDICATE,
        predicate=predicate,
    )
    return dsse.sign(statement.to_bytes(), dsse.IN_TOTO_PAYLOAD_TYPE, signer)


@dataclass(frozen=True)
class Claim:
    """What the inventory says an artifact is; the signed statement must say the same."""

    kind: str
    name: str
    version: str


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of checking one artifact signature (recorded in policy input and attestations)."""

    verified: bool
    keyid: str | None
    signer: str
    reason: str
    signed_at: str | None = None  # the signing time the signed statement states, if any


def verify_artifact_signature(
    signature_file: Path, expected: dict[str, str], key: PublicKey, signer_name: str, claim: Claim | None
) -> SignatureCheck:
    """Check ``signature_file`` against ``key``, the pinned ``{path: sha256}`` and ``claim``; never raises.

    ``claim`` is None only for a standalone check of files with no inventory label (``verify_model``
    on a bare directory); every inventory artifact passes its kind, name and version.
    """
    opened = open_artifact_signature(signature_file, key, signer_name)
    if isinstance(opened, SignatureCheck):
        return opened
    return check_signed_statement(opened, expected, key, signer_name, claim)


def open_artifact_signature(signature_file: Path, key: PublicKey, signer_name: str) -> Statement | SignatureCheck:
    """The statement ``key`` signed in ``signature_file`` (read once), or the failed check saying why."""
    try:
        envelope = dsse.Envelope.from_json(signature_file.read_bytes(), str(signature_file))
        payload = dsse.verify(envelope, [key])
        statement = Statement.model_validate(json.loads(payload))
    except OSError as exc:
        return SignatureCheck(False, None, signer_name, f"cannot read {signature_file.name}: {exc.strerror}")
    except VerificationError as exc:
        return SignatureCheck(False, key.keyid, signer_name, exc.message)
    except (ValueError, ValidationError):
        return SignatureCheck(False, key.keyid, signer_name, "signed payload is not an in-toto statement")
    if statement.predicate_type != ARTIFACT_SIGNATURE_PREDICATE:
        return SignatureCheck(False, key.keyid, signer_name, f"unexpected predicate {statement.predicate_type}")
    return statement


def signed_digests(statement: Statement) -> dict[str, str | None]:
    """``{subject name: sha256}`` as the statement signs them."""
    return {s.name: s.digest.get("sha256") for s in statement.subject}


def check_signed_statement(statement: Statement, expected: dict[str, str], key: PublicKey, signer_name: str,
                           claim: Claim | None) -> SignatureCheck:
    """A verified statement against the pinned ``{path: sha256}`` and the inventory's ``claim``."""
    signed = signed_digests(statement)
    for path, digest in expected.items():
        if signed.get(path) != digest:
            return SignatureCheck(False, key.keyid, signer_name, f"{path}: signed digest differs from the pinned one")
    if claim is not None:
        problem = _label_problem(statement.predicate, claim)
        if problem:
            return SignatureCheck(False, key.keyid, signer_name, problem)
    at = statement.predicate.get("signed_at")
    return SignatureCheck(True, key.keyid, signer_name, "ok", at if isinstance(at, str) else None)


def _label_problem(predicate: dict[str, object], claim: Claim) -> str | None:
    signed = Claim(str(predicate.get("kind", "")), str(predicate.get("name", "")), str(predicate.get("version", "")))
    if signed == claim:
        return None
    return (f"signed for {signed.kind or '?'} {signed.name or '?'} version {signed.version or '?'}, "
            f"the inventory claims {claim.kind} {claim.name} version {claim.version}")
