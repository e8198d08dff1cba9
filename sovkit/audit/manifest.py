"""The pack manifest: every file's path, size and sha256, signed as a DSSE envelope.

``manifest.json`` is the manifest itself (readable with ``jq`` and checkable
with ``sha256sum``); ``manifest.dsse.json`` is a DSSE envelope whose payload is
exactly those bytes, so any DSSE verifier (securesystemslib) can check it.
Neither file is listed in the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.digest import sha256_file
from sovkit.errors import VerificationError
from sovkit.signing import dsse
from sovkit.signing.keys import PublicKey, Signer

MANIFEST = "manifest.json"
SIGNATURE = "manifest.dsse.json"
PAYLOAD_TYPE = "application/vnd.sovkit.audit-manifest+json"
MANIFEST_SCHEMA = "https://sovkit.dev/audit-manifest/v1"
_CHUNK = 1 << 20


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    schema_: str = Field(default=MANIFEST_SCHEMA, alias="schema")
    site: str
    created: str
    files: list[FileEntry]

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(by_alias=True), indent=2, sort_keys=True) + "\n").encode()



def pack_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a POSIX relative path, except the manifest and its signature."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel in (MANIFEST, SIGNATURE) or (p.is_dir() and not p.is_symlink()):
            continue
        out.append(rel)
    return out


def make_manifest(root: Path, site: str, created: str) -> Manifest:
    entries = [FileEntry(path=rel, size=(root / rel).stat().st_size, sha256=sha256_file(root / rel))
               for rel in pack_files(root)]
    return Manifest(site=site, created=created, files=entries)


def write_signed_manifest(root: Path, manifest: Manifest, signer: Signer) -> None:
    body = manifest.to_bytes()
    (root / MANIFEST).write_bytes(body)
    envelope = dsse.sign(body, PAYLOAD_TYPE, signer)
    (root / SIGNATURE).write_text(json.dumps(envelope.to_dict(), indent=2, sort_keys=True) + "\n")


def read_signed_manifest(root: Path, keys: list[PublicKey]) -> Manifest:
    """Check the signature over manifest.json and return the manifest; raises VerificationError (step named)."""
    step = "manifest-signature"
    for name in (MANIFEST, SIGNATURE):
        if not (root / name).is_file():
            raise VerificationError(f"{name} is missing from the pack", "the pack is incomplete; ask for a new copy",
                                    step=step)
    envelope = dsse.Envelope.from_json((root / SIGNATURE).read_bytes(), SIGNATURE)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"{SIGNATURE}: payload type {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}",
                                step=step)
    try:
        signed = dsse.verify(envelope, keys)
    except VerificationError as exc:
        raise VerificationError(f"manifest signature: {exc.message}", exc.hint, step=step) from exc
    if signed != (root / MANIFEST).read_bytes():
        raise VerificationError(f"{MANIFEST} differs from the signed manifest: it was edited after signing",
                                "obtain an untampered copy of the pack", step=step)
    try:
        return Manifest.model_validate_json(signed)
    except ValidationError as exc:
        raise VerificationError(f"{MANIFEST}: not a sovkit audit manifest ({exc.error_count()} problems)",
                                step=step) from exc
