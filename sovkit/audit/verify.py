"""Verify an audit pack offline, as named steps, each failure with its own message.

Steps: keyring (the pack's ``keys/keyring.json``, or ``--keyring``, chained to a pinned key), manifest-signature,
file-set (nothing missing, nothing extra, only
regular files), file-digests (size and sha256 of every listed file), report
(report.json is a sovkit audit report of a known schema), ml-bom (every BOM is
strictly valid CycloneDX 1.6 with a model and its file hashes),
policy-decision (the pack's policy/input.json, evaluated with the pack's own
policy bundle, gives the decision and findings report.json records),
oscal (the OSCAL assessment results and component definition parse with
compliance-trestle's models, pass trestle's validators, and agree with report.json
and the pack's bundle and control mapping: same rules, same results, same controls),
trust-roots (each trust-root key copied into the pack has the keyid the input
document's signature checks name), attestation-log (the copied log verifies:
format, keys, signatures, chain).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sovkit.audit import evidence, oscal
from sovkit.audit.collect import finding_row
from sovkit.audit.manifest import Manifest, check_signed_manifest, pack_files
from sovkit.audit.mlbom import validate_ml_bom
from sovkit.audit.model import REPORT_SCHEMA, AuditReport
from sovkit.digest import sha256_file
from sovkit.errors import SovkitError, VerificationError
from sovkit.signing import dsse, paths
from sovkit.signing.keyring import KEYRING_RELPATH, Keyring, load_keyring, parse_time, short
from sovkit.signing.keys import PublicKey
from sovkit.signing.manifest import ENVELOPE
from sovkit.signing.steps import Step, Verification

STEPS = ("manifest-signature", "file-set", "file-digests", "report", "oscal", "ml-bom", "policy-decision",
         "trust-roots", "attestation-log")


def _safe(path: str) -> bool:
    """A pack path is read, never written on a site: sovkit's reserved names are allowed (a key under .sovkit/)."""
    return paths.path_problem(path, refuse_reserved=False) is None


def _file_set(root: Path, manifest: Manifest) -> Step:
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
    return Step.of("file-set", problems, f"{len(listed)} files listed")


def _file_digests(root: Path, manifest: Manifest) -> Step:
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
    return Step.of("file-digests", problems, f"{checked} files checked")


def _report(root: Path) -> tuple[Step, AuditReport | None]:
    path = root / "report.json"
    if not path.is_file():
        return Step.failed_with("report", ["report.json is missing"]), None
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        return Step.failed_with("report", [f"report.json is not JSON ({exc})"]), None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else None
        return Step.failed_with("report", [f"report.json schema {got!r}, expected {REPORT_SCHEMA}"]), None
    try:
        report = AuditReport.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return Step.failed_with("report", [f"report.json [{where}]: {first['msg']}"]), None
    return Step.passed("report", f"site {report.overview.site}, schema {REPORT_SCHEMA}"), report


def _oscal(root: Path, report: AuditReport | None) -> Step:
    """The OSCAL documents against report.json: reads data only (the bundle's Rego is parsed for ids, never run)."""
    name = "oscal"
    if report is None:
        return Step.not_checked(name, "not checked: report.json is unreadable")
    problems: list[str] = []
    mapping_path, problem = _pack_file(root, report.controls.mapping if report.controls else oscal.MAPPING_COPY,
                                       "control mapping")
    bundle, bundle_problem = _pack_file(root, report.policy.bundle, "policy bundle")
    doc, input_problem = _input_doc(root, report)
    problems += [p for p in (problem, bundle_problem, input_problem) if p]
    if mapping_path is None or bundle is None or doc is None:
        return Step.failed_with(name, problems)
    try:
        mapping = oscal.load_mapping(mapping_path)
        rules = oscal.rule_ids(evidence.bundle_modules(bundle))
        entries = evidence.read_entries(root / evidence.ATTESTATIONS_DIR)
    except SovkitError as exc:
        return Step.failed_with(name, [exc.message])
    expected = oscal.control_section(report.policy.findings, rules, mapping, doc, entries)
    problems += oscal.check_documents(root, report, expected)
    covered = len(expected.controls)
    return Step.of(name, problems, f"{oscal.ASSESSMENT_RESULTS} and {oscal.COMPONENT_DEFINITION}: {len(rules)} rules, "
                   f"{covered} controls, {len(expected.uncovered)} uncovered" + ("" if problems else
                                                                              ", as report.json records"))


