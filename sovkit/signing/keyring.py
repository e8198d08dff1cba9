"""The operator's signed keyring: which key may sign when, and which keys (operator or trust root) are revoked.

``keyring.json`` holds every version of the keyring, oldest first, as DSSE envelopes::

    {"versions": [<envelope>, ...]}

each (payload type ``application/vnd.sovkit.keyring+json``) over the canonical JSON::

    {"_type": "https://sovkit.dev/keyring/v1", "version": n, "previous": "sha256:<version n-1's payload>" | null,
     "issued": TIME, "keys": [{"keyid", "public_key": PEM, "not_before": TIME | null, "not_after": TIME | null}],
     "revocations": [{"keyid", "revoked_at": TIME, "reason"}]}

A key is *valid at* t when ``not_before <= t <= not_after`` (either bound may be open) and no revocation of its
keyid has ``revoked_at <= t``. Revocations name any keyid: an operator key or a publisher/vendor trust root.

Why versions chain (checked by :func:`verify_keyring`): versions count 1, 2, 3, each naming the digest of the
one before, and their issue times never go back; version 1 is signed by one of its own keys, every later one by
a key *current* in the version before (valid at the new version's issue time and not ended by that version
itself), so a key a rotation retired cannot write the next version; and at least one version must be signed by
a key the verifier already trusts (``--key``): that signature vouches for the whole history it chains to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from sovkit.errors import SovkitError, VerificationError
from sovkit.signing import dsse
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer

KEYRING_TYPE = "https://sovkit.dev/keyring/v1"
PAYLOAD_TYPE = "application/vnd.sovkit.keyring+json"
#: where the keyring sits beside the attestation log: ``<state dir>/keys/keyring.json`` (an audit pack keeps it at
#: the same relative place, ``keys/keyring.json``)
KEYRING_RELPATH = "keys/keyring.json"


def keyring_path_for(log_dir: Path) -> Path:
    """The keyring of the log in ``log_dir`` (``<state dir>/attestations``): ``<state dir>/keys/keyring.json``."""
    return log_dir.parent / KEYRING_RELPATH
STEP = "keyring"
_HEX64 = r"^[0-9a-f]{64}$"


def parse_time(value: str) -> datetime:
    """An ISO 8601 time with a zone (``2025-06-01T12:00:00Z``); naive or malformed times are refused."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time (e.g. 2025-06-01T12:00:00Z)") from None
    if t.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (end it with Z or an offset such as +09:00)")
    return t


def _time(value: str) -> str:
    parse_time(value)
    return value


#: a time as written in signed documents: an ISO 8601 string with a zone, kept verbatim (the bytes are signed)
Time = Annotated[str, AfterValidator(_time)]


def short(keyid: str) -> str:
    return keyid[:16] + "…"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class KeyWindow(_M):
    """An operator key and when it may sign."""

    keyid: Annotated[str, Field(pattern=_HEX64)]
    public_key: str
    not_before: Time | None = None
    not_after: Time | None = None


class Revocation(_M):
    """A key (operator or trust root) whose signatures made at or after ``revoked_at`` are refused."""

    keyid: Annotated[str, Field(pattern=_HEX64)]
    revoked_at: Time
    reason: Annotated[str, Field(min_length=1)]


class KeyringBody(_M):
    """One version of the keyring, as signed."""

    type_: Literal["https://sovkit.dev/keyring/v1"] = Field(default="https://sovkit.dev/keyring/v1", alias="_type")
    version: Annotated[int, Field(ge=1, strict=True)]
    previous: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None
    issued: Time
    keys: Annotated[list[KeyWindow], Field(min_length=1)]
    revocations: list[Revocation] = []

    def window(self, keyid: str) -> KeyWindow | None:
        return next((k for k in self.keys if k.keyid == keyid), None)

    def revocation(self, keyid: str) -> Revocation | None:
        return next((r for r in self.revocations if r.keyid == keyid), None)

    def problem(self, keyid: str, at: datetime) -> str | None:
        """Why ``keyid`` may not sign at ``at`` under this version (None: it may)."""
        w = self.window(keyid)
        if w is None:
            return f"key {short(keyid)} is not in the keyring"
        return revocation_problem(self.revocation(keyid), at) or window_problem(
            f"key {short(keyid)}", w.not_before, w.not_after, at)

    def current(self, keyid: str, at: datetime) -> bool:
        """May ``keyid`` write the version after this one, issued at ``at``? (valid then, and not ended here)"""
        w = self.window(keyid)
        return (w is not None and self.problem(keyid, at) is None
                and (w.not_after is None or parse_time(w.not_after) > parse_time(self.issued)))

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(by_alias=True, mode="json"))


