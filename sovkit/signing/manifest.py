"""The signed manifest: a directory's ``manifest.json`` and a DSSE envelope over exactly those bytes.

Used by the bundle (``sovkit bundle``) and the audit pack (``sovkit audit``); each keeps its own manifest
document (fields, payload type, encoding of ``manifest.json``), this module owns the file pair:

    manifest.json         the manifest, readable (``jq``, ``sha256sum``)
    manifest.dsse.json    DSSE envelope (canonical JSON, one line) whose payload is byte-for-byte manifest.json

Reading never trusts ``manifest.json``: the payload comes from the envelope, is checked against the trusted
keys and the expected payload type, and ``manifest.json`` must equal it. Every problem is collected (a bundle
verification reports them all; the audit pack's ``manifest-signature`` step lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sovkit.errors import VerificationError
from sovkit.signing import dsse
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer

MANIFEST = "manifest.json"
ENVELOPE = "manifest.dsse.json"

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class FileEntry(BaseModel):
    """One file a manifest vouches for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256


def envelope_bytes(envelope: dsse.Envelope) -> bytes:
    """How an envelope is written to a file: canonical JSON and a newline."""
    return canonical_json(envelope.to_dict()) + b"\n"


def write_signed(root: Path, body: bytes, payload_type: str, signer: Signer) -> dsse.Envelope:
    """Write ``manifest.json`` (``body``) and ``manifest.dsse.json`` (``body`` signed as ``payload_type``)."""
    envelope = dsse.sign(body, payload_type, signer)
    (root / MANIFEST).write_bytes(body)
    (root / ENVELOPE).write_bytes(envelope_bytes(envelope))
    return envelope


@dataclass
class SignedManifest:
    """The signed payload (kept when only the signature fails, so the rest can be reported on) and every problem."""

    payload: bytes | None
    problems: list[str] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return self.payload is not None and not self.problems


def read_signed(root: Path, payload_type: str, keys: list[PublicKey], container: str) -> SignedManifest:
    """Read the envelope in ``root`` (a ``container``: "bundle", "pack") and check it; never raises."""
    missing = [n for n in (ENVELOPE, MANIFEST) if not (root / n).exists() and not (root / n).is_symlink()]
    problems = [f"{n} is missing from the {container}" for n in missing]
    if ENVELOPE in missing:
        return SignedManifest(None, problems)
    try:
        envelope = dsse.Envelope.from_json((root / ENVELOPE).read_bytes(), ENVELOPE)
        payload = envelope.payload_bytes()
    except OSError as exc:
        return SignedManifest(None, [*problems, f"{ENVELOPE}: cannot read ({exc.strerror})"])
    except VerificationError as exc:
        return SignedManifest(None, [*problems, exc.message])
    if envelope.payload_type != payload_type:
        problems.append(f"{ENVELOPE}: payload type {envelope.payload_type!r}, expected {payload_type!r}")
    try:
        dsse.verify(envelope, keys)
    except VerificationError as exc:
        problems.append(f"manifest signature: {exc.message}")
    if MANIFEST not in missing:
        try:
            readable = (root / MANIFEST).read_bytes()
        except OSError as exc:
            problems.append(f"{MANIFEST}: cannot read ({exc.strerror})")
        else:
            if readable != payload:
                problems.append(f"{MANIFEST} was edited after signing: it differs from the signed manifest in "
                                f"{ENVELOPE}")
    return SignedManifest(payload, problems)
