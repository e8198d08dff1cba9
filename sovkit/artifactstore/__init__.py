"""The artifact store port: where preflight gets each artifact onto the controller, verified, before hosts do.

Two implementations behind one :class:`ArtifactStore` protocol: :class:`LocalStore` (a directory, as
`bundle import --store` fills it) and :class:`OciStore` (an OCI registry repository, as
`bundle import --registry` fills it, pulled by digest into the controller's cache). Either way the file ends up
at ``root / store_path`` on the controller, which is what hosts receive.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sovkit.artifactstore.oci import BlobRefused, Credentials, Registry, RegistryError, titles
from sovkit.digest import sha256_file
from sovkit.inventory.loader import LoadedInventory

PULL_STREAMS = 4
__all__ = ["ArtifactStore", "BlobRefused", "Fetched", "LocalStore", "OciStore", "RegistryError", "open_store"]


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str


class ArtifactStore(Protocol):
    root: Path

    def describe(self) -> str:
        """Where the artifacts come from, for messages."""
        ...

    def fetch(self, store_path: str, pinned: str | None) -> Fetched | None:
        """Make ``store_path`` present under ``root`` and return its sha256; None when the store lacks it.

        Raises :class:`RegistryError` when the store cannot be used at all and :class:`BlobRefused` when this
        one file cannot be had intact."""
        ...

    def fetch_many(self, wanted: dict[str, str | None]) -> dict[str, Fetched | BlobRefused | None]:
        """:meth:`fetch` for several files (a registry pulls them concurrently); a refused file's error is its
        value. Raises :class:`RegistryError` like :meth:`fetch`."""
        ...

    def bound_digest(self, store_path: str, pinned: str) -> str:
        """The digest a saved plan binds ``store_path`` to (no download)."""
        ...


class LocalStore:
    """A directory holding every artifact (hashed in place)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"the store {self.root}"

    def fetch(self, store_path: str, pinned: str | None) -> Fetched | None:
        f = self.root / store_path
        return Fetched(f, sha256_file(f)) if f.is_file() else None

    def fetch_many(self, wanted: dict[str, str | None]) -> dict[str, Fetched | BlobRefused | None]:
        return {p: self.fetch(p, d) for p, d in wanted.items()}

    def bound_digest(self, store_path: str, pinned: str) -> str:
        f = self.root / store_path
        return sha256_file(f) if f.is_file() else "missing"


class OciStore:
    """A registry repository; files are pulled by digest into ``root`` (the controller's cache).

    A cached file is used when it still hashes to the digest; otherwise the blob is pulled again, hashed while
    written, and renamed into place only when it matches. Files the inventory does not pin (signatures) are found
    by title in the store manifest and pulled by the digest it gives; their signature check guards their content.
    """

    def __init__(self, root: Path, registry: Registry, tag: str) -> None:
        self.root = root
        self.registry = registry
        self.tag = tag
        self._index: dict[str, str] | None = None
        self._pinged = False

    def describe(self) -> str:
        return (f"the registry {self.registry.base}/{self.registry.repository} (push it with "
                "`sovkit bundle import BUNDLE --registry URL`)")

    def _titles(self) -> dict[str, str]:
        if self._index is None:
            m = self.registry.manifest(self.tag)
            self._index = {t: str(d["digest"]) for t, d in titles(m).items()}
        return self._index

    def _ready(self, need_titles: bool) -> None:
        if not self._pinged:
            self.registry.ping()  # down / TLS / credentials fail the whole run here, before any file is pulled
            self._pinged = True
        if need_titles:
            self._titles()

    def fetch(self, store_path: str, pinned: str | None) -> Fetched | None:
        self._ready(False)
        dest = self.root / store_path
        digest = pinned or self._titles().get(store_path)
        if digest is None:
            dest.unlink(missing_ok=True)  # the registry no longer has it: neither does the cache
            return None
        hexd = digest.removeprefix("sha256:")
        if dest.is_file() and sha256_file(dest) == hexd:
            return Fetched(dest, hexd)
        dest.unlink(missing_ok=True)  # a stale or different cached copy is never handed on
        try:
            self.registry.pull_blob(hexd, dest, f"artifact {store_path}")
        except BlobRefused as exc:
            if "is not in the registry" in exc.message:
                return None
            raise
        return Fetched(dest, hexd)

    def fetch_many(self, wanted: dict[str, str | None]) -> dict[str, Fetched | BlobRefused | None]:
        if not wanted:
            return {}
        self._ready(any(d is None for d in wanted.values()))
        out: dict[str, Fetched | BlobRefused | None] = {}
        # a few streams at once: the registry encrypts while sovkit decrypts and hashes (one stream leaves a core idle)
        with ThreadPoolExecutor(max_workers=min(PULL_STREAMS, len(wanted))) as pool:
            futures = {p: pool.submit(self.fetch, p, d) for p, d in wanted.items()}
            for p, fut in futures.items():
                try:
                    out[p] = fut.result()
                except BlobRefused as exc:
                    out[p] = exc
        return out

    def bound_digest(self, store_path: str, pinned: str) -> str:
        return pinned  # content-addressed: what is pulled for the path is the pinned digest or nothing


def open_store(inv: LoadedInventory) -> ArtifactStore:
    """The store the inventory names (no network until the first fetch)."""
    cfg = inv.site.artifact_store
    if cfg.kind == "local":
        return LocalStore(inv.artifact_root)
    assert cfg.url is not None and cfg.repository is not None  # the model's validator guarantees them
    named = cfg.credentials
    creds: Callable[[], Credentials] | None = None
    if named is not None:
        env, file = named.env, named.file
        creds = ((lambda: Credentials.from_env(env)) if env is not None
                 else (lambda: Credentials.from_file(inv.resolve(file or ""))))
    ca = inv.resolve(cfg.ca) if cfg.ca is not None else None
    return OciStore(inv.artifact_root, Registry(cfg.url, cfg.repository, ca, creds), cfg.tag)
