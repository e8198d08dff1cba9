"""What a bundle must carry for an inventory: its artifacts, trust roots, files, the policy pack and templates.

Artifacts are looked up in the ``--artifacts`` directories first, then in the
inventory's own local store. Every missing one is reported at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.manifest import Kind
from sovkit.inventory.loader import LoadedInventory
from sovkit.resources import policies_dir, templates_dir

_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Source:
    """A file to carry: its logical path in the bundle, where it is now, and what the inventory pins."""

    path: str
    file: Path
    kind: Kind
    items: tuple[str, ...] = ()
    pinned_size: int | None = None
    pinned_sha256: str | None = None


def _artifact_refs(loaded: LoadedInventory) -> Iterator[tuple[str, Kind, str, int | None, str | None]]:
    site = loaded.site
    for fw in site.firmware:
        item = f"firmware:{fw.name}@{fw.version}"
        yield fw.image.path, "firmware", item, fw.image.size, fw.image.sha256
        if fw.signature:
            yield fw.signature, "firmware-signature", item, None, None
    for drv in site.drivers:
        item = f"driver:{drv.name}@{drv.version}"
        for art in drv.artifacts:
            yield art.path, "driver", item, art.size, art.sha256
        if drv.signature:
            yield drv.signature, "driver-signature", item, None, None
    for rt in site.runtimes:
        item = f"runtime:{rt.name}@{rt.version}"
        for art in rt.artifacts:
            yield art.path, "runtime", item, art.size, art.sha256
        if rt.signature:
            yield rt.signature, "runtime-signature", item, None, None
    for m in site.models:
        item = f"model:{m.name}@{m.version}"
        for art in m.files:
            yield art.path, "model", item, art.size, art.sha256
        if m.signature:
            yield m.signature, "model-signature", item, None, None


def inventory_sources(loaded: LoadedInventory, artifact_dirs: list[Path]) -> list[Source]:
    """Every file the inventory references, or :class:`BundleInvalid` naming each one that is missing."""
    dirs = [*artifact_dirs, loaded.artifact_root]
    out: list[Source] = []
    problems: list[str] = []
    for rel, kind, item, size, sha in _artifact_refs(loaded):
        found = next((d / rel for d in dirs if (d / rel).is_file()), None)
        if found is None:
            problems.append(f"{item}: artifact {rel} not found in {', '.join(str(d) for d in dirs)}")
            continue
        out.append(Source(f"artifacts/{rel}", found, kind, (item,), size, sha))
    trust = loaded.site.trust_roots
    for role, keys in (("publisher", trust.publishers), ("vendor", trust.vendors),
                       ("policy-bundle", trust.policy_bundles)):
        for key in keys:
            f = loaded.resolve(key.public_key)
            if not f.is_file():
                problems.append(f"{role}:{key.name}: trust-root key {key.public_key} not found under {loaded.root}")
                continue
            out.append(Source(f"inventory/{key.public_key}", f, "trust-root", (f"{role}:{key.name}",)))
    for f in loaded.files:
        out.append(Source(f"inventory/{f.resolve().relative_to(loaded.root).as_posix()}", f.resolve(), "inventory",
                          ("site",)))
    if problems:
        raise BundleInvalid(problems, what="inventory", hint="pass the directories holding them with --artifacts")
    return out


def tree_sources(root: Path, prefix: str, kind: Kind) -> list[Source]:
    """Every regular file under ``root`` (caches and VCS directories left out)."""
    out: list[Source] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS for part in rel.parts) or path.suffix == ".pyc" or not path.is_file():
            continue
        out.append(Source(f"{prefix}/{rel.as_posix()}", path, kind))
    return out


def shipped_sources() -> list[Source]:
    """The policy pack and the Ansible content sovkit runs with."""
    return [*tree_sources(policies_dir(), "policies", "policy"), *tree_sources(templates_dir(), "templates",
                                                                               "template")]