def _ml_boms(root: Path, report: AuditReport | None) -> Step:
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
    return Step.of("ml-bom", problems, f"{len(boms)} ML-BOM(s)")


def _pack_file(root: Path, path: str | None, what: str) -> tuple[Path | None, str | None]:
    if not path or not _safe(path):
        return None, f"report.json names no usable {what} path ({path!r})"
    if not (root / path).is_file() or (root / path).is_symlink():
        return None, f"{path} is missing: the {what} the decision was made on is not in the pack"
    return root / path, None


def _input_doc(root: Path, report: AuditReport) -> tuple[dict[str, Any] | None, str | None]:
    path, problem = _pack_file(root, report.policy.input, "policy input")
    if path is None:
        return None, problem
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as exc:
        return None, f"{report.policy.input} is not JSON ({exc})"
    return (doc, None) if isinstance(doc, dict) else (None, f"{report.policy.input} is not a JSON object")


def _policy_decision(root: Path, report: AuditReport | None, trusted: bool) -> Step:
    """Re-evaluate the recorded input with the recorded bundle and compare with the report's decision.

    The bundle's Rego is run only when the manifest is signed by a trusted key: never a stranger's code.
    """
    name = "policy-decision"
    if not trusted:
        return Step.not_checked(name, "not evaluated: the manifest is not trusted")
    if report is None:
        return Step.not_checked(name, "not checked: report.json is unreadable")
    doc, problem = _input_doc(root, report)
    bundle, bundle_problem = _pack_file(root, report.policy.bundle, "policy bundle")
    if doc is None or bundle is None:
        return Step.failed_with(name, [p for p in (problem, bundle_problem) if p])
    try:
        decision = evidence.redecide(bundle, doc)
    except SovkitError as exc:
        return Step.failed_with(name, [f"re-evaluation failed: {exc.message}"])
    p = report.policy
    problems = []
    if decision.pack_digest != p.pack_digest:
        problems.append(f"{p.bundle} holds policy pack sha256:{decision.pack_digest[:16]}…, report.json names "
                        f"sha256:{p.pack_digest[:16]}…")
    verdict = "allowed" if decision.allowed else "denied"
    if decision.allowed != p.allowed:
        problems.append(f"re-evaluation: {verdict}, report.json says {'allowed' if p.allowed else 'denied'}")
    again = {f.model_dump_json() for f in (finding_row(f) for f in decision.findings)}
    recorded = {f.model_dump_json() for f in p.findings}
    for f in sorted(recorded - again):
        problems.append(f"finding in report.json but not in the re-evaluation: {f}")
    for f in sorted(again - recorded):
        problems.append(f"finding in the re-evaluation but not in report.json: {f}")
    denials = len(decision.by_severity("deny"))
    detail = (f"{p.input} evaluated with {p.bundle} ({decision.engine} engine): {verdict}, {denials} denial(s), "
              f"{len(decision.findings)} finding(s)" + ("" if problems else ", as report.json records"))
    return Step.of(name, problems, detail)


def _trust_roots(root: Path, report: AuditReport | None) -> Step:
    """Each copied trust-root key is the key each verified signature check in the input names."""
    name = "trust-roots"
    if report is None:
        return Step.not_checked(name, "not checked: report.json is unreadable")
    problems: list[str] = []
    keyids: dict[tuple[str, str], str] = {}
    for t in report.policy.trust_roots:
        if t.path is None:
            continue
        path, problem = _pack_file(root, t.path, f"{t.section} key {t.name}")
        try:
            key = PublicKey.load(path) if path is not None else None
        except SovkitError as exc:
            problems.append(f"{t.path}: {exc.message}")
            continue
        if key is None:
            problems.append(problem or t.path)
        elif key.keyid != t.keyid:
            problems.append(f"{t.path}: keyid {key.keyid[:16]}… differs from the report's {str(t.keyid)[:16]}…")
        else:
            keyids[(t.section, t.name)] = key.keyid
    doc, _ = _input_doc(root, report)
    checked = 0
    for kind, section in (("firmware", "vendors"), ("runtimes", "vendors"), ("models", "publishers")):
        for item in (doc or {}).get(kind) or []:
            sig = item.get("signature") if isinstance(item, dict) else None
            if not isinstance(sig, dict) or sig.get("verified") is not True or not sig.get("signer"):
                continue  # only a verified signature claims a trust-root key
            checked += 1
            have = keyids.get((section, str(sig["signer"])))
            if have is None:
                problems.append(f"{kind} {item.get('name')}: signed by {sig['signer']} (keyid "
                                f"{str(sig['keyid'])[:16]}…), whose key is not in the pack")
            elif have != sig["keyid"]:
                problems.append(f"{kind} {item.get('name')}: the input names keyid {str(sig['keyid'])[:16]}…, "
                                f"the pack's {section} key {sig['signer']} is {have[:16]}…")
    return Step.of(name, problems, f"{len(keyids)} key(s), {checked} verified signature(s) tied to them")


