"""The append-only attestation log: hash-chained DSSE envelopes plus a signed head.

Layout of a log directory (default ``<state dir>/attestations/``):

- ``log.jsonl``: one canonical JSON object per line,
  ``{"envelope": <DSSE envelope>, "index": i, "previous": "sha256:<hex>" | null, "signed_at": TIME}``;
  ``previous`` is the sha256 of the previous line's bytes (without its newline). ``signed_at`` is when the
  entry was signed; it is under the chain (the next line's ``previous``, and the signed head), so it cannot be
  back-dated without breaking a link, and times never go back along the chain. Lines written before signing
  times were recorded have none (see :func:`verify_log`).
- ``head.json``: a DSSE envelope over ``{"_type", "index", "digest", "count", "updated"}`` naming the
  last line, re-signed on every append; ``updated`` is the last entry's ``signed_at``. The chain makes
  each line commit to every line before it; the signed head commits to the whole chain, so a dropped,
  inserted, reordered or altered entry breaks a link and a cut-off tail no longer matches the head.
- ``log.lock``: the ``flock`` taken while appending.

Beside the log directory (in the state directory) ``attestations.anchor.json`` records the head's
index and digest on every append, and, after `sovkit keys rotate`, the key id that alone may append
(``keyid``): an append signed by a retired key is refused there, and by verification with the keyring.
A signed head proves the log is one the operator wrote, not that it is the *latest* one: an older
signed log + head (say from an audit pack) copied over the live log verifies on its own. The anchor
lives outside the log directory, so someone who can only write the log directory cannot roll it
back; verification compares them (step ``anchor``) and appends refuse a log that does not extend the
anchor (else the next append would launder a rollback).

Appends rewrite the file through a temp file and rename, then the head, so a crash leaves the old
log or the new one (at worst a log one append ahead of its head, which verification reports).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, ValidationError

from sovkit.errors import VerificationError
from sovkit.flock import exclusive
from sovkit.fsutil import atomic_write
from sovkit.signing import dsse
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keyring import Keyring, Time, parse_time, short
from sovkit.signing.keys import PublicKey, Signer
from sovkit.signing.statement import STATEMENT_TYPE, Statement
from sovkit.signing.steps import Step, Verification
from sovkit.state.models import now

LOG_DIRNAME = "attestations"
LOG_FILE = "log.jsonl"
HEAD_FILE = "head.json"
LOCK_FILE = "log.lock"
ANCHOR_SUFFIX = ".anchor.json"
HEAD_PAYLOAD_TYPE = "application/vnd.sovkit.attestation-log-head+json"
HEAD_TYPE = "https://sovkit.dev/attestation-log-head/v1"
#: statements `sovkit keys rotate|revoke` append: each names the keyring version (and its digest) it wrote
KEY_ROTATION_PREDICATE = "https://sovkit.dev/attestation/key-rotation/v1"
KEY_REVOCATION_PREDICATE = "https://sovkit.dev/attestation/key-revocation/v1"
KEYRING_PREDICATES = (KEY_ROTATION_PREDICATE, KEY_REVOCATION_PREDICATE)

STEPS = ("envelope-format", "keyid", "signature", "chain", "head", "keyring", "signing-time", "anchor")
STEP_TITLES = {
    "envelope-format": "envelope format",
    "keyid": "keyid",
    "signature": "signature",
    "chain": "chain continuity",
    "head": "signed head",
    "keyring": "keyring covers the log's key changes",
    "signing-time": "each signer was valid when it signed",
    "anchor": "log head matches the state's anchor",
    "subjects": "subjects against recorded state",
}


def log_dir_for(state_dir: Path) -> Path:
    """The default log directory of a workspace's state directory."""
    return state_dir / LOG_DIRNAME


def line_digest(line: bytes) -> str:
    return "sha256:" + hashlib.sha256(line).hexdigest()