def window_problem(what: str, not_before: str | None, not_after: str | None, at: datetime) -> str | None:
    """Why ``at`` is outside the window (None: inside; bounds inclusive)."""
    if not_before is not None and at < parse_time(not_before):
        return f"{what} is valid only from {not_before}"
    if not_after is not None and at > parse_time(not_after):
        return f"{what} was valid only until {not_after} (retired)"
    return None


def revocation_problem(rev: Revocation | None, at: datetime) -> str | None:
    if rev is not None and at >= parse_time(rev.revoked_at):
        return f"key {short(rev.keyid)} was revoked at {rev.revoked_at} ({rev.reason})"
    return None


def payload_digest(envelope: dsse.Envelope) -> str:
    return "sha256:" + hashlib.sha256(envelope.payload_bytes()).hexdigest()


@dataclass(frozen=True)
class Keyring:
    """A verified keyring: every version (latest last) and every key any version lists."""

    source: str
    envelopes: tuple[dsse.Envelope, ...]
    bodies: tuple[KeyringBody, ...]
    digests: tuple[str, ...]
    keys: dict[str, PublicKey]

    @property
    def latest(self) -> KeyringBody:
        return self.bodies[-1]

    @property
    def version(self) -> int:
        return self.latest.version

    @property
    def public_keys(self) -> list[PublicKey]:
        return list(self.keys.values())

    def problem(self, keyid: str, at: datetime) -> str | None:
        """Why ``keyid`` may not have signed at ``at`` (judged by the latest version)."""
        return self.latest.problem(keyid, at)

    def revocation(self, keyid: str) -> Revocation | None:
        return self.latest.revocation(keyid)

    def current_keyids(self, at: datetime) -> list[str]:
        return [k.keyid for k in self.latest.keys if self.latest.current(k.keyid, at)]


# --- reading -------------------------------------------------------------------------------------------------


class _File(_M):
    versions: Annotated[list[dsse.Envelope], Field(min_length=1)]


def _fail(message: str, hint: str = "restore the keyring from the operator's copy") -> VerificationError:
    return VerificationError(message, hint, step=STEP)


