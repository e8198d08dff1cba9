"""Signing keys held in a PKCS#11 token (an HSM, a smart card, SoftHSM): the only module importing ``pkcs11``.

A key is named by an RFC 7512 URI, ``pkcs11:token=T;object=O[;id=%01%02][?pin-source=file:/p&module-path=/m.so]``.
The private key never leaves the token: sovkit asks the token to sign and exports only the public key, which
becomes a :class:`~sovkit.signing.keys.PublicKey` so the key id is the securesystemslib one and every
verifier (``sovkit verify``, securesystemslib, in-toto) checks HSM signatures like file-key signatures.

Supported: ECDSA P-256 (``CKM_ECDSA`` over a SHA-256 digest computed here, so tokens without
``CKM_ECDSA_SHA256`` work too; the token's raw r||s is returned as DER) and Ed25519 (``CKM_EDDSA``, PKCS#11
3.0; SoftHSM 2.6 has it, many hardware tokens do not). The PIN never comes from the command line: it is read
from ``pin-source=file:`` in the URI, else ``$SOVKIT_PKCS11_PIN``, else the caller's prompt (the CLI asks on
a terminal). A ``pin-value=`` in the URI is refused: a URI is often on a command line or in a shell history.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.types import SignMixin

from sovkit.errors import SigningKeyError
from sovkit.signing.keys import Algorithm, PublicKey, ecdsa_raw_to_der, write_public_key

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Lib

URI_SCHEME = "pkcs11:"
PIN_ENV = "SOVKIT_PKCS11_PIN"
MODULE_ENV = "SOVKIT_PKCS11_MODULE"
#: Debian/Ubuntu's SoftHSM2 module: the default only when it is installed (never guessed otherwise)
DEFAULT_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")

PinPrompt = Callable[[str], str | None]

# RFC 7512 value characters (a strict subset: anything else must be percent-encoded)
_PATH_VALUE = re.compile(r"^(?:[A-Za-z0-9\-._~:@!$'()*+,]|%[0-9A-Fa-f]{2})*$")
_QUERY_VALUE = re.compile(r"^(?:[A-Za-z0-9\-._~:@!$'()*+,/]|%[0-9A-Fa-f]{2})*$")
#: a token label as CK_TOKEN_INFO holds it: at most 32 printable ASCII characters, no edge blanks (padding)
TOKEN_LABEL = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?$")
#: an object label sovkit creates or looks up: a name, no path separators or control characters
OBJECT_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@+-]{0,63}$")
_TOKEN_FILTERS = ("serial", "model", "manufacturer")
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # OID 1.2.840.10045.3.1.7 (prime256v1)
_ED25519_PARAMS = (bytes.fromhex("06032b6570"),  # OID 1.3.101.112
                   bytes.fromhex("130c") + b"edwards25519")  # PrintableString form (PKCS#11 3.0)


def is_key_uri(ref: str | os.PathLike[str]) -> bool:
    """A key reference that names a token key rather than a key file."""
    return str(ref).startswith(URI_SCHEME)


def _bad(uri: str, why: str, hint: str = "write pkcs11:token=LABEL;object=LABEL (RFC 7512; percent-encode "
                                           "other characters)") -> SigningKeyError:
    return SigningKeyError(f"not a usable PKCS#11 key URI ({why}): {_redact(uri)}", hint)


def _redact(uri: str) -> str:
    """The URI for messages, with any pin-value dropped (it must not reach a log)."""
    return re.sub(r"pin-value=[^&]*", "pin-value=…", uri)[:300]


def _attributes(uri: str, part: str, sep: str, value_re: re.Pattern[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if not part:
        return out
    for item in part.split(sep):
        name, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            raise _bad(uri, f"{item[:40]!r} is not NAME=VALUE")
        if name in out:
            raise _bad(uri, f"{name} given twice")
        if not value_re.fullmatch(value):
            raise _bad(uri, f"the value of {name} has a character that must be percent-encoded")
        out[name] = unquote_to_bytes(value)
    return out


def _text(uri: str, name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(uri, f"{name} is not UTF-8") from None


def _abs_path(uri: str, name: str, value: bytes) -> Path:
    text = _text(uri, name, value)
    if "\x00" in text or not text.startswith("/"):
        raise _bad(uri, f"{name} must be an absolute path", f"e.g. {name}=/etc/sovkit/hsm.pin")
    return Path(text)


@dataclass(frozen=True)
class KeyUri:
    """A parsed RFC 7512 key URI (only what sovkit uses; anything else is refused, not ignored)."""

    token: str
    object: str
    id: bytes | None = None
    serial: str | None = None
    model: str | None = None
    manufacturer: str | None = None
    pin_source: Path | None = None
    module_path: Path | None = None

    @classmethod
    def parse(cls, uri: str) -> KeyUri:
        if not uri.startswith(URI_SCHEME):
            raise _bad(uri, "it does not start with pkcs11:")
        path, _, query = uri[len(URI_SCHEME):].partition("?")
        attrs = _attributes(uri, path, ";", _PATH_VALUE)
        params = _attributes(uri, query, "&", _QUERY_VALUE)
        unknown = sorted(set(attrs) - {"token", "object", "id", "type", *_TOKEN_FILTERS})
        if unknown:
            raise _bad(uri, f"unsupported attribute {unknown[0]}",
                       "sovkit selects keys by token, object and id (serial, model, manufacturer narrow the "
                       "token); slot-* and library-* are not supported")
        if "pin-value" in params:
            raise _bad(uri, "pin-value is refused: the PIN would be on the command line",
                       f"set {PIN_ENV} or put pin-source=file:/PATH in the URI")
        unknown = sorted(set(params) - {"pin-source", "module-path"})
        if unknown:
            raise _bad(uri, f"unsupported query attribute {unknown[0]}", "use pin-source= and module-path=")
        if "token" not in attrs or "object" not in attrs:
            raise _bad(uri, "token= and object= are both required")
        token = _text(uri, "token", attrs["token"])
        if not TOKEN_LABEL.fullmatch(token):
            raise _bad(uri, "token must be 1-32 printable ASCII characters, no leading or trailing blank")
        obj = _text(uri, "object", attrs["object"])
        if not OBJECT_LABEL.fullmatch(obj):
            raise _bad(uri, "object must start with a letter or digit and hold only letters, digits, blanks "
                            "and . _ : @ + - (at most 64)")
        if "type" in attrs and attrs["type"] != b"private":
            raise _bad(uri, "type must be private (sovkit signs with the private key)")
        key_id = attrs.get("id")
        if key_id is not None and not 1 <= len(key_id) <= 64:
            raise _bad(uri, "id must be 1-64 percent-encoded bytes, e.g. id=%01%a2")
        filters = {k: _text(uri, k, attrs[k]) for k in _TOKEN_FILTERS if k in attrs}
        if any(not TOKEN_LABEL.fullmatch(v) for v in filters.values()):
            raise _bad(uri, "serial, model and manufacturer are printable ASCII of at most 32 characters")
        pin_source = None
        if "pin-source" in params:
            raw = params["pin-source"]
            pin_source = _abs_path(uri, "pin-source", raw[len(b"file:"):] if raw.startswith(b"file:") else raw)
        module = _abs_path(uri, "module-path", params["module-path"]) if "module-path" in params else None
        return cls(token=token, object=obj, id=key_id, pin_source=pin_source, module_path=module, **filters)

    @property
    def name(self) -> str:
        """The key for messages: token and object, no query (never a PIN source path's secrets)."""
        return f"object {self.object!r} in token {self.token!r}"


# --- module, token, PIN -------------------------------------------------------------------------------------------

_LIBS: dict[str, Pkcs11Lib] = {}
_LIBS_LOCK = threading.Lock()


def module_path(uri: KeyUri) -> Path:
    """``module-path=`` in the URI, else ``$SOVKIT_PKCS11_MODULE``, else SoftHSM2 where Debian installs it."""
    chosen = uri.module_path or (Path(os.environ[MODULE_ENV]) if os.environ.get(MODULE_ENV) else None)
    if chosen is None:
        if DEFAULT_MODULE.exists():
            return DEFAULT_MODULE
        raise SigningKeyError(f"no PKCS#11 module for {uri.name}",
                              f"set {MODULE_ENV} or add ?module-path=/path/to/module.so to the URI (the default, "
                              f"{DEFAULT_MODULE} from Debian's softhsm2, is not installed)")
    if not chosen.is_file():
        raise SigningKeyError(f"PKCS#11 module {chosen} not found",
                              f"install the token's PKCS#11 library or fix {MODULE_ENV} / module-path=")
    return chosen


def _lib(path: Path) -> Pkcs11Lib:
    """One loaded module per path and process (C_Initialize may run once)."""
    with _LIBS_LOCK:
        if str(path) not in _LIBS:
            try:
                _LIBS[str(path)] = pkcs11.lib(str(path))
            except p11.PKCS11Error as exc:
                raise SigningKeyError(f"cannot load PKCS#11 module {path}: {exc}",
                                      "is it a PKCS#11 library for this machine's architecture?") from exc
        return _LIBS[str(path)]


def _token_matches(token: pkcs11.Token, uri: KeyUri) -> bool:
    """serial=, model=, manufacturer= in the URI narrow the token (as p11tool prints them)."""
    serial = token.serial.decode("ascii", "replace").strip() if isinstance(token.serial, bytes) else str(token.serial)
    return ((uri.serial is None or uri.serial == serial) and (uri.model is None or uri.model == token.model.strip())
            and (uri.manufacturer is None or uri.manufacturer == token.manufacturer_id.strip()))


def _token(lib: Pkcs11Lib, uri: KeyUri) -> pkcs11.Token:
    tokens = [s.get_token() for s in lib.get_slots(token_present=True)]
    wanted = [t for t in tokens if t.label == uri.token and _token_matches(t, uri)]
    if not wanted:
        labels = sorted({repr(t.label) for t in tokens if t.label})
        present = f"tokens present: {', '.join(labels)}" if labels else "no initialised token is present"
        raise SigningKeyError(f"PKCS#11 token {uri.token!r} not found in {lib.so} ({present})",
                              "check token= in the key URI, or create the token (e.g. softhsm2-util --init-token)")
    if len(wanted) > 1:
        raise SigningKeyError(f"{len(wanted)} PKCS#11 tokens are labelled {uri.token!r}",
                              "add serial=… to the key URI to pick one")
    token: pkcs11.Token = wanted[0]
    return token


def resolve_pin(uri: KeyUri, prompt: PinPrompt | None) -> str:
    """``pin-source=file:`` in the URI, else ``$SOVKIT_PKCS11_PIN``, else ``prompt`` (None: no terminal)."""
    if uri.pin_source is not None:
        try:
            pin = uri.pin_source.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningKeyError(f"cannot read the PIN file {uri.pin_source} (pin-source)",
                                  "check the path and its permissions") from exc
        if not pin:
            raise SigningKeyError(f"the PIN file {uri.pin_source} is empty", "write the user PIN into it")
        return pin
    env = os.environ.get(PIN_ENV)
    if env:
        return env
    asked = prompt(f"PIN for {uri.name}") if prompt is not None else None
    if not asked:
        raise SigningKeyError(f"no PIN for {uri.name}",
                              f"set {PIN_ENV}, add ?pin-source=file:/PATH to the URI, or run on a terminal to be "
                              "asked (never on the command line)")
    return asked


@dataclass
class _Login:
    """The logged-in session a process holds on one token. PKCS#11 login state belongs to the application,
    not the session (a second login fails, one logout ends all), so every signer on the token shares it."""

    session: pkcs11.Session
    lock: threading.Lock


_SESSIONS: dict[tuple[str, bytes], _Login] = {}


def _shared_login(lib: Pkcs11Lib, token: pkcs11.Token, uri: KeyUri, prompt: PinPrompt | None) -> _Login:
    key = (lib.so, bytes(token.serial))
    with _LIBS_LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = _Login(_login(token, uri, resolve_pin(uri, prompt), rw=False), threading.Lock())
        return _SESSIONS[key]


def close_sessions() -> None:
    """Log out of every token this process logged in to (signers made before stop working)."""
    with _LIBS_LOCK:
        for login in _SESSIONS.values():
            with contextlib.suppress(p11.PKCS11Error):  # the token went away: nothing left to release
                login.session.close()
        _SESSIONS.clear()


def _login(token: pkcs11.Token, uri: KeyUri, pin: str, rw: bool) -> pkcs11.Session:
    try:
        return token.open(rw=rw, user_pin=pin)
    except p11.UserAlreadyLoggedIn:  # this process is logged in already (a signer on this token exists)
        return token.open(rw=rw)
    except p11.PinIncorrect:
        raise SigningKeyError(f"wrong PIN for PKCS#11 token {uri.token!r} (CKR_PIN_INCORRECT)",
                              f"check {PIN_ENV} or the pin-source file; repeated failures may lock the PIN") from None
    except p11.PinLocked:
        raise SigningKeyError(f"the user PIN of PKCS#11 token {uri.token!r} is locked (CKR_PIN_LOCKED)",
                              "the token's security officer must unlock or reset it") from None
    except (p11.PinLenRange, p11.PinInvalid):
        raise SigningKeyError(f"the PIN for PKCS#11 token {uri.token!r} has a length or character the token "
                              "refuses", f"check {PIN_ENV} or the pin-source file") from None
    except p11.UserPinNotInitialized:
        raise SigningKeyError(f"PKCS#11 token {uri.token!r} has no user PIN yet",
                              "initialise the user PIN with the token's tool") from None
    except p11.PKCS11Error as exc:
        raise _token_error(uri, "cannot log in", exc) from None


def _token_error(uri: KeyUri, what: str, exc: p11.PKCS11Error) -> SigningKeyError:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return SigningKeyError(f"PKCS#11 token {uri.token!r}: {what} ({detail})",
                           "see the token's documentation for this error")


# --- keys -----------------------------------------------------------------------------------------------------------


def _algorithm(uri: KeyUri, key: pkcs11.Key) -> Algorithm:
    params = bytes(key[Attribute.EC_PARAMS])
    if key.key_type == KeyType.EC and params == _P256_PARAMS:
        return "ecdsa-p256"
    if key.key_type == KeyType.EC_EDWARDS and params in _ED25519_PARAMS:
        return "ed25519"
    raise SigningKeyError(f"{uri.name} is a {key.key_type.name} key sovkit cannot sign with",
                          "use an ECDSA P-256 or Ed25519 key (sovkit keys generate --pkcs11 URI)")


def _unwrap_point(point: bytes, size: int) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40+); some tokens give it bare."""
    if len(point) == size + 2 and point[0] == 0x04 and point[1] == size:
        return point[2:]
    return point


def _find(session: pkcs11.Session, uri: KeyUri, cls: ObjectClass, key_id: bytes | None) -> pkcs11.Key:
    try:
        return session.get_key(object_class=cls, label=uri.object, id=key_id)
    except p11.NoSuchKey:
        what = "private key" if cls == ObjectClass.PRIVATE_KEY else "public key"
        labels = sorted({repr(str(o[Attribute.LABEL])) for o in session.get_objects({Attribute.CLASS: cls})})
        present = f"{what}s present: {', '.join(labels)}" if labels else f"the token holds no {what}"
        hint = ("create it with `sovkit keys generate --pkcs11 URI`" if cls == ObjectClass.PRIVATE_KEY
                else "import the public key into the token with the private key's label and id")
        raise SigningKeyError(f"no {what} {uri.object!r}"
                              + (f" with id {key_id.hex()}" if key_id else "")
                              + f" in PKCS#11 token {uri.token!r} ({present})", hint) from None
    except p11.MultipleObjectsReturned:
        raise SigningKeyError(f"several keys are labelled {uri.object!r} in PKCS#11 token {uri.token!r}",
                              "add id=%.. to the key URI to pick one") from None


class Pkcs11Signer:
    """A :class:`~sovkit.signing.keys.Signer` whose private key stays in the token.

    Uses the process's one logged-in session on the token (a run signs many attestations); signing is
    serialised because a PKCS#11 session must not run two operations at once. Each signature is checked
    against the exported public key before it is returned, so a token whose public object does not match its
    private key fails here, not later at an auditor's desk.
    """

    def __init__(self, uri: KeyUri, login: _Login, private: SignMixin, public: PublicKey,
                 algorithm: Algorithm) -> None:
        self.uri = uri
        self.algorithm: Algorithm = algorithm
        self._login = login
        self._private = private
        self._public = public

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def keyid(self) -> str:
        return self._public.keyid

    def sign(self, data: bytes) -> bytes:
        with self._login.lock:
            try:
                if self.algorithm == "ecdsa-p256":
                    raw = self._private.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)
                    signature = ecdsa_raw_to_der(bytes(raw))
                else:
                    signature = bytes(self._private.sign(data, mechanism=Mechanism.EDDSA))
            except p11.PKCS11Error as exc:
                raise _token_error(self.uri, f"signing with {self.uri.object!r} failed", exc) from None
        if not self._public.verify(signature, data):
            raise SigningKeyError(f"the signature by {self.uri.name} does not verify with its public key object",
                                  "the token's public and private objects of this label do not belong together")
        return signature


def open_signer(ref: str, prompt: PinPrompt | None = None) -> Pkcs11Signer:
    """Log in to the token named by the URI ``ref`` (once per process) and find its private and public key."""
    uri = KeyUri.parse(ref)
    lib = _lib(module_path(uri))
    login = _shared_login(lib, _token(lib, uri), uri, prompt)
    with login.lock:
        try:
            private = _find(login.session, uri, ObjectClass.PRIVATE_KEY, uri.id)
            algorithm = _algorithm(uri, private)
            key_id = uri.id or (bytes(private[Attribute.ID]) or None)
            public = _find(login.session, uri, ObjectClass.PUBLIC_KEY, key_id)
            point = _unwrap_point(bytes(public[Attribute.EC_POINT]), 32 if algorithm == "ed25519" else 65)
        except p11.PKCS11Error as exc:
            raise _token_error(uri, f"cannot read key {uri.object!r}", exc) from None
    key = PublicKey.from_point(algorithm, point, uri.name)
    if not isinstance(private, SignMixin):  # a private EC key is one; this also tells mypy
        raise SigningKeyError(f"{uri.name} is not a private key", "name the private key in object=")
    return Pkcs11Signer(uri, login, private, key, algorithm)


@dataclass(frozen=True)
class GeneratedTokenKey:
    """What ``sovkit keys generate --pkcs11`` made: where the key lives, its public PEM and id, and the
    protection attributes as the token reports them after generation."""

    uri: str
    token: str
    object: str
    id: str
    public_key: str
    keyid: str
    algorithm: Algorithm
    sensitive: bool
    extractable: bool


def generate(ref: str, algorithm: Algorithm, public_path: Path | None = None,
             prompt: PinPrompt | None = None) -> GeneratedTokenKey:
    """Generate a key pair in the token (private: sensitive, never extractable) and write its public PEM
    (default ``<object>.pub``).

    Refuses a label already in use and an existing ``public_path`` before creating anything in the token.
    """
    uri = KeyUri.parse(ref)
    public_path = public_path or Path(f"{uri.object}.pub")
    if public_path.exists():
        raise SigningKeyError(f"{public_path} already exists", "choose another name or move the old key away")
    token = _token(_lib(module_path(uri)), uri)
    key_id = uri.id or os.urandom(8)
    with _login(token, uri, resolve_pin(uri, prompt), rw=True) as session:
        taken = list(session.get_objects({Attribute.LABEL: uri.object}))
        if taken:
            raise SigningKeyError(f"PKCS#11 token {uri.token!r} already holds {len(taken)} object(s) labelled "
                                  f"{uri.object!r}", "choose another object= name (an existing key is never "
                                                     "replaced)")
        ec_params = _P256_PARAMS if algorithm == "ecdsa-p256" else _ED25519_PARAMS[0]
        key_type = KeyType.EC if algorithm == "ecdsa-p256" else KeyType.EC_EDWARDS
        mechanism = Mechanism.EC_KEY_PAIR_GEN if algorithm == "ecdsa-p256" else Mechanism.EC_EDWARDS_KEY_PAIR_GEN
        try:
            params = session.create_domain_parameters(key_type, {Attribute.EC_PARAMS: ec_params}, local=True)
            public, private = params.generate_keypair(
                store=True, label=uri.object, id=key_id, mechanism=mechanism,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template={Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True},
                private_template={Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                                  Attribute.EXTRACTABLE: False, Attribute.SIGN: True},
            )
        except p11.MechanismInvalid:
            raise SigningKeyError(f"PKCS#11 token {uri.token!r} cannot generate {algorithm} keys",
                                  "try --algorithm ecdsa-p256 (Ed25519 needs a PKCS#11 3.0 token)") from None
        except p11.PKCS11Error as exc:
            raise _token_error(uri, f"generating {algorithm} key {uri.object!r} failed", exc) from None
        point = _unwrap_point(bytes(public[Attribute.EC_POINT]), 32 if algorithm == "ed25519" else 65)
        key = PublicKey.from_point(algorithm, point, uri.name)
        sensitive, extractable = bool(private[Attribute.SENSITIVE]), bool(private[Attribute.EXTRACTABLE])
    write_public_key(key, public_path)
    return GeneratedTokenKey(uri=_canonical_uri(uri, key_id), token=uri.token, object=uri.object, id=key_id.hex(),
                             public_key=str(public_path), keyid=key.keyid, algorithm=algorithm,
                             sensitive=sensitive, extractable=extractable)


def _canonical_uri(uri: KeyUri, key_id: bytes) -> str:
    """The URI of the new key (token, object, id; no query): what to pass to --key."""
    def enc(value: bytes) -> str:
        return "".join(chr(b) if chr(b).isalnum() or chr(b) in "-._~" else f"%{b:02x}" for b in value)

    return f"{URI_SCHEME}token={enc(uri.token.encode())};object={enc(uri.object.encode())};id=" \
        + "".join(f"%{b:02x}" for b in key_id)
