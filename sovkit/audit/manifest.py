"""The pack manifest: every file's path, size and sha256, signed as a DSSE envelope.

``manifest.json`` is the manifest itself (readable with ``jq`` and checkable
with ``sha256sum``); ``manifest.dsse.json`` is a DSSE envelope whose payload is
exactly those bytes, so any DSSE verifier (securesystemslib) can check it
(the file pair is :mod:`sovkit.signing.manifest`, shared with the bundle).
Neither file is listed in the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.digest import sha256_file
from sovkit.signing.keys import PublicKey, Signer
from sovkit.signing.manifest import ENVELOPE, MANIFEST, FileEntry, read_signed, write_signed

PAYLOAD_TYPE = "application/vnd.sovkit.audit-manifest+json"
MANIFEST_SCHEMA = "https://sovkit.dev/audit-manifest/v1"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    schema_: str = Field(default=MANIFEST_SCHEMA, alias="schema")
    site: str
    created: str
    files: list[FileEntry]

    def to_bytes(self) -> bytes:
        """Indented for reading (the pack is read by people with jq); the signature is over these exact bytes."""
        return (json.dumps(self.model_dump(by_alias=True), indent=2, sort_keys=True) + "\n").encode()


def pack_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a POSIX relative path, except the manifest and its signature."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel in (MANIFEST, ENVELOPE) or (p.is_dir() and not p.is_symlink()):
            continue
        out.append(rel)
    return out


def make_manifest(root: Path, site: str, created: str) -> Manifest:
    entries = [FileEntry(path=rel, size=(root / rel).stat().st_size, sha256=sha256_file(root / rel))
               for rel in pack_files(root)]
    return Manifest(site=site, created=created, files=entries)


def write_signed_manifest(root: Path, manifest: Manifest, signer: Signer) -> None:
    write_signed(root, manifest.to_bytes(), PAYLOAD_TYPE, signer)


def check_signed_manifest(root: Path, keys: list[PublicKey]) -> tuple[Manifest | None, list[str]]:
    """The manifest when its signature checks out, else None; and every problem found."""
    checked = read_signed(root, PAYLOAD_TYPE, keys, container="pack")
    if not checked.trusted or checked.payload is None:
        return None, checked.problems
    try:
        return Manifest.model_validate_json(checked.payload), []
    except ValidationError as exc:
        return None, [f"{MANIFEST}: not a sovkit audit manifest ({exc.error_count()} problems)"]
