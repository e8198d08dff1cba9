"""Bundle entry points the CLI calls: gather + create (+ split), verify, import, split, join."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sovkit.artifactstore.oci import Credentials, Registry, ensure_tag, split_reference
from sovkit.bundle.create import CreateReport, create_bundle
from sovkit.bundle.events import BundleEvent, OnEvent, ignore
from sovkit.bundle.gather import inventory_sources, shipped_sources
from sovkit.bundle.importer import ImportReport, import_bundle
from sovkit.bundle.manifest import load_any_manifest
from sovkit.bundle.registry_import import RegistryImportReport, import_to_registry
from sovkit.bundle.verify import check_bundle
from sovkit.bundle.volumes import JoinReport, SplitReport, join_volumes, split_bundle
from sovkit.bundle.wheels import default_cache, resolve_target, self_wheels
from sovkit.errors import BundleError
from sovkit.inventory import load_inventory
from sovkit.signing.keys import PublicKey, Signer
from sovkit.signing.steps import Verification


@dataclass(frozen=True)
class CreateResult:
    bundle: CreateReport
    volumes: SplitReport | None


def create(
    inventory: Path,
    out: Path,
    signer: Signer,
    artifact_dirs: list[Path] | None = None,
    since: Path | None = None,
    volume_size: int | None = None,
    include_self: bool = True,
    wheel_cache: Path | None = None,
    on_event: OnEvent = ignore,
    workers: int | None = None,
    platform: str | None = None,
    python: str | None = None,
) -> CreateResult:
    """Bundle everything ``inventory`` needs; with ``volume_size``, ``out`` receives the parts instead.
    ``platform``/``python`` (default: this machine's) choose the wheels sovkit is carried as."""
    if not include_self and (platform is not None or python is not None):
        raise BundleError("--platform/--python choose sovkit's wheels, and --no-self leaves them out",
                          "drop --no-self to carry sovkit for that platform, or drop --platform/--python")
    target = resolve_target(platform, python) if include_self else None  # a bad value fails before any work
    loaded = load_inventory(inventory, check_files=False)
    base = load_any_manifest(since) if since is not None else None
    sources = [*inventory_sources(loaded, artifact_dirs or []), *shipped_sources()]
    if include_self:
        on_event(BundleEvent("note", message="collecting sovkit and its dependency wheels"))
        own, target = self_wheels(wheel_cache or default_cache(), target)
        sources += own
    staged = out if volume_size is None else out.parent / f".{out.name}.whole"
    if volume_size is not None:
        shutil.rmtree(staged, ignore_errors=True)
    report = create_bundle(staged, sources, signer, loaded.site.metadata.name, loaded.digest, base, on_event,
                           workers, target=target)
    if volume_size is None:
        return CreateResult(report, None)
    try:
        split = split_bundle(staged, out, volume_size, on_event)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return CreateResult(report, split)


def verify(bundle: Path, keys: list[PublicKey], on_event: OnEvent = ignore) -> Verification:
    return check_bundle(bundle, keys, on_event)


def import_(bundle: Path, store: Path, keys: list[PublicKey], site_dir: Path | None = None,
            on_event: OnEvent = ignore) -> ImportReport:
    return import_bundle(bundle, store, keys, site_dir, on_event)


def import_registry(bundle: Path, registry_url: str, keys: list[PublicKey], ca: Path | None = None,
                    credentials_env: str | None = None, credentials_file: Path | None = None,
                    tag: str = "sovkit-store", on_event: OnEvent = ignore) -> RegistryImportReport:
    """Push a verified bundle's artifacts to ``https://HOST[:PORT]/REPOSITORY`` (credentials from a variable or a
    file, never the command line)."""
    base, repository = split_reference(registry_url)
    creds = (Credentials.from_env(credentials_env) if credentials_env
             else Credentials.from_file(credentials_file) if credentials_file else None)
    return import_to_registry(bundle, Registry(base, repository, ca, creds), ensure_tag(tag), keys, on_event)


def split(bundle: Path, out: Path, part_size: int, on_event: OnEvent = ignore) -> SplitReport:
    return split_bundle(bundle, out, part_size, on_event)


def join(inputs: list[Path], out: Path, on_event: OnEvent = ignore) -> JoinReport:
    return join_volumes(inputs, out, on_event)
