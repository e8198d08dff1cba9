"""The bundle format: directory layout, the manifest model, its DSSE signature, and path rules.

A bundle is a directory::

    manifest.dsse.json        DSSE envelope; the payload is the canonical manifest JSON (authoritative)
    manifest.json             the same bytes, readable without decoding (must equal the signed payload)
    blobs/sha256/<hex>        one file per distinct content, named by its sha256

Each manifest entry maps a logical path to a blob. The first path segment says
where an entry goes on the site: ``artifacts/`` into the artifact store, the
rest (``inventory/``, ``policies/``, ``templates/``, ``wheels/``) into a site
directory. Paths are checked by :func:`path_problem`, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.bundle.errors import BundleInvalid
from sovkit.errors import BundleError
from sovkit.signing import dsse, paths
from sovkit.signing import manifest as signed
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer
from sovkit.signing.manifest import FileEntry, Sha256

FORMAT: Literal["sovkit.dev/bundle/v1"] = "sovkit.dev/bundle/v1"
PAYLOAD_TYPE = "application/vnd.sovkit.bundle-manifest+json"
ENVELOPE = signed.ENVELOPE
READABLE = signed.MANIFEST
BLOB_DIR = "blobs/sha256"
NAMESPACES = ("artifacts", "inventory", "policies", "templates", "wheels")

Kind = Literal[
    "firmware", "firmware-signature", "runtime", "runtime-signature", "model", "model-signature",
    "trust-root", "inventory", "policy", "template", "wheel", "driver", "driver-signature",
]


class Entry(FileEntry):
    """One file the site receives: where it goes, what it is, and which inventory items need it."""

    kind: Kind
    items: list[str] = Field(default_factory=list)
    carried: bool = Field(default=True, description="False in a differential bundle: the site already has it.")


class Target(BaseModel):
    """The machine the carried wheels install on; the air-gapped bootstrap refuses any other."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    platform: str = Field(pattern=r"^[a-z0-9]+/[a-z0-9_]+$", description="OS/machine, e.g. linux/aarch64.")
    python: str = Field(pattern=r"^3\.[0-9]{1,2}$", description="Python major.minor the wheels are built for.")
    implementation: Literal["cp"] = "cp"
    glibc: str | None = Field(default=None, pattern=r"^[0-9]+\.[0-9]+$",
                              description="Oldest glibc every carried binary wheel runs on (None: none needs one).")

    def label(self) -> str:
        """``linux/aarch64 cp311``: how messages name a target."""
        return f"{self.platform} {self.implementation}{self.python.replace('.', '')}"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["sovkit.dev/bundle/v1"] = FORMAT
    site: str
    inventory_digest: Sha256
    created: str
    sovkit_version: str
    since: Sha256 | None = Field(default=None, description="sha256 of the manifest this bundle is relative to.")
    entries: list[Entry]
    target: Target | None = Field(default=None, description="Platform and Python of the carried wheels (none: "
                                  "no wheels, or a bundle made before targets were recorded).")

    def to_bytes(self) -> bytes:
        data = self.model_dump(mode="json")
        if data["target"] is None:  # absent, not null: manifests written before targets existed keep their digest
            del data["target"]
        return canonical_json(data) + b"\n"  # the format ends the file with a newline

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def carried_blobs(self) -> dict[str, int]:
        """``{sha256: size}`` of the blobs this bundle itself carries."""
        return {e.sha256: e.size for e in self.entries if e.carried}

    def all_digests(self) -> set[str]:
        """Every content the site has once this bundle is imported (carried or already there)."""
        return {e.sha256 for e in self.entries}


def blob_path(root: Path, digest: str) -> Path:
    return root / BLOB_DIR / digest


def path_problem(path: str) -> str | None:
    """Why a logical path is unsafe to write on the site, or None when it is fine."""
    problem = paths.path_problem(path, refuse_reserved=False)
    if problem is None and (path.split("/")[0] not in NAMESPACES or "/" not in path):
        problem = f"{path!r} is outside the known top-level directories ({', '.join(NAMESPACES)})"
    return problem or paths.path_problem(path)  # then sovkit's reserved names, and the length limits


def write_manifest(root: Path, manifest: Manifest, signer: Signer) -> None:
    signed.write_signed(root, manifest.to_bytes(), PAYLOAD_TYPE, signer)


def parse_manifest(payload: bytes, source: str) -> Manifest:
    try:
        return Manifest.model_validate_json(payload)
    except ValidationError as exc:
        problems = [f"{source}: {'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                    for e in exc.errors(include_url=False)]
        raise BundleInvalid(problems, what="manifest") from None


def read_signed(root: Path, keys: list[PublicKey]) -> tuple[Manifest | None, list[str]]:
    """The manifest from the envelope and every problem with it (the manifest is still returned when only the
    signature fails, so the rest of the bundle can be reported on too)."""
    checked = signed.read_signed(root, PAYLOAD_TYPE, keys, container="bundle")
    if checked.payload is None:
        return None, checked.problems
    try:
        return parse_manifest(checked.payload, ENVELOPE), checked.problems
    except BundleInvalid as exc:
        return None, checked.problems + exc.problems


def load_any_manifest(path: Path) -> Manifest:
    """A manifest from a bundle directory, its envelope, or a plain manifest.json (for ``--since``)."""
    if path.is_dir():
        path = path / ENVELOPE if (path / ENVELOPE).exists() else path / READABLE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read manifest {path}: {exc.strerror}",
                          "pass the manifest.dsse.json (or bundle directory) of the bundle the site has") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{path} is not JSON", "pass a sovkit bundle manifest") from exc
    if isinstance(data, dict) and "payloadType" in data:
        raw = dsse.Envelope.from_json(raw, str(path)).payload_bytes()
    return parse_manifest(raw, str(path))


def merge_items(entries: Iterable[Entry]) -> list[Entry]:
    """One entry per path (items joined); the same path with two contents is a bug in the caller."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        prev = by_path.get(e.path)
        if prev is None:
            by_path[e.path] = e
            continue
        if prev.sha256 != e.sha256:
            raise BundleError(f"{e.path} is referenced with two different contents",
                              "two inventory items point at the same file but pin different digests")
        items = sorted(set(prev.items) | set(e.items))
        by_path[e.path] = prev.model_copy(update={"items": items})
    return [by_path[p] for p in sorted(by_path)]