@dataclass(frozen=True)
class LogEntry:
    """One line of the log, parsed (not verified: see :func:`verify_log`)."""

    index: int
    previous: str | None
    digest: str
    envelope: dsse.Envelope
    predicate_type: str
    line: int  # 1-based line number in log.jsonl
    payload: bytes = field(repr=False)  # the decoded DSSE payload: the statement's canonical JSON bytes
    signed_at: str | None = None  # None: a line written before signing times were recorded

    @cached_property
    def statement(self) -> dict[str, Any]:
        """The in-toto statement as a dict (decoded on first use: verification does not need it)."""
        data: dict[str, Any] = json.loads(self.payload)
        return data

    @property
    def subjects(self) -> list[dict[str, Any]]:
        return list(self.statement.get("subject", []))

    @property
    def predicate(self) -> dict[str, Any]:
        return dict(self.statement.get("predicate", {}))


class LogVerification(Verification):
    """The steps of :func:`verify_log`, and the entries read (not part of the ``--json`` shape)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    entries: Annotated[list[LogEntry], SkipValidation] = Field(default_factory=list, exclude=True)

    def raise_for_failure(self) -> None:
        """Raise the first failed step's error (library callers that want fail-closed)."""
        for s in self.failures:
            raise s.error()


# --- reading -------------------------------------------------------------------------------------------------


def _fail(step: str, message: str, hint: str | None = None) -> VerificationError:
    return VerificationError(message, hint, step=step)


class _LogLine(BaseModel):
    """One line as stored; validated in one pass (the hot path when verifying large logs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    index: Annotated[int, Field(ge=0, strict=True)]
    previous: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None
    envelope: dsse.Envelope
    signed_at: Time | None = None


def _parse_line(raw: bytes, lineno: int, source: Path) -> LogEntry:
    where = f"{source.name}:{lineno}"
    try:
        line = _LogLine.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "line"
        raise _fail("envelope-format", f"{where}: not a valid log line ({loc}: {first['msg']}): the line was "
                                       "altered or cut", "restore the log from a trusted copy") from exc
    envelope = line.envelope
    if envelope.payload_type != dsse.IN_TOTO_PAYLOAD_TYPE:
        raise _fail("envelope-format", f"{where}: payload type {envelope.payload_type!r} is not an in-toto "
                                       "statement")
    try:
        payload = base64.b64decode(envelope.payload, validate=True)
        statement = Statement.model_validate_json(payload)
    except (binascii.Error, ValueError) as exc:
        raise _fail("envelope-format", f"{where}: the payload is no longer a valid in-toto Statement: "
                                       "the payload was altered", "restore the log from a trusted copy") from exc
    if statement.type_ != STATEMENT_TYPE:
        raise _fail("envelope-format", f"{where}: statement type {statement.type_!r} is not in-toto v1")
    return LogEntry(index=line.index, previous=line.previous, digest=line_digest(raw), envelope=envelope,
                    predicate_type=statement.predicate_type, line=lineno, payload=payload, signed_at=line.signed_at)


def _raw_lines(log_dir: Path) -> list[bytes]:
    path = log_dir / LOG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _fail("envelope-format", f"cannot read {path}: {exc.strerror}", "check permissions") from exc
    if data and not data.endswith(b"\n"):
        raise _fail("envelope-format", f"{path}: the last line is incomplete (no newline): the log was cut or "
                                       "an append was interrupted", "restore the log from a trusted copy")
    return data.split(b"\n")[:-1] if data else []


def read_log(log_dir: Path) -> list[LogEntry]:
    """Parse every entry (no signature checks). An absent log is empty; a malformed line raises."""
    source = log_dir / LOG_FILE
    return [_parse_line(raw, n, source) for n, raw in enumerate(_raw_lines(log_dir), start=1)]


# --- the anchor ----------------------------------------------------------------------------------------------


def anchor_path(log_dir: Path) -> Path:
    """Where the head is anchored: beside the log directory, named after it (state dir/attestations.anchor.json)."""
    return log_dir.parent / f"{log_dir.name}{ANCHOR_SUFFIX}"


class Anchor(BaseModel):
    """The last head this state directory saw appended: how many entries, and the last one's line digest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: Annotated[int, Field(ge=1, strict=True)]
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    updated: str
    keyid: str | None = None  # after a rotation: the only key that may append


