"""OPA bundle signing: ``.signatures.json`` written and checked exactly as OPA defines it.

The format (OPA docs, management-bundles "Signing"; source ``v1/bundle/{sign,verify,hash,bundle}.go``):

- ``.signatures.json`` at the bundle root is ``{"signatures": ["<JWT>"]}`` with exactly one compact JWS.
- The JWT payload is ``{"files": [{"name", "hash", "algorithm": "SHA-256"}, ...], "keyid": ...}``: every file
  of the bundle except ``.signatures.json`` itself, by its path in the bundle (no leading ``/``). OPA refuses a
  bundle with a file the payload does not list, a listed file that is missing, or a digest that differs.
- Files named ``data.json``, ``data.yaml``, ``.manifest`` (OPA's ``IsStructuredDoc``) are hashed over their
  parsed JSON, not their bytes: objects as ``{`` key ``:`` value ... ``}`` with keys sorted, arrays as
  ``[`` ... ``]``, strings as Go's ``encoding/json`` writes them without HTML escaping, numbers as their
  literal text (OPA decodes with ``UseNumber``). Every other file (``.rego``) is hashed over its raw bytes.
- The key is named by the ``kid`` JWT header (OPA's signer also puts the deprecated ``keyid`` claim in the
  payload); no ``scope`` claim is written, so OPA must be run without a verification scope.

sovkit signs with ES256 (ECDSA P-256, signature as raw r||s). OPA's key configuration accepts the ES, PS, RS
and HS families only, not EdDSA, so an Ed25519 key is refused for bundles. Signing goes through the
:class:`~sovkit.signing.keys.Signer` port, so an HSM key signs bundles like a file key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
import re
from typing import Any

from sovkit.errors import PolicyBundleInvalid, PolicyError, SigningKeyError
from sovkit.signing.canonical import canonical_json
from sovkit.signing.keys import PublicKey, Signer, ecdsa_der_to_raw, ecdsa_raw_to_der

SIGNATURES_FILE = ".signatures.json"
ALGORITHM = "ES256"
HASH_ALGORITHM = "SHA-256"
#: base names OPA hashes as parsed JSON (bundle.IsStructuredDoc)
STRUCTURED = frozenset({"data.json", "data.yaml", ".manifest", "signatures.json"})

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
               "\u2028": "\\u2028", "\u2029": "\\u2029"}
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f\u2028\u2029]')


class _Number(str):
    """A JSON number kept as its literal text: OPA decodes with UseNumber and hashes that text."""


def _go_string(s: str) -> str:
    """``s`` as Go's json.Encoder writes it with SetEscapeHTML(false) (Go >= 1.22: \\b and \\f short forms)."""
    s = _SURROGATE.sub("\ufffd", s)  # Go decodes an unpaired surrogate escape to U+FFFD
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _GO_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), s) + '"'


