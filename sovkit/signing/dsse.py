"""DSSE envelopes: sign and verify with the pre-authentication encoding.

Spec: https://github.com/secure-systems-lab/dsse (protocol.md). The signature
covers ``PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.errors import VerificationError
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    keyid: str
    sig: str


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    payload: str
    payload_type: str = Field(alias="payloadType")
    signatures: list[Signature]

    def payload_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise VerificationError("envelope payload is not valid base64", step="envelope-format") from exc

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)

    def to_json(self) -> str:
        # ensure_ascii=False like every other canonical document; an envelope's fields are base64, hex key
        # ids and sovkit's own ASCII payload types, so the bytes are what they always were
        return canonical_json(self.to_dict()).decode()

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<envelope>") -> Envelope:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            raise VerificationError(
                f"{source}: not a DSSE envelope ({where}: {first['msg']})",
                "pass a DSSE JSON envelope written by sovkit or another DSSE signer",
                step="envelope-format",
            ) from exc


def sign(payload: bytes, payload_type: str, signer: Signer) -> Envelope:
    sig = signer.sign(pae(payload_type, payload))
    return Envelope(
        payload=base64.b64encode(payload).decode(),
        payloadType=payload_type,
        signatures=[Signature(keyid=signer.keyid, sig=base64.b64encode(sig).decode())],
    )


def verify(envelope: Envelope, keys: list[PublicKey], threshold: int = 1) -> bytes:
    """Return the payload when at least ``threshold`` distinct trusted keys signed it.

    Raises :class:`VerificationError` naming the step that failed: unknown key
    id (no trusted key matches) or bad signature (a matching key, wrong bytes).
    """
    payload = envelope.payload_bytes()
    if not envelope.signatures:
        raise VerificationError("envelope carries no signature", step="signature")
    by_id = {k.keyid: k for k in keys}
    message = pae(envelope.payload_type, payload)
    good: set[str] = set()
    known = False
    for s in envelope.signatures:
        key = by_id.get(s.keyid)
        if key is None:
            continue
        known = True
        try:
            raw = base64.b64decode(s.sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        if key.verify(raw, message):
            good.add(s.keyid)
    if not known:
        ids = ", ".join(s.keyid[:16] for s in envelope.signatures)
        raise VerificationError(
            f"signed by an unknown key (keyid {ids}…)",
            "pass the signer's public key with --key",
            step="keyid",
        )
    if len(good) < threshold:
        raise VerificationError(
            "signature does not verify: the envelope was altered or signed by another key",
            "obtain an untampered copy from the site",
            step="signature",
        )
    return payload