def read_anchor(log_dir: Path) -> Anchor | None:
    """The anchor, None when none was ever written (a log from before anchors, or a copied log)."""
    path = anchor_path(log_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _fail("anchor", f"cannot read the log's anchor {path}: {exc.strerror}",
                    "check that it is a readable file") from exc
    try:
        return Anchor.model_validate_json(raw)
    except ValidationError as exc:
        raise _fail("anchor", f"the log's anchor {path} is damaged ({exc.errors()[0]['msg']})",
                    "investigate who changed the state directory; restore it from a backup") from exc


def _anchor_problem(anchor: Anchor, digests: list[str]) -> str | None:
    """Why a log with these line digests does not extend ``anchor`` (None: it does)."""
    if len(digests) < anchor.count:
        return (f"the log has {len(digests)} entr{'y' if len(digests) == 1 else 'ies'} but the state's anchor "
                f"recorded {anchor.count}: an older log was put back (rolled back) or entries were cut off")
    if digests[anchor.count - 1] != anchor.digest:
        return (f"entry {anchor.count - 1} is not the one the state's anchor recorded: the log was replaced "
                "by a different one")
    return None


ROLLBACK_HINT = ("restore the live log from a trusted copy that extends the anchor; the anchor is "
                 "attestations.anchor.json in the state directory")


# --- appending -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(log_dir: Path) -> Iterator[None]:
    with exclusive(log_dir / LOCK_FILE):
        yield


def payload_digest(envelope: dsse.Envelope) -> str:
    return "sha256:" + hashlib.sha256(envelope.payload_bytes()).hexdigest()


def _head_envelope(index: int, digest: str, payloads: list[str], signer: Signer, updated: str) -> dsse.Envelope:
    """The head also lists every entry's payload digest, signed apart from the entries' own signatures,
    so a failed entry signature can be told apart: altered statement vs altered signature bytes."""
    body = {"_type": HEAD_TYPE, "index": index, "digest": digest, "count": index + 1, "updated": updated,
            "payloads": payloads}
    return dsse.sign(canonical_json(body), HEAD_PAYLOAD_TYPE, signer)


def _tail(log_dir: Path, signer: Signer | None) -> tuple[bytes, list[bytes], list[str], Anchor | None]:
    """The current log bytes, its lines and payload digests; refuses a damaged log (never appends to one)."""
    path = log_dir / LOG_FILE
    existing = path.read_bytes() if path.exists() else b""
    hint = "run `sovkit attest verify` and restore the log from a trusted copy"
    if existing and not existing.endswith(b"\n"):
        raise _fail("envelope-format", f"{path}: the last line is incomplete; refusing to append to a damaged log",
                    hint)
    lines = existing.split(b"\n")[:-1] if existing else []
    try:
        payloads = [payload_digest(_LogLine.model_validate_json(raw).envelope) for raw in lines]
    except (ValueError, VerificationError) as exc:
        raise _fail("envelope-format", f"{path}: a line is not a valid log entry; refusing to append to a damaged "
                                       "log", hint) from exc
    head = log_dir / HEAD_FILE
    if head.exists() and not head.is_file():
        raise _fail("head", f"{head} is not a regular file; refusing to append", hint)
    anchor = read_anchor(log_dir)
    problem = _anchor_problem(anchor, [line_digest(raw) for raw in lines]) if anchor else None
    if problem:
        raise _fail("anchor", f"{path}: {problem}; refusing to append", ROLLBACK_HINT)
    if signer is not None and anchor is not None and anchor.keyid is not None and anchor.keyid != signer.keyid:
        raise _fail("keyid", f"{path}: key {short(signer.keyid)} may no longer append to this log: since the last "
                             f"`sovkit keys rotate` only key {short(anchor.keyid)} may (the state's anchor "
                             "records it)", "sign with the operator's current key (--key or $SOVKIT_SIGNING_KEY)")
    return existing, lines, payloads, anchor


def check_appendable(log_dir: Path, signer: Signer | None = None) -> None:
    """Raise before any work is done if the log could not take an append (by ``signer``: run before apply)."""
    _tail(log_dir, signer)


def _signing_time(lines: list[bytes], at: str | None) -> str:
    """``at`` (or now), never before the last entry's time: times do not go back along the chain."""
    last = _LogLine.model_validate_json(lines[-1]).signed_at if lines else None
    if at is None:
        stamp = now()
        return last if last is not None and parse_time(stamp) < parse_time(last) else stamp
    if last is not None and parse_time(at) < parse_time(last):
        raise _fail("signing-time", f"cannot sign at {at}: the log's last entry was signed later ({last})",
                    "signing times never go back along the log")
    return at


def append(log_dir: Path, statements: Sequence[Statement], signer: Signer, *, at: str | None = None,
           successor: str | None = None) -> list[LogEntry]:
    """Sign each statement, chain it after the current last entry, and re-sign the head (under the lock).

    ``at`` is the signing time (default now); ``successor`` (a key id, set by a rotation) is recorded in the
    anchor as the only key that may append from now on.
    """
    if not statements:
        return []
    with _locked(log_dir):
        path = log_dir / LOG_FILE
        existing, lines, payloads, anchor = _tail(log_dir, signer)
        if lines:
            index, previous = _LogLine.model_validate_json(lines[-1]).index + 1, line_digest(lines[-1])
        else:
            index, previous = 0, None
        signed_at = _signing_time(lines, at)
        new_lines: list[bytes] = []
        out: list[LogEntry] = []
        for statement in statements:
            envelope = dsse.sign(statement.to_bytes(), dsse.IN_TOTO_PAYLOAD_TYPE, signer)
            raw = canonical_json({"index": index, "previous": previous, "envelope": envelope.to_dict(),
                                  "signed_at": signed_at})
            digest = line_digest(raw)
            out.append(LogEntry(index=index, previous=previous, digest=digest, envelope=envelope,
                                predicate_type=statement.predicate_type, line=len(lines) + len(new_lines) + 1,
                                payload=statement.to_bytes(), signed_at=signed_at))
            new_lines.append(raw)
            payloads.append(payload_digest(envelope))
            index, previous = index + 1, digest
        atomic_write(path, existing + b"".join(raw + b"\n" for raw in new_lines))
        head = _head_envelope(out[-1].index, out[-1].digest, payloads, signer, signed_at)
        atomic_write(log_dir / HEAD_FILE, (json.dumps(head.to_dict(), indent=2) + "\n").encode())
        keyid = successor or (anchor.keyid if anchor is not None else None)
        new_anchor = Anchor(count=out[-1].index + 1, digest=out[-1].digest, updated=now(), keyid=keyid)
        atomic_write(anchor_path(log_dir), (new_anchor.model_dump_json(indent=2, exclude_none=True) + "\n").encode())
    return out


# --- verifying -----------------------------------------------------------------------------------------------


def _check_keyids(entries: list[LogEntry], keys: list[PublicKey]) -> Step:
    trusted = {k.keyid for k in keys}
    if not entries:
        return Step.passed("keyid", "no entries")
    unknown = [e for e in entries if not any(s.keyid in trusted for s in e.envelope.signatures)]
    if not unknown:
        return Step.passed("keyid", f"{len(entries)} entries name a trusted key")
    given = ", ".join(k.keyid[:16] for k in keys) or "none"
    if len(unknown) == len(entries):
        ids = sorted({s.keyid for e in entries for s in e.envelope.signatures})
        err = _fail("keyid", f"wrong key: none of the given keys ({given}) signed this log; it was signed by "
                             f"keyid {', '.join(i[:16] for i in ids)}",
                    "pass the public key of the operator who signed the log with --key")
    else:
        first = unknown[0]
        kid = ", ".join(s.keyid[:16] for s in first.envelope.signatures) or "none"
        err = _fail("keyid", f"entry {first.index} (line {first.line}) is signed by an unknown key (keyid {kid}), "
                             f"not by any trusted key; {len(unknown)} such entr{'y' if len(unknown) == 1 else 'ies'}",
                    "an entry was added by someone else: investigate, or pass that signer's key if it is trusted")
    return Step.from_error("keyid", err)


def _check_signatures(entries: list[LogEntry], keys: list[PublicKey], signed_payloads: list[str] | None,
                      signers: dict[int, str]) -> Step:
    """Each entry's signature; ``signers`` gets the key id that verified each entry (for the signing-time step)."""
    by_id = {k.keyid: k for k in keys}
    verified = 0
    for e in entries:
        message = dsse.pae(e.envelope.payload_type, e.payload)
        good = False
        for s in e.envelope.signatures:
            key = by_id.get(s.keyid)
            if key is None:
                continue
            try:
                raw = base64.b64decode(s.sig, validate=True)
            except (binascii.Error, ValueError):
                continue
            if key.verify(raw, message):
                good = True
                signers[e.index] = s.keyid
                break
        if good:
            verified += 1
        elif any(s.keyid in by_id for s in e.envelope.signatures):
            recorded = signed_payloads[e.index] if signed_payloads and e.index < len(signed_payloads) else None
            if recorded is not None and recorded != payload_digest(e.envelope):
                msg = (f"entry {e.index} (line {e.line}): the statement was altered: its signature does not verify "
                       "and its payload digest differs from the one the signed head records")
            elif recorded is not None:
                msg = (f"entry {e.index} (line {e.line}): the signature bytes were altered or replaced: the "
                       "statement is the one the signed head records, but its signature does not verify")
            else:
                msg = (f"entry {e.index} (line {e.line}): the signature does not verify with the trusted key it "
                       "names: the signature or the signed statement was altered")
            err = _fail("signature", msg, "restore the log from a trusted copy and investigate who changed it")
            return Step.from_error("signature", err)
    skipped = len(entries) - verified
    return Step.passed("signature", f"{verified} signatures verify" +
                      (f"; {skipped} not checked (no trusted key)" if skipped else ""))


def _check_chain(entries: list[LogEntry]) -> Step:
    def fail(msg: str) -> Step:
        err = _fail("chain", msg, "the log was edited: restore it from a trusted copy and investigate")
        return Step.from_error("chain", err)

    indices = [e.index for e in entries]
    seen: dict[int, int] = {}
    for e in entries:
        if e.index in seen:
            return fail(f"entry index {e.index} appears twice (lines {seen[e.index]} and {e.line}): "
                        "an entry was inserted")
        seen[e.index] = e.line
    missing = sorted(set(range(max(indices) + 1)) - set(indices)) if indices else []
    if missing:
        return fail(f"entr{'y' if len(missing) == 1 else 'ies'} {', '.join(map(str, missing[:5]))} "
                    f"{'is' if len(missing) == 1 else 'are'} missing from the log: an entry was dropped")
    for pos, e in enumerate(entries):
        if e.index != pos:
            return fail(f"entry index {e.index} is at line {e.line}, where entry {pos} belongs: "
                        "entries were reordered")
    by_digest = {e.digest: e for e in entries}
    for pos, e in enumerate(entries):
        expected = entries[pos - 1].digest if pos else None
        if e.previous == expected:
            continue
        if pos == 0:
            return fail(f"entry 0 (line {e.line}) names a previous entry {e.previous}: the log's beginning "
                        "was dropped")
        target = by_digest.get(e.previous or "")
        if target is not None and target.line < entries[pos - 1].line:
            return fail(f"entry {e.index} (line {e.line}) chains to entry {target.index}, not to the line before "
                        f"it: lines {target.line + 1}–{e.line - 1} were inserted")
        return fail(f"entry {e.index} (line {e.line}) does not chain to entry {e.index - 1}: that entry was "
                    "altered or replaced after it was logged")
    return Step.passed("chain", f"{len(entries)} entries, each naming the digest of the one before")


def read_head(log_dir: Path) -> dsse.Envelope | None:
    path = log_dir / HEAD_FILE
    if not path.exists():
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:  # a directory, unreadable: say so, not "internal error"
        raise _fail("head", f"cannot read {path}: {exc.strerror}", "head.json must be a readable file; restore it "
                                                                   "from a trusted copy") from exc
    return dsse.Envelope.from_json(raw, str(path))


def _check_head(log_dir: Path, entries: list[LogEntry], keys: list[PublicKey]) -> Step:
    def fail(msg: str, hint: str = "restore the log from a trusted copy and investigate") -> Step:
        err = _fail("head", msg, hint)
        return Step.from_error("head", err)

    try:
        envelope = read_head(log_dir)
    except VerificationError as exc:
        return fail(f"head.json is damaged: {exc.message}")
    if envelope is None:
        if entries:
            return fail("head.json is missing: the log's signed head was deleted, so a cut-off tail cannot be "
                        "ruled out")
        return Step.passed("head", "empty log")
    if envelope.payload_type != HEAD_PAYLOAD_TYPE:
        return fail(f"head.json has payload type {envelope.payload_type!r}, not a sovkit log head")
    try:
        body = json.loads(dsse.verify(envelope, keys))
        index, digest = int(body["index"]), str(body["digest"])
    except VerificationError as exc:
        return fail(f"head.json: {exc.message}")
    except (ValueError, KeyError, TypeError):
        return fail("head.json is signed but malformed")
    if not entries:
        return fail(f"the signed head names entry {index} but the log is empty: every entry was removed")
    last = entries[-1]
    if index > last.index:
        return fail(f"the log was truncated: the signed head names entry {index} but the log ends at entry "
                    f"{last.index} ({index - last.index} entr{'y' if index - last.index == 1 else 'ies'} removed "
                    "from the end)")
    if index < last.index:
        return fail(f"the log has {last.index - index} entr{'y' if last.index - index == 1 else 'ies'} after the "
                    f"signed head (entry {index}): appended without signing the head, or an append was "
                    "interrupted")
    if digest != last.digest:
        return fail(f"the last entry ({last.index}) differs from the one the signed head names: it was altered "
                    "or replaced")
    return Step.passed("head", f"signed head names entry {index}, the last one")


def _check_anchor(log_dir: Path, entries: list[LogEntry]) -> Step:
    try:
        anchor = read_anchor(log_dir)
    except VerificationError as exc:
        return Step.from_error("anchor", exc)
    if anchor is None:
        return Step.not_checked("anchor", f"no anchor beside this log ({anchor_path(log_dir).name} in the "
                                          "state directory): a copied log, or one older than anchors")
    problem = _anchor_problem(anchor, [e.digest for e in entries])
    if problem:
        err = _fail("anchor", problem, ROLLBACK_HINT)
        return Step.from_error("anchor", err)
    ahead = len(entries) - anchor.count
    return Step.passed("anchor", f"the log extends the anchor (entry {anchor.count - 1}" +
                      (f", {ahead} entr{'y' if ahead == 1 else 'ies'} after it: an append was interrupted)"
                       if ahead else ", the last one)"))


@dataclass(frozen=True)
class _Head:
    """The head's body and the key that signed it, when it verifies (used to diagnose and to judge its time)."""

    body: dict[str, Any]
    keyid: str


def _verified_head(log_dir: Path, keys: list[PublicKey]) -> _Head | None:
    try:
        envelope = read_head(log_dir)
        if envelope is None or envelope.payload_type != HEAD_PAYLOAD_TYPE:
            return None
        for key in keys:
            if any(s.keyid == key.keyid for s in envelope.signatures):
                with contextlib.suppress(VerificationError):
                    body = json.loads(dsse.verify(envelope, [key]))
                    return _Head(body, key.keyid) if isinstance(body, dict) else None
    except (VerificationError, ValueError):
        return None
    return None


def _signed_payloads(head: _Head | None) -> list[str] | None:
    """The payload digests in the head, only if the head verifies (used to diagnose, never to accept)."""
    payloads = head.body.get("payloads") if head else None
    return [str(p) for p in payloads] if isinstance(payloads, list) else None


def _check_keyring(entries: list[LogEntry], keyring: Keyring | None) -> Step:
    """Every keyring version the log records (rotations, revocations) is in the keyring given, unchanged."""
    recorded = [e for e in entries if e.predicate_type in KEYRING_PREDICATES]
    if keyring is None:
        return Step.not_checked("keyring", "no keyring given (--keyring): the keys given are trusted at any time" +
                                (f"; the log records {len(recorded)} key change(s)" if recorded else ""))
    for e in recorded:
        version, digest = e.predicate.get("keyring_version"), e.predicate.get("keyring_digest")
        where = f"entry {e.index} (line {e.line}) records keyring version {version}"
        if not isinstance(version, int) or version < 1:
            problem = f"entry {e.index} (line {e.line}) is a key change without a keyring version"
        elif version > keyring.version:
            problem = (f"{where}, but the keyring given ends at version {keyring.version}: it was rolled back to "
                       "an older version")
        elif keyring.digests[version - 1] != digest:
            problem = f"{where} with another digest than the keyring's version {version}: a different keyring"
        else:
            continue
        return Step.from_error("keyring", _fail("keyring", problem, "pass the operator's current keyring"))
    return Step.passed("keyring", f"keyring version {keyring.version} ({keyring.source}) verifies and holds the "
                                  f"{len(recorded)} key change(s) the log records")


def _check_times(entries: list[LogEntry], signers: dict[int, str], head: _Head | None,
                 keyring: Keyring | None) -> Step:
    """Times never go back along the chain; with a keyring, each signer was valid when it signed.

    An entry without a time (written before sovkit recorded them) is judged at the next recorded time (or the
    head's), the latest it can have been signed: an old entry is never accepted on a guess in its favour.
    """
    def fail(msg: str, hint: str) -> Step:
        return Step.from_error("signing-time", _fail("signing-time", msg, hint))

    updated = head.body.get("updated") if head else None
    times: list[str | None] = [e.signed_at for e in entries]
    last: str | None = None
    for e in entries:
        if e.signed_at is None:
            continue
        if last is not None and parse_time(e.signed_at) < parse_time(last):
            return fail(f"entry {e.index} (line {e.line}) was signed at {e.signed_at}, before the entry it follows "
                        f"({last}): a signing time was back-dated", "restore the log from a trusted copy")
        last = e.signed_at
    if isinstance(updated, str) and last is not None and parse_time(updated) < parse_time(last):
        return fail(f"the signed head was signed at {updated}, before its last entry ({last})",
                    "restore the log from a trusted copy")
    if keyring is None:
        return Step.passed("signing-time", f"{sum(t is not None for t in times)} entries carry signing times, "
                                           "in order (no keyring: validity windows not checked)")
    bound = updated if isinstance(updated, str) else None
    for pos in range(len(entries) - 1, -1, -1):  # fill untimed entries with the next recorded time
        times[pos] = times[pos] or bound
        bound = times[pos]
    hint = ("an entry was signed by a key that was retired or revoked at the time: investigate who holds that "
            "key; entries before it still verify")
    for e, at in zip(entries, times, strict=True):
        keyid = signers.get(e.index)
        if keyid is None or keyid not in keyring.keys or at is None:
            continue  # unknown key: the keyid step says so; a key given with --key only: trusted at any time
        problem = keyring.problem(keyid, parse_time(at))
        if problem:
            return fail(f"entry {e.index} (line {e.line}) was signed at {at} by key {short(keyid)}, not valid then: "
                        f"{problem}", hint)
    if head is not None and isinstance(updated, str) and head.keyid in keyring.keys:
        problem = keyring.problem(head.keyid, parse_time(updated))
        if problem:
            return fail(f"the head was signed at {updated} by key {short(head.keyid)}, not valid then: {problem}",
                        hint)
    return Step.passed("signing-time", f"{len(entries)} entries, each signed by a key valid at its signing time "
                                       f"(keyring version {keyring.version})")


def verify_log(log_dir: Path, keys: list[PublicKey], keyring: Keyring | None = None) -> LogVerification:
    """Verify a log in named steps; each failed step names its problem and what to do (its hint).

    With a (verified) ``keyring`` its keys are trusted too, each only inside its validity window and before
    its revocation: every entry is judged at its signing time. Never raises for a bad log (see
    :meth:`LogVerification.raise_for_failure`); a missing log directory is reported by the envelope-format step.
    """
    result = LogVerification(subject=str(log_dir))
    if not (log_dir / LOG_FILE).exists():
        err = _fail("envelope-format", f"no attestation log at {log_dir}",
                    "pass the log directory or the inventory whose state directory holds it")
        result.steps.append(Step.from_error("envelope-format", err))
        return result
    try:
        entries = read_log(log_dir)
    except VerificationError as exc:
        result.steps.append(Step.from_error("envelope-format", exc))
        return result
    result.entries = entries
    result.facts["entries"] = len(entries)
    result.steps.append(Step.passed("envelope-format", f"{len(entries)} DSSE envelopes with in-toto v1 "
                                                            "statements"))
    if keyring is not None:
        keys = [*keys, *(k for k in keyring.public_keys if k.keyid not in {g.keyid for g in keys})]
    head = _verified_head(log_dir, keys)
    signers: dict[int, str] = {}
    result.steps.append(_check_keyids(entries, keys))
    result.steps.append(_check_signatures(entries, keys, _signed_payloads(head), signers))
    result.steps.append(_check_chain(entries))
    result.steps.append(_check_head(log_dir, entries, keys))
    result.steps.append(_check_keyring(entries, keyring))
    result.steps.append(_check_times(entries, signers, head, keyring))
    result.steps.append(_check_anchor(log_dir, entries))
    return result
