"""Build the regulator audit pack: reports, ML-BOMs, evidence copies, and a signed manifest over all of it.

The pack is assembled in a temporary directory beside the target and renamed
into place only when complete and signed, so a failure leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sovkit.audit import evidence, oscal
from sovkit.audit.collect import build_report, model_bom_ref
from sovkit.audit.drift import read_refresh_record
from sovkit.audit.manifest import Manifest, make_manifest, write_signed_manifest
from sovkit.audit.mlbom import bom_file_name, build_ml_bom
from sovkit.audit.model import AuditReport
from sovkit.audit.report_html import render_html
from sovkit.errors import SovkitError
from sovkit.inventory.loader import LoadedInventory
from sovkit.policy.api import PolicyEngine, PolicySource
from sovkit.signing.keys import Signer
from sovkit.state.models import State

POLICY_BUNDLE = "policy/bundle.tar.gz"
POLICY_INPUT = "policy/input.json"
INVENTORY_DIR = "inventory"
STATE_COPY = "evidence/state.json"


class _StateReader(Protocol):
    def read(self) -> State: ...


class AuditSource(Protocol):
    """What the pack is built from: a site's inventory, its state and its state directory (a Workspace is one).

    A port rather than the Workspace type, so audit stays below the facade that wires it."""

    @property
    def inventory(self) -> LoadedInventory: ...

    @property
    def directory(self) -> Path: ...

    @property
    def store(self) -> _StateReader: ...


@dataclass
class AuditPack:
    path: Path
    report: AuditReport
    manifest: Manifest
    keyid: str


def _prepare_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SovkitError(f"{out_dir} already exists and is not an empty directory",
                          "choose a new output directory; sovkit never overwrites an audit pack")


def build_audit_pack(ws: AuditSource, out_dir: Path, signer: Signer, extra_policies: PolicySource = None,
                     engine: PolicyEngine | None = None) -> AuditPack:
    """Write the signed audit pack of ``ws`` to ``out_dir`` (which must not exist or be empty)."""
    out_dir = out_dir.resolve()
    _prepare_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        report, manifest = _assemble(ws, tmp, signer, extra_policies, engine)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return AuditPack(out_dir, report, manifest, signer.keyid)


def _assemble(ws: AuditSource, root: Path, signer: Signer, extra: PolicySource, engine: PolicyEngine | None
              ) -> tuple[AuditReport, Manifest]:
    inv = ws.inventory
    state = ws.store.read()
    (root / "policy").mkdir()
    doc = evidence.write_policy_input(root / POLICY_INPUT, inv, state)
    decision = evidence.decide(doc, extra, engine)
    bundle_digest = evidence.write_bundle(root / POLICY_BUNDLE, extra)
    if decision.pack_digest and decision.pack_digest != bundle_digest:
        raise SovkitError("the policy pack changed while the audit was being written",
                          "run `sovkit audit` again")

    copied = evidence.copy_log(evidence.log_dir(ws.directory), root / evidence.ATTESTATIONS_DIR)
    log_copy = evidence.ATTESTATIONS_DIR + "/" if copied else None
    entries = evidence.read_entries(root / evidence.ATTESTATIONS_DIR)
    evidence.copy_keyring(ws.directory, root)

    if state.lineage:  # the state exactly as the report read it, not a later write
        (root / "evidence").mkdir()
        (root / STATE_COPY).write_text(state.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (root / INVENTORY_DIR).mkdir()
    for f in inv.files:
        shutil.copyfile(f, root / INVENTORY_DIR / f.name)
    trust_roots = evidence.copy_trust_roots(inv, root, INVENTORY_DIR)

    (root / "bom").mkdir()
    boms = []
    for model in inv.site.models:
        rel = f"bom/{bom_file_name(model)}"
        (root / rel).write_text(build_ml_bom(inv.site, model), encoding="utf-8")
        boms.append(model_bom_ref(model, rel))

    report = build_report(inv, state, decision, bundle_digest, POLICY_BUNDLE, entries, log_copy,
                          read_refresh_record(ws.directory), boms, input_path=POLICY_INPUT,
                          trust_roots=trust_roots, signed_by=signer.keyid,
                          log_check=evidence.check_log(root / evidence.ATTESTATIONS_DIR, [signer.public_key]))
    mapping_file = oscal.shipped_mapping_path()
    mapping = oscal.load_mapping(mapping_file)
    rules = oscal.rule_ids(evidence.bundle_modules(root / POLICY_BUNDLE))
    report = report.model_copy(update={"controls": oscal.control_section(report.policy.findings, rules, mapping, doc,
                                                                           entries)})
    (root / "report.json").write_text(report.to_json(), encoding="utf-8")
    (root / "report.html").write_text(render_html(report), encoding="utf-8")
    oscal.write_documents(root, report, mapping_file, oscal.input_sha256(root / POLICY_INPUT), mapping)
    manifest = make_manifest(root, inv.site.metadata.name, report.generated_at)
    write_signed_manifest(root, manifest, signer)
    return report, manifest
