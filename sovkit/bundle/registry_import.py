"""Import a verified bundle's artifacts into an OCI registry (an ``artifact_store.kind: oci`` site's store).

The bundle is verified whole first (signature, file set, every digest), as for a directory import. Each artifact
blob is then uploaded by digest (a blob the repository already has is not sent again; the registry itself checks
each upload against its digest, so a blob changed after verification is refused there), and the store manifest
under the tag is replaced by one listing the old files plus this bundle's, each layer titled with its store path
(ORAS conventions). The manifest is written last: until then the tag still names the previous store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovkit.artifactstore.oci import EMPTY_DIGEST, Registry, artifact_manifest, layer, titles
from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.events import BundleEvent, OnEvent, ignore
from sovkit.bundle.manifest import Manifest
from sovkit.bundle.verify import check_digests, inspect
from sovkit.signing.keys import PublicKey


@dataclass
class RegistryImportReport:
    manifest: Manifest
    reference: str
    manifest_digest: str = ""
    pushed: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


def import_to_registry(bundle: Path, registry: Registry, tag: str, keys: list[PublicKey],
                       on_event: OnEvent = ignore, workers: int | None = None) -> RegistryImportReport:
    """Verify ``bundle``, push its artifacts to ``registry`` and point ``tag`` at the merged store manifest."""
    ins = inspect(bundle, keys)
    check_digests(ins, on_event, workers)
    if ins.problems or ins.manifest is None:
        raise BundleInvalid(ins.problems or ["the manifest could not be read"])
    manifest = ins.manifest
    entries = [e for e in manifest.entries if e.path.startswith("artifacts/")]
    registry.ping()
    report = RegistryImportReport(manifest, f"{registry.base}/{registry.repository}:{tag}")
    missing = [f"{e.path}: not carried by this differential bundle and not in the registry"
               for e in entries if not e.carried and not registry.has_blob(e.sha256)]
    if missing:
        raise BundleInvalid(missing, what="registry import", hint="nothing was tagged; import the full bundle "
                            "this one is relative to first")
    on_event(BundleEvent("start", phase="push", total=sum(e.size for e in entries if e.carried)))
    done: set[str] = set()
    for e in entries:
        rel = e.path.split("/", 1)[1]
        if e.carried and e.sha256 not in done:
            (report.pushed if registry.push_blob(ins.blobs[e.sha256], e.sha256) else report.present).append(rel)
            on_event(BundleEvent("bytes", n=e.size))
        else:
            report.present.append(rel)
        done.add(e.sha256)
    if registry.push_bytes(b"{}") != EMPTY_DIGEST.removeprefix("sha256:"):
        raise AssertionError("empty config digest")  # a constant; guards an edit of EMPTY_DIGEST
    layers: dict[str, dict[str, Any]] = dict(titles(registry.manifest(tag)))
    for e in entries:
        rel = e.path.split("/", 1)[1]
        layers[rel] = layer(rel, e.sha256, e.size, e.kind)
    report.manifest_digest = registry.put_manifest(tag, artifact_manifest(list(layers.values())))
    return report
