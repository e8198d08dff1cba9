"""Verify an audit pack offline, as named steps, each failure with its own message.

Steps: manifest-signature, file-set (nothing missing, nothing extra, only
regular files), file-digests (size and sha256 of every listed file), report
(report.json is a sovkit audit report of a known schema), ml-bom (every BOM is
strictly valid CycloneDX 1.6 with a model and its file hashes),
attestation-log (the copied log verifies: format, keys, signatures, chain).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from sovkit.attest.keys import PublicKey
from sovkit.audit import evidence
from sovkit.audit.manifest import Manifest, pack_files, read_signed_manifest
from sovkit.audit.mlbom import validate_ml_bom
from sovkit.audit.model import REPORT_SCHEMA, AuditReport
from sovkit.digest import sha256_file
from sovkit.errors import VerificationError

STEPS = ("manifest-signature", "file-set", "file-digests", "report", "ml-bom", "attestation-log")


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str = ""
    problems: list[str] = field(default_factory=list)
    skipped: bool = False


@dataclass
class PackVerification:
    path: Path
    steps: list[StepResult]
    site: str | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def problems(self) -> list[str]:
        return [f"{s.name}: {p}" for s in self.steps for p in s.problems]


def _safe(path: str) -> bool:
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path


def _file_set(root: Path, manifest: Manifest) -> StepResult:
    problems: list[str] = []
    listed = [e.path for e in manifest.files]
    seen: set[str] = set()
    for path in listed:
        if not _safe(path):
            problems.append(f"manifest lists an unsafe path {path!r}")
        elif path in seen:
            problems.append(f"manifest lists {path} twice")
        seen.add(path)
    present = set(pack_files(root))
    for path in sorted(seen - present):
        if _safe(path):
            problems.append(f"missing file: {path} is in the manifest but not in the pack")
    for path in sorted(present - seen):
        problems.append(f"extra file: {path} is in the pack but not in the manifest")
    for path in sorted(present):
        if (root / path).is_symlink() or not (root / path).is_file():
            problems.append(f"{path} is not a regular file")
    return StepResult("file-set", not problems, f"{len(listed)} files listed", problems)


def _file_digests(root: Path, manifest: Manifest) -> StepResult:
    problems: list[str] = []
    checked = 0
    for e in manifest.files:
        f = root / e.path
        if not _safe(e.path) or f.is_symlink() or not f.is_file():
            continue
        checked += 1
        size = f.stat().st_size
        if size != e.size:
            problems.append(f"{e.path}: size {size} bytes, the manifest says {e.size}: the file was changed")
            continue
        digest = sha256_file(f)
        if digest != e.sha256:
            problems.append(f"{e.path}: sha256 {digest[:16]}… differs from the manifest's {e.sha256[:16]}…: "
                            "the file was changed")
    return StepResult("file-digests", not problems, f"{checked} files checked", problems)


def _report(root: Path) -> tuple[StepResult, AuditReport | None]:
    path = root / "report.json"
    if not path.is_file():
        return StepResult("report", False, problems=["report.json is missing"]), None
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        return StepResult("report", False, problems=[f"report.json is not JSON ({exc})"]), None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else None
        return StepResult("report", False, problems=[f"report.json schema {got!r}, expected {REPORT_SCHEMA}"]), None
    try:
        report = AuditReport.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return StepResult("report", False, problems=[f"report.json [{where}]: {first['msg']}"]), None
    return StepResult("report", True, f"site {report.overview.site}, schema {REPORT_SCHEMA}"), report


def _ml_boms(root: Path, report: AuditReport | None) -> StepResult:
    problems: list[str] = []
    boms = sorted((root / "bom").glob("*.cdx.json")) if (root / "bom").is_dir() else []
    for bom in boms:
        rel = bom.relative_to(root).as_posix()
        try:
            text = bom.read_text(encoding="utf-8")
            json.loads(text)
        except (UnicodeDecodeError, ValueError):
            problems.append(f"{rel}: not a JSON document")
            continue
        error = validate_ml_bom(text)
        if error:
            problems.append(f"{rel}: not a valid CycloneDX 1.6 ML-BOM: {error}")
    if report is not None:
        for ref in report.model_boms:
            if not (root / ref.path).is_file():
                problems.append(f"{ref.path}: the ML-BOM of model {ref.model} named by report.json is missing")
    return StepResult("ml-bom", not problems, f"{len(boms)} ML-BOM(s)", problems)


def _attestation_log(root: Path, keys: list[PublicKey]) -> StepResult:
    log = root / evidence.ATTESTATIONS_DIR
    if not log.exists():
        return StepResult("attestation-log", True, "no attestations recorded")
    count, errors = evidence.verify_entries(log, keys)
    problems = [f"{e.message} ({e.step})" if e.step else e.message for e in errors]
    return StepResult("attestation-log", not problems,
                      f"{count} entries: format, keys, signatures, chain and signed head verify", problems)


def verify_audit_pack(root: Path, keys: list[PublicKey]) -> PackVerification:
    """Check everything in the pack that can be checked offline with the public keys alone."""
    if not root.is_dir():
        raise VerificationError(f"{root} is not a directory", "pass the directory written by `sovkit audit -o`",
                                step="manifest-signature")
    steps: list[StepResult] = []
    manifest: Manifest | None = None
    try:
        manifest = read_signed_manifest(root, keys)
        steps.append(StepResult("manifest-signature", True, f"signed manifest of {len(manifest.files)} files"))
    except VerificationError as exc:
        steps.append(StepResult("manifest-signature", False, problems=[exc.message]))
    if manifest is None:
        for name in ("file-set", "file-digests"):
            steps.append(StepResult(name, False, skipped=True,
                                    problems=["not checked: the manifest is not trusted"]))
    else:
        steps.append(_file_set(root, manifest))
        steps.append(_file_digests(root, manifest))
    report_step, report = _report(root)
    steps.append(report_step)
    steps.append(_ml_boms(root, report))
    steps.append(_attestation_log(root, keys))
    return PackVerification(root, steps, report.overview.site if report else None)