def _walk(value: Any, out: list[str]) -> None:
    """OPA's ``hash.go`` walk: the text a structured document is hashed as."""
    if isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: _SURROGATE.sub("\ufffd", k).encode())):
            if i:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _walk(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _walk(item, out)
        out.append("]")
    elif isinstance(value, _Number):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    else:  # pragma: no cover - json.loads yields only the types above
        raise TypeError(type(value).__name__)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def file_hash(name: str, raw: bytes) -> str:
    """The SHA-256 hex digest OPA records for bundle file ``name`` holding ``raw``."""
    if posixpath.basename(name) not in STRUCTURED:
        return hashlib.sha256(raw).hexdigest()
    text = raw.removeprefix(b"\xef\xbb\xbf")  # OPA strips a UTF-8 BOM before parsing
    try:
        value = json.loads(text.decode("utf-8"), parse_int=_Number, parse_float=_Number,
                           parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PolicyError(f"policy bundle file {name} is not JSON: {exc}", "a sovkit bundle's .manifest and "
                          "data.json are JSON") from exc
    out: list[str] = []
    _walk(value, out)
    return hashlib.sha256("".join(out).encode("utf-8")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(part: str, what: str) -> bytes:
    if not _B64URL.match(part):
        raise binascii.Error(f"{what} is not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def sign_files(files: dict[str, bytes], signer: Signer) -> bytes:
    """The ``.signatures.json`` bytes for ``files`` (bundle path -> content), signed by ``signer`` (ES256)."""
    if signer.public_key.keytype != "ecdsa":
        raise SigningKeyError(
            f"key {signer.keyid[:16]}… is Ed25519: OPA verifies bundle signatures with ES/PS/RS/HS keys only "
            "(no EdDSA)",
            "sign policy bundles with an ECDSA P-256 key: `sovkit keys generate --algorithm ecdsa-p256 -o KEY`")
    header = {"alg": ALGORITHM, "kid": signer.keyid, "typ": "JWT"}
    payload = {"files": [{"name": name, "hash": file_hash(name, raw), "algorithm": HASH_ALGORITHM}
                         for name, raw in files.items()],
               "keyid": signer.keyid}
    signing_input = _b64(canonical_json(header)) + "." + _b64(canonical_json(payload))
    signature = ecdsa_der_to_raw(signer.sign(signing_input.encode("ascii")))
    return json.dumps({"signatures": [f"{signing_input}.{_b64(signature)}"]}, indent=1).encode() + b"\n"


def _token(raw: bytes, source: str) -> str:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PolicyBundleInvalid(f"policy bundle {source}: {SIGNATURES_FILE} is not JSON ({exc})",
                                  "the bundle is damaged; sign it again with `sovkit policy bundle --sign`") from exc
    sigs = doc.get("signatures") if isinstance(doc, dict) else None
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], str):
        raise PolicyBundleInvalid(f"policy bundle {source}: {SIGNATURES_FILE} must hold exactly one JWT "
                                  "under \"signatures\"", "sign it again with `sovkit policy bundle --sign`")
    return sigs[0]


def _claims(token: str, keys: list[PublicKey], source: str) -> tuple[PublicKey, dict[str, Any]]:
    """The trusted key that signed ``token`` and the payload, once the JWS signature has verified."""
    bad = f"policy bundle {source}: the signature in {SIGNATURES_FILE}"
    parts = token.split(".")
    if len(parts) != 3:
        raise PolicyBundleInvalid(f"{bad} is not a compact JWT", "sign the bundle again")
    try:
        header = json.loads(_unb64(parts[0], "header"))
        payload = json.loads(_unb64(parts[1], "payload"))
        signature = _unb64(parts[2], "signature")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise PolicyBundleInvalid(f"{bad} cannot be decoded ({exc})", "sign the bundle again") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise PolicyBundleInvalid(f"{bad} has a malformed header or payload", "sign the bundle again")
    if header.get("alg") != ALGORITHM:
        raise PolicyBundleInvalid(f"{bad} uses algorithm {header.get('alg')!r}; sovkit accepts {ALGORITHM}",
                                  "sign the bundle with `sovkit policy bundle --sign` and an ECDSA P-256 key")
    kid = header.get("kid") or payload.get("keyid")
    key = next((k for k in keys if k.keyid == kid), None)
    if key is None:
        trusted = ", ".join(k.keyid[:16] + "…" for k in keys)
        raise PolicyBundleInvalid(f"{bad} names key {str(kid)[:16]}…, which is not a trusted bundle key "
                                  f"(trusted: {trusted})", "verify with the key that signed it (--bundle-key, or "
                                  "trust_roots.policy_bundles), or sign the bundle with a trusted key")
    try:
        ok = key.keytype == "ecdsa" and key.verify(ecdsa_raw_to_der(signature), f"{parts[0]}.{parts[1]}".encode())
    except SigningKeyError:
        ok = False
    if not ok:
        raise PolicyBundleInvalid(f"{bad} does not verify with key {key.keyid[:16]}…",
                                  "the signature or the signed file list was altered: do not use this bundle")
    if payload.get("scope") not in (None, ""):
        raise PolicyBundleInvalid(f"{bad} has scope {payload.get('scope')!r}; sovkit verifies without a scope",
                                  "sign the bundle with `sovkit policy bundle --sign`")
    return key, payload


def _signed_files(payload: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    entries = payload.get("files")
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(entries, list):
        raise PolicyBundleInvalid(f"policy bundle {source}: the signed payload lists no files", "sign it again")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or entry["name"] in out:
            raise PolicyBundleInvalid(f"policy bundle {source}: the signed file list is malformed or names a file "
                                      "twice", "sign the bundle again")
        out[entry["name"]] = entry
    return out


def verify_files(files: dict[str, bytes], keys: list[PublicKey] | None, source: str) -> str | None:
    """Check ``files`` (bundle path -> bytes, ``.signatures.json`` included if present) as OPA does.

    Returns the signer's key id, or None for an unsigned bundle when no key is configured. Raises
    :class:`PolicyBundleInvalid` naming what failed: unsigned while a key is configured, signed with no key to
    check it, a signature that does not verify or is by an untrusted key, a file added, removed or changed.
    """
    raw = files.get(SIGNATURES_FILE)
    if raw is None:
        if keys:
            raise PolicyBundleInvalid(f"policy bundle {source} is not signed (no {SIGNATURES_FILE}) but a bundle "
                                      "key is configured", "use a bundle written by `sovkit policy bundle --sign "
                                      "KEY`")
        return None
    if not keys:
        raise PolicyBundleInvalid(f"policy bundle {source} is signed but no key to verify it is configured",
                                  "pass --bundle-key PUB or list the key under trust_roots.policy_bundles")
    key, payload = _claims(_token(raw, source), keys, source)
    signed = _signed_files(payload, source)
    problems: list[str] = []
    for name, data in files.items():
        if name == SIGNATURES_FILE:
            continue
        entry = signed.pop(name, None)
        if entry is None:
            problems.append(f"{name}: not covered by the signature (added after signing)")
        elif entry.get("algorithm") != HASH_ALGORITHM:
            problems.append(f"{name}: digest algorithm {entry.get('algorithm')!r} (sovkit accepts {HASH_ALGORITHM})")
        elif entry.get("hash") != file_hash(name, data):
            problems.append(f"{name}: digest mismatch (changed after signing)")
    problems += [f"{name}: signed but missing from the bundle (removed after signing)" for name in sorted(signed)]
    if problems:
        raise PolicyBundleInvalid(f"policy bundle {source} does not match its signature: " + "; ".join(problems),
                                  "the bundle was altered after signing: do not use it; write and sign it again")
    return key.keyid