def _attestation_log(root: Path, keys: list[PublicKey], keyring: Keyring | None) -> Step:
    log = root / evidence.ATTESTATIONS_DIR
    if not log.exists():
        return Step.passed("attestation-log", "no attestations recorded")
    count, errors = evidence.verify_entries(log, keys, keyring)
    problems = [f"{e.message} ({e.step})" if e.step else e.message for e in errors]
    return Step.of("attestation-log", problems, f"{count} entries: format, keys, signatures, chain and signed head "
                   "verify")


def _manifest_signer_problem(root: Path, created: str, keys: list[PublicKey], keyring: Keyring) -> str | None:
    """With a keyring, the manifest must be signed by a key valid when the pack was created (or a --key the
    keyring does not list, trusted at any time)."""
    envelope = dsse.Envelope.from_json((root / ENVELOPE).read_bytes(), ENVELOPE)
    problems = []
    for key in [*keys, *keyring.public_keys]:
        try:
            dsse.verify(envelope, [key])
        except VerificationError:
            continue
        if key.keyid not in keyring.keys:
            return None
        try:
            problem = keyring.problem(key.keyid, parse_time(created))
        except ValueError:
            problem = f"the manifest's creation time {created!r} is not a time"
        if problem is None:
            return None
        problems.append(f"the pack was signed at {created} by key {short(key.keyid)}, not valid then: {problem}")
    return "; ".join(problems) or None


def _pack_keyring(root: Path, keys: list[PublicKey]) -> tuple[Keyring | None, Step]:
    """The operator's keyring the pack carries (``keys/keyring.json``), trusted only through a pinned key that
    signed one of its versions. A keyring that does not verify fails its step, and is not used: its keys are
    then trusted nowhere (fail closed)."""
    path = root / KEYRING_RELPATH
    if not path.is_file():
        return None, Step.not_checked("keyring", "the pack has no keyring (the site never rotated or revoked a "
                                                 "key): every signature is judged by the --key(s) alone")
    try:
        ring = load_keyring(path, keys)
    except VerificationError as exc:
        return None, Step.from_error("keyring", exc)
    return ring, Step.passed("keyring", f"the pack's keyring, version {ring.version}, chained to a --key: each "
                                        "signer is judged at the time it signed")


def verify_audit_pack(root: Path, keys: list[PublicKey], keyring: Keyring | None = None) -> Verification:
    """Check everything in the pack that can be checked offline with the public keys alone (and the keyring:
    its keys count too, each judged at the time it signed)."""
    if not root.is_dir():
        raise VerificationError(f"{root} is not a directory", "pass the directory written by `sovkit audit -o`",
                                step="manifest-signature")
    steps: list[Step] = []
    if keyring is None:
        keyring, ring_step = _pack_keyring(root, keys)
    else:
        ring_step = Step.passed("keyring", f"the keyring given (version {keyring.version}), not the pack's")
    manifest, problems = check_signed_manifest(root, [*keys, *(keyring.public_keys if keyring else [])])
    if manifest is not None and keyring is not None:
        problem = _manifest_signer_problem(root, manifest.created, keys, keyring)
        manifest, problems = (None, [problem]) if problem else (manifest, problems)
    steps.append(ring_step)
    if manifest is not None:
        steps.append(Step.passed("manifest-signature", f"signed manifest of {len(manifest.files)} files"))
    else:
        steps.append(Step.failed_with("manifest-signature", problems, hint="obtain an untampered copy of the pack"))
    if manifest is None:
        for name in ("file-set", "file-digests"):
            steps.append(Step.not_checked(name, "not checked: the manifest is not trusted"))
    else:
        steps.append(_file_set(root, manifest))
        steps.append(_file_digests(root, manifest))
    report_step, report = _report(root)
    steps.append(report_step)
    steps.append(_oscal(root, report))
    steps.append(_ml_boms(root, report))
    steps.append(_policy_decision(root, report, manifest is not None))
    steps.append(_trust_roots(root, report))
    steps.append(_attestation_log(root, keys, keyring))
    return Verification(subject=str(root), steps=steps, facts={"site": report.overview.site} if report else {})
