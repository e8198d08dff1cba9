"""Signing keys: generation, encrypted storage, loading, key ids.

This is the only module that imports ``cryptography.hazmat``. Everything else
signs through the :class:`Signer` port and verifies through :class:`PublicKey`,
so an HSM or KMS signer can be added without touching callers.

Key ids follow securesystemslib: sha256 over the canonical JSON of
``{"keytype", "scheme", "keyval": {"public": ...}}`` so independent verifiers
(securesystemslib, in-toto) find our keys by the same id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sovkit.errors import SigningKeyError

Algorithm = Literal["ed25519", "ecdsa-p256"]
ALGORITHMS: tuple[Algorithm, ...] = ("ed25519", "ecdsa-p256")
PASSPHRASE_ENV = "SOVKIT_KEY_PASSPHRASE"

_PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
_PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class Signer(Protocol):
    """Anything that can sign bytes under a stable key id (local key, HSM, KMS)."""

    @property
    def keyid(self) -> str: ...

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


def _canonical(obj: object) -> str:
    """OLPC canonical JSON for the str/dict shapes a key description has."""
    if isinstance(obj, str):
        return '"' + obj.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(obj, dict):
        items = sorted(obj.items())
        return "{" + ",".join(f"{_canonical(k)}:{_canonical(v)}" for k, v in items) + "}"
    raise TypeError(f"cannot canonicalise {type(obj).__name__}")


@dataclass(frozen=True)
class PublicKey:
    """A verification key with its securesystemslib-compatible id."""

    key: _PublicKey

    @property
    def keytype(self) -> str:
        return "ed25519" if isinstance(self.key, ed25519.Ed25519PublicKey) else "ecdsa"

    @property
    def scheme(self) -> str:
        return "ed25519" if self.keytype == "ed25519" else "ecdsa-sha2-nistp256"

    @property
    def public_value(self) -> str:
        if isinstance(self.key, ed25519.Ed25519PublicKey):
            raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return raw.hex()
        return self.pem().decode()

    @property
    def keyid(self) -> str:
        desc = {"keytype": self.keytype, "scheme": self.scheme, "keyval": {"public": self.public_value}}
        return hashlib.sha256(_canonical(desc).encode()).hexdigest()

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, data)
            else:
                self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_pem(cls, data: bytes, source: str = "<key>") -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise SigningKeyError(
                f"{source}: not a PEM public key ({exc})",
                "pass the .pub file written by `sovkit keys generate`",
            ) from exc
        if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
            raise SigningKeyError(f"{source}: unsupported curve {key.curve.name}", "use ECDSA P-256")
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise SigningKeyError(f"{source}: unsupported key type", "use Ed25519 or ECDSA P-256")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> PublicKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read public key {path}: {exc.strerror}", "check the path") from exc
        return cls.from_pem(data, str(path))

    @classmethod
    def from_point(cls, algorithm: Algorithm, point: bytes, source: str = "<key>") -> PublicKey:
        """A key from its raw public point (what a PKCS#11 token holds in ``CKA_EC_POINT``, unwrapped):
        32 bytes for Ed25519, the 65-byte uncompressed X9.62 point for P-256."""
        try:
            if algorithm == "ed25519":
                return cls(ed25519.Ed25519PublicKey.from_public_bytes(point))
            return cls(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point))
        except ValueError as exc:
            raise SigningKeyError(f"{source}: not a valid {algorithm} public key ({exc})",
                                  "the token's public key object is damaged or of another type") from exc


P256_SIZE = 32  # bytes in each of r and s


def ecdsa_raw_to_der(sig: bytes) -> bytes:
    """An ECDSA P-256 signature as PKCS#11 and JWS return it (r||s, 64 bytes) in the DER form
    :meth:`PublicKey.verify` and securesystemslib accept."""
    if len(sig) != 2 * P256_SIZE:
        raise SigningKeyError(f"an ECDSA P-256 signature is {2 * P256_SIZE} bytes r||s, got {len(sig)}",
                              "the token returned a signature for another curve or mechanism")
    return encode_dss_signature(int.from_bytes(sig[:P256_SIZE], "big"), int.from_bytes(sig[P256_SIZE:], "big"))


def ecdsa_der_to_raw(sig: bytes) -> bytes:
    """A DER ECDSA P-256 signature as r||s (64 bytes, what JWT ES256 carries)."""
    try:
        r, s = decode_dss_signature(sig)
    except ValueError as exc:
        raise SigningKeyError("not a DER-encoded ECDSA signature", "pass the signature sovkit wrote") from exc
    if r.bit_length() > 8 * P256_SIZE or s.bit_length() > 8 * P256_SIZE:
        raise SigningKeyError("the ECDSA signature is not a P-256 one", "sovkit signs with ECDSA P-256 only")
    return r.to_bytes(P256_SIZE, "big") + s.to_bytes(P256_SIZE, "big")


@dataclass(frozen=True)
class LocalSigner:
    """A signer holding a private key in memory (loaded from an encrypted PEM)."""

    private: _PrivateKey

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.private.public_key())

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(data)
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))

    def private_pem(self, passphrase: bytes | None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def generate(cls, algorithm: Algorithm = "ed25519") -> LocalSigner:
        if algorithm == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if algorithm == "ecdsa-p256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        raise SigningKeyError(f"unknown key algorithm {algorithm!r}", f"use one of {', '.join(ALGORITHMS)}")

    @classmethod
    def from_seed(cls, seed: bytes) -> LocalSigner:
        """A deterministic Ed25519 key (demo and test fixtures only: the seed *is* the key)."""
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None) -> LocalSigner:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read private key {path}: {exc.strerror}", "check the path") from exc
        try:
            key = serialization.load_pem_private_key(data, password=passphrase or None)
        except TypeError as exc:
            raise SigningKeyError(
                f"{path}: the key is encrypted and no passphrase was given",
                f"set {PASSPHRASE_ENV} or enter the passphrase when asked",
            ) from exc
        except ValueError as exc:
            raise SigningKeyError(
                f"{path}: cannot decrypt or parse the private key",
                f"check the passphrase in {PASSPHRASE_ENV}",
            ) from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise SigningKeyError(f"{path}: unsupported key type", "use Ed25519 or ECDSA P-256")
        return cls(key)


def write_keypair(signer: LocalSigner, private_path: Path, passphrase: bytes | None) -> Path:
    """Write ``private_path`` (0600, encrypted when a passphrase is given) and ``<private>.pub``.

    Refuses to overwrite an existing key: losing a signing key loses the
    ability to prove what was signed with it.
    """
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise SigningKeyError(f"{p} already exists", "choose another name or move the old key away")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(private_path, signer.private_pem(passphrase), 0o600)
    _write_new(public_path, signer.public_key.pem(), 0o644)
    return public_path


def write_public_key(key: PublicKey, path: Path) -> Path:
    """Write a public key PEM (0644), refusing to overwrite (a swapped .pub would trust another key)."""
    if path.exists():
        raise SigningKeyError(f"{path} already exists", "choose another name or move the old key away")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(path, key.pem(), 0o644)
    return path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with exactly ``mode`` whatever the umask (a 0666 .pub could be swapped by anyone)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)


def load_public_keys(paths: list[Path]) -> list[PublicKey]:
    """Each PEM public key file, in order (the trusted keys of a verify command)."""
    return [PublicKey.load(p) for p in paths]


@dataclass(frozen=True)
class KeyInfo:
    """A public key as ``sovkit keys id`` reports it (the id verifiers look the key up by)."""

    path: str
    keyid: str
    keytype: str
    scheme: str


def key_info(path: Path) -> KeyInfo:
    """A public key's algorithm and key id (as securesystemslib computes it)."""
    key = PublicKey.load(path)
    return KeyInfo(str(path), key.keyid, key.keytype, key.scheme)


@dataclass(frozen=True)
class GeneratedKey:
    """What ``sovkit keys generate`` wrote: the private and public key files and the key id."""

    private_key: str
    public_key: str
    keyid: str
    algorithm: Algorithm
    encrypted: bool


def generate_key(private_path: Path, algorithm: Algorithm, passphrase: bytes | None) -> GeneratedKey:
    """Generate a key pair and write it with :func:`write_keypair` (never overwrites)."""
    signer = LocalSigner.generate(algorithm)
    public = write_keypair(signer, private_path, passphrase)
    return GeneratedKey(str(private_path), str(public), signer.keyid, algorithm, passphrase is not None)

