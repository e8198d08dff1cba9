"""The Signer contract, run on every adapter: local keys (generated and loaded from an encrypted PEM)
and the seeded fake. Signatures and key ids are checked with securesystemslib, an independent
implementation; DSSE envelopes are checked by sovkit and by securesystemslib.

Adding an adapter (an HSM or KMS signer, ...) is one line in ``ADAPTERS``: a function returning a signer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope as SslEnvelope
from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Signature as SslSignature
from securesystemslib.signer import SSlibKey

from sovkit.errors import VerificationError
from sovkit.fakes import SeededSigner
from sovkit.signing import dsse
from sovkit.signing.keys import LocalSigner, PublicKey, Signer, write_keypair


def local_ed25519(tmp: Path) -> Signer:
    return LocalSigner.generate("ed25519")


def local_ecdsa_p256(tmp: Path) -> Signer:
    return LocalSigner.generate("ecdsa-p256")


def local_encrypted_pem(tmp: Path) -> Signer:
    write_keypair(LocalSigner.generate("ecdsa-p256"), tmp / "op.key", b"contract passphrase")
    return LocalSigner.load(tmp / "op.key", b"contract passphrase")


def seeded(tmp: Path) -> Signer:
    return SeededSigner("contract test seed")


ADAPTERS: list[Callable[[Path], Signer]] = [local_ed25519, local_ecdsa_p256, local_encrypted_pem, seeded]


@pytest.fixture(params=ADAPTERS, ids=lambda f: f.__name__)
def signer(request: pytest.FixtureRequest, tmp_path: Path) -> Signer:
    factory: Callable[[Path], Signer] = request.param
    return factory(tmp_path)


def _sslib_key(pub: PublicKey) -> SSlibKey:
    return SSlibKey.from_crypto(serialization.load_pem_public_key(pub.pem()))  # type: ignore[arg-type]


DATA = b"sovkit contract: bytes to sign \x00\xff"

# ---------------------------------------------------------------------------------------------- contract


def keyid_is_securesystemslibs(s: Signer) -> None:
    key = _sslib_key(s.public_key)
    assert s.keyid == key.keyid == s.public_key.keyid
    assert (key.keytype, key.scheme) == (s.public_key.keytype, s.public_key.scheme)
    assert s.keyid == s.keyid and s.public_key.pem() == s.public_key.pem()


def signature_verifies_independently(s: Signer) -> None:
    sig = s.sign(DATA)
    key = _sslib_key(s.public_key)
    key.verify_signature(SslSignature(s.keyid, sig.hex()), DATA)
    with pytest.raises(UnverifiedSignatureError):
        key.verify_signature(SslSignature(s.keyid, sig.hex()), DATA + b"!")
    assert s.public_key.verify(sig, DATA) and not s.public_key.verify(sig, DATA + b"!")


def public_key_round_trips_as_pem(s: Signer) -> None:
    again = PublicKey.from_pem(s.public_key.pem())
    assert again.keyid == s.keyid and again.verify(s.sign(DATA), DATA)


def dsse_envelope_verifies_in_sovkit_and_securesystemslib(s: Signer) -> None:
    payload = b'{"_type":"https://in-toto.io/Statement/v1","subject":[]}'
    env = dsse.sign(payload, dsse.IN_TOTO_PAYLOAD_TYPE, s)
    assert env.signatures[0].keyid == s.keyid
    assert dsse.verify(dsse.Envelope.from_json(env.to_json()), [s.public_key]) == payload
    assert list(SslEnvelope.from_dict(env.to_dict()).verify([_sslib_key(s.public_key)], 1)) == [s.keyid]
    other = LocalSigner.from_seed(b"someone else")
    with pytest.raises(VerificationError) as err:
        dsse.verify(env, [other.public_key])
    assert err.value.step == "keyid"


CONTRACT = [
    keyid_is_securesystemslibs,
    signature_verifies_independently,
    public_key_round_trips_as_pem,
    dsse_envelope_verifies_in_sovkit_and_securesystemslib,
]


@pytest.mark.parametrize("behaviour", CONTRACT, ids=lambda f: f.__name__)
def test_signer(signer: Signer, behaviour: Callable[[Signer], None]) -> None:
    behaviour(signer)


def test_seeded_signer_is_deterministic_and_seed_specific() -> None:
    assert SeededSigner("a").keyid == SeededSigner(b"a").keyid == LocalSigner.from_seed(b"a").keyid
    assert SeededSigner("a").keyid != SeededSigner("b").keyid
    assert SeededSigner().sign(DATA) == SeededSigner().sign(DATA)  # Ed25519 signatures are deterministic


# ------------------------------------------------------------------------- the contract can fail


class _SignsWithAnotherKey(SeededSigner):
    """A broken signer: advertises one key but signs with another (a misconfigured HSM slot)."""

    def sign(self, data: bytes) -> bytes:
        return LocalSigner.from_seed(b"the wrong slot").sign(data)


class _HomemadeKeyid(SeededSigner):
    """A broken signer: its key id is not the one independent verifiers compute, so they cannot find it."""

    @property
    def keyid(self) -> str:
        return self.public_key.pem().hex()[:64]


def test_contract_catches_a_signer_using_the_wrong_key() -> None:
    with pytest.raises(UnverifiedSignatureError):
        signature_verifies_independently(_SignsWithAnotherKey())
    with pytest.raises(VerificationError):
        dsse_envelope_verifies_in_sovkit_and_securesystemslib(_SignsWithAnotherKey())


def test_contract_catches_a_keyid_independent_verifiers_do_not_compute() -> None:
    with pytest.raises(AssertionError):
        keyid_is_securesystemslibs(_HomemadeKeyid())