def _where(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "document"
    return f"{loc}: {first['msg']}"


def read_keyring(path: Path) -> list[dsse.Envelope]:
    """The envelopes of ``path`` (nothing verified); a malformed file names its line or field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read keyring {path}: {exc.strerror}", "check the --keyring path") from exc
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise _fail(f"{path}: not UTF-8 JSON ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise _fail(f"{path}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg})") from exc
    try:
        return _File.model_validate(data).versions
    except ValidationError as exc:
        raise _fail(f"{path}: not a sovkit keyring ({_where(exc)})",
                    "a keyring is {\"versions\": [DSSE envelope, ...]} as `sovkit keys rotate` writes it") from exc


def _body(envelope: dsse.Envelope, where: str) -> KeyringBody:
    if envelope.payload_type != PAYLOAD_TYPE:
        raise _fail(f"{where}: payload type {envelope.payload_type!r} is not a sovkit keyring")
    try:
        payload = base64.b64decode(envelope.payload, validate=True)
        return KeyringBody.model_validate_json(payload)
    except (binascii.Error, ValueError) as exc:
        detail = _where(exc) if isinstance(exc, ValidationError) else "payload is not base64"
        raise _fail(f"{where}: malformed ({detail})") from exc


def verify_keyring(envelopes: Sequence[dsse.Envelope], trusted: Sequence[PublicKey] | None,
                   source: str = "keyring") -> Keyring:
    """Check every version (see the module doc); ``trusted`` None: the keyring is anchored by whoever named
    it (an inventory's ``trust_roots.keyring``), so only its own chain is checked."""
    bodies: list[KeyringBody] = []
    digests: list[str] = []
    keys: dict[str, PublicKey] = {}
    vouched = trusted is None
    for n, envelope in enumerate(envelopes, start=1):
        where = f"{source}: version {n}"
        body = _body(envelope, where)
        if body.version != n:
            raise _fail(f"{where} says it is version {body.version}: versions were dropped or reordered")
        if body.previous != (digests[-1] if digests else None):
            raise _fail(f"{where} does not name the digest of version {n - 1}: a version was altered or replaced")
        issued = parse_time(body.issued)
        if bodies and issued < parse_time(bodies[-1].issued):
            raise _fail(f"{where} was issued at {body.issued}, before version {n - 1}")
        for i, k in enumerate(body.keys):
            try:
                key = PublicKey.from_pem(k.public_key.encode(), f"{where} keys.{i}.public_key")
            except SovkitError as exc:
                raise _fail(exc.message) from exc
            if key.keyid != k.keyid:
                raise _fail(f"{where} keys.{i}: keyid {short(k.keyid)} is not the id of its public key "
                            f"({short(key.keyid)})")
            keys[k.keyid] = key
        prior = bodies[-1] if bodies else body
        signers = [keys[k.keyid] for k in prior.keys
                   if (prior.current(k.keyid, issued) if bodies else prior.problem(k.keyid, issued) is None)]
        try:
            dsse.verify(envelope, signers)
        except VerificationError as exc:
            whose = f"a key current in version {n - 1}" if bodies else "one of its own keys"
            raise _fail(f"{where} is not signed by {whose} ({exc.message}): the keyring was altered, or extended "
                        "by a retired, revoked or unknown key") from exc
        if not vouched:
            try:
                dsse.verify(envelope, list(trusted or []))
                vouched = True
            except VerificationError:
                pass
        bodies.append(body)
        digests.append(payload_digest(envelope))
    if not vouched:
        given = ", ".join(short(k.keyid) for k in trusted or []) or "none"
        raise _fail(f"{source}: no version is signed by a key you trust ({given})",
                    "pass with --key a key that signed a version of this keyring (the operator's original key)")
    return Keyring(source, tuple(envelopes), tuple(bodies), tuple(digests), keys)


def load_keyring(path: Path, trusted: Sequence[PublicKey] | None) -> Keyring:
    """Read and verify ``path`` (raises :class:`VerificationError`, step ``keyring``)."""
    return verify_keyring(read_keyring(path), trusted, str(path))


# --- writing -------------------------------------------------------------------------------------------------


def write_keyring(path: Path, envelopes: Sequence[dsse.Envelope]) -> None:
    """Write through a temp file and rename: a crash leaves the old keyring or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"versions": [e.to_dict() for e in envelopes]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes((json.dumps(doc, indent=2) + "\n").encode())
    tmp.replace(path)


def _next(ring: Keyring | None, signer: Signer, at: str, keys: list[KeyWindow],
          revocations: list[Revocation]) -> Keyring:
    body = KeyringBody(version=ring.version + 1 if ring else 1, previous=ring.digests[-1] if ring else None,
                       issued=at, keys=keys, revocations=revocations)
    envelope = dsse.sign(body.to_bytes(), PAYLOAD_TYPE, signer)
    previous = list(ring.envelopes) if ring else []
    return verify_keyring([*previous, envelope], None, ring.source if ring else "keyring")


def _window(key: PublicKey, not_before: str | None = None, not_after: str | None = None) -> KeyWindow:
    return KeyWindow(keyid=key.keyid, public_key=key.pem().decode(), not_before=not_before, not_after=not_after)


def start(signer: Signer, at: str) -> Keyring:
    """Version 1: ``signer``'s key, valid since ever (it signed what came before the keyring)."""
    return _next(None, signer, at, [_window(signer.public_key)], [])


def _require_current(ring: Keyring, signer: Signer, at: str) -> None:
    when = parse_time(at)
    if not ring.latest.current(signer.keyid, when):
        why = ring.problem(signer.keyid, when) or f"key {short(signer.keyid)} was retired by version {ring.version}"
        current = ", ".join(map(short, ring.current_keyids(when))) or "none"
        raise SovkitError(f"{ring.source}: {why}: it cannot sign the next version",
                          f"sign with a current key of the keyring ({current})")


def rotate(ring: Keyring | None, old: Signer, new: PublicKey, at: str) -> Keyring:
    """Hand over from ``old`` to ``new`` at ``at``: old's window ends and new's starts then; signed by ``old``."""
    ring = ring or start(old, at)
    _require_current(ring, old, at)
    if ring.latest.window(new.keyid) is not None:
        raise SovkitError(f"key {short(new.keyid)} is already in {ring.source}", "rotate to a freshly generated key")
    keys = [k.model_copy(update={"not_after": at}) if k.keyid == old.keyid else k for k in ring.latest.keys]
    return _next(ring, old, at, [*keys, _window(new, not_before=at)], list(ring.latest.revocations))


def revoke(ring: Keyring, signer: Signer, keyid: str, revoked_at: str, reason: str, at: str) -> Keyring:
    """Add a revocation of ``keyid`` (any key: operator or trust root), signed by a current key."""
    _require_current(ring, signer, at)
    if keyid == signer.keyid:
        raise SovkitError("a key cannot revoke itself", "rotate to a new key first, then revoke the old one with it")
    earlier = ring.revocation(keyid)
    if earlier is not None:
        raise SovkitError(f"key {short(keyid)} is already revoked in {ring.source} (at {earlier.revoked_at})",
                          "a revocation is never changed")
    rev = Revocation(keyid=keyid, revoked_at=revoked_at, reason=reason)
    return _next(ring, signer, at, list(ring.latest.keys), [*ring.latest.revocations, rev])
