"""Model publisher signatures in two formats: OpenSSF Model Signing (EC keys) and sovkit's own.

- ``model-signing``: a Sigstore bundle (``application/vnd.dev.sigstore.bundle…``) whose DSSE
  envelope carries an in-toto statement with predicate ``https://model_signing/signature/v1.0``
  listing every file of the model directory. Verified by the ``model-signing`` package itself
  (this is its format; we do not re-implement it), with the publisher's EC public key.
- ``dsse``: sovkit's artifact signature (see :mod:`sovkit.signing.artifacts`).

Either way the signed file digests must also equal the digests the inventory pins, so a validly
signed but different model is refused too.

What each binds: a ``dsse`` signature binds the files *and* the label (kind "model", name,
version): an inventory that relabels the model is refused. An OpenSSF Model Signing bundle binds
the file names and contents only (its subject name is whatever directory the publisher signed,
and it carries no version), so for that format the name and version are the inventory's word;
the result's reason says so, and it is recorded in the attestation.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from sovkit.digest import sha256_file
from sovkit.errors import SovkitError
from sovkit.signing.artifacts import (
    Claim,
    check_signed_statement,
    open_artifact_signature,
    signed_digests,
    verify_artifact_signature,
)
from sovkit.signing.keys import PublicKey
from sovkit.signing.statement import Statement

SignatureFormat = Literal["model-signing", "dsse"]
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"
_BUNDLE_MEDIA_PREFIX = "application/vnd.dev.sigstore.bundle"
MODEL_SIGNING_BINDS = "ok (OpenSSF Model Signing binds the file contents only, not the model's name or version)"


@dataclass(frozen=True)
class ModelSignatureCheck:
    """The outcome of verifying one model's signature; never raised, always recorded."""

    verified: bool
    format: SignatureFormat | None
    keyid: str | None
    reason: str
    signer: str = ""
    files: dict[str, str] = field(default_factory=dict)  # signed name -> sha256
    signed_at: str | None = None  # a dsse signature's stated signing time (OpenSSF bundles state none)



def detect_format(document: Any) -> SignatureFormat | None:
    if isinstance(document, dict):
        if str(document.get("mediaType", "")).startswith(_BUNDLE_MEDIA_PREFIX) and "dsseEnvelope" in document:
            return "model-signing"
        if "payloadType" in document and "signatures" in document:
            return "dsse"
    return None


def _model_dir(model: Path | Sequence[Path]) -> tuple[Path, list[Path]]:
    if isinstance(model, Path):
        if model.is_dir():
            return model, sorted(p for p in model.rglob("*") if p.is_file())
        return model.parent, [model]
    files = sorted(model)
    if not files:
        raise SovkitError("no model files given", "pass the model directory or its files")
    return common_dir(files), files


def common_dir(files: Sequence[Path]) -> Path:
    """The deepest directory holding every file (the model directory)."""
    parts = [f.parent.parts for f in files]
    first = parts[0]
    n = 0
    while all(len(p) > n and p[n] == first[n] for p in parts):
        n += 1
    return Path(*first[:n])


def _signed_resources(bundle: dict[str, Any]) -> dict[str, str]:
    try:
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        if statement.get("predicateType") != MODEL_SIGNING_PREDICATE:
            return {}
        return {str(r["name"]): str(r["digest"]) for r in statement["predicate"]["resources"]}
    except (KeyError, TypeError, ValueError):
        return {}


_DIGEST_REPR = re.compile(r"Digest\(algorithm='(?P<alg>[\w-]+)', "
                          r"""digest_value=(?P<lit>b(?P<q>['"])(?:\\+.|[^\\])*?(?P=q))\)""")


def _hex(match: re.Match[str]) -> str:
    """``Digest(algorithm='sha256', digest_value=b'\\xa1…')`` -> ``sha256:a1…`` (printed once, or once more
    escaped inside a list's repr, as model-signing's mismatch lists are)."""
    alg, lit = match.group("alg"), match.group("lit")
    try:
        size = hashlib.new(alg).digest_size
    except ValueError:
        return f"a {alg} digest"
    for text in (lit, lit.replace("\\\\", "\\")):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, bytes) and len(value) == size:
            return f"{alg}:{value.hex()}"
    return f"a {alg} digest"


def failure_message(exc: BaseException, limit: int = 400) -> str:
    """model-signing's error as one readable line: digests as hex, cut between words, never mid-escape."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = _DIGEST_REPR.sub(_hex, text)
    if len(text) > limit:
        cut = text.rfind(" ", 0, limit)
        text = text[:cut if cut > 0 else limit] + " …"
    return text


def _verify_model_signing(root: Path, files: list[Path], signature: Path, key_path: Path, key: PublicKey,
                          bundle: dict[str, Any], pinned: dict[str, str] | None, signer: str) -> ModelSignatureCheck:
    from model_signing import hashing, verifying  # heavy import, only for this format

    def fail(reason: str) -> ModelSignatureCheck:
        return ModelSignatureCheck(False, "model-signing", key.keyid, reason, signer)

    if key.keytype != "ecdsa":
        return fail("OpenSSF Model Signing signatures need the publisher's EC public key; this key is "
                    f"{key.keytype}")
    listed = {f.resolve() for f in files}
    others = [p for p in root.rglob("*") if p.is_file() and p.resolve() not in listed]
    # the signature file, and store files beside the model that are not part of it (not installed)
    hashing_config = hashing.Config().set_ignored_paths(paths=[str(p) for p in others])  # type: ignore[no-untyped-call]
    verifier = verifying.Config().use_elliptic_key_verifier(public_key=key_path)  # type: ignore[no-untyped-call]
    try:
        verifier.set_hashing_config(hashing_config).verify(root, signature)
    except Exception as exc:  # model-signing raises ValueError and others; all mean "does not verify"
        return fail(f"OpenSSF Model Signing verification failed: {failure_message(exc)}")
    resources = _signed_resources(bundle)
    for name, digest in sorted((pinned or {}).items()):
        if resources.get(name) != digest:
            return fail(f"{name}: the signed digest differs from the digest the inventory pins")
    return ModelSignatureCheck(True, "model-signing", key.keyid, MODEL_SIGNING_BINDS, signer, resources)


def verify_model(
    model: Path | Sequence[Path],
    signature_path: Path,
    public_key_path: Path,
    *,
    pinned: dict[str, str] | None = None,
    store_root: Path | None = None,
    signer: str = "",
    claim: Claim | None = None,
) -> ModelSignatureCheck:
    """Verify a model directory (or its files) against a publisher signature in either format.

    ``pinned`` maps file name -> sha256 as the inventory pins them: names relative to the model
    directory for ``model-signing``, store paths for ``dsse``. Without ``pinned`` (a bare directory
    check) a ``dsse`` signature's subjects are matched to the directory's files by their path relative
    to the model directory (``store_root`` says where the directory sits in the store; otherwise the
    signed names' common directory is found): every signed file must be there with its digest, and
    a file that is not signed is refused too. ``claim`` is the
    inventory's kind/name/version, which a dsse signature must name exactly (None: a bare
    directory check, files only). Never raises for a bad signature or key: the result says why.
    """
    try:
        key = PublicKey.load(public_key_path)
    except SovkitError as exc:
        return ModelSignatureCheck(False, None, None, exc.message, signer)
    try:
        document = json.loads(signature_path.read_bytes())
    except OSError as exc:
        return ModelSignatureCheck(False, None, key.keyid, f"cannot read {signature_path.name}: {exc.strerror}",
                                   signer)
    except ValueError:
        return ModelSignatureCheck(False, None, key.keyid, f"{signature_path.name} is not JSON", signer)
    fmt = detect_format(document)
    try:
        root, files = _model_dir(model)
    except SovkitError as exc:
        return ModelSignatureCheck(False, fmt, key.keyid, exc.message, signer)
    files = [f for f in files if f.resolve() != signature_path.resolve()]
    if fmt == "model-signing":
        return _verify_model_signing(root, files, signature_path, public_key_path, key, document, pinned, signer)
    if fmt == "dsse":
        if pinned is None:
            return _verify_dsse_directory(root, files, signature_path, key, store_root, signer, claim)
        base = store_root or root
        actual = {f.resolve().relative_to(base.resolve()).as_posix(): sha256_file(f) for f in files}
        for name, digest in sorted(pinned.items()):
            if name in actual and actual[name] != digest:
                return ModelSignatureCheck(False, "dsse", key.keyid, f"{name}: file digest differs from the signed "
                                                                      "one", signer)
        check = verify_artifact_signature(signature_path, pinned, key, signer, claim)
        return ModelSignatureCheck(check.verified, "dsse", check.keyid, check.reason, signer,
                                   pinned if check.verified else {}, check.signed_at)
    return ModelSignatureCheck(False, None, key.keyid, f"{signature_path.name} is neither an OpenSSF Model Signing "
                                                       "bundle nor a sovkit DSSE signature", signer)


def _signed_prefix(signed: Sequence[str], present: set[str]) -> str:
    """The store directory the signed subjects share with the model directory, as ``"a/b/"`` (or ``""``).

    A publisher signs store paths (``models/m/1.0/config.json``); a bare directory names its files
    relative to itself (``config.json``). Of the signed names' directories, the one under which most
    subjects are files of the directory wins; with no file in common, the subjects' common directory.
    """
    candidates = {""}
    for name in signed:
        for parent in PurePosixPath(name).parents:
            if parent.as_posix() != ".":
                candidates.add(parent.as_posix() + "/")

    def score(prefix: str) -> tuple[int, int]:
        return sum(1 for n in signed if n.startswith(prefix) and n[len(prefix):] in present), len(prefix)

    best = max(sorted(candidates), key=score)
    if score(best)[0] > 0 or not signed:
        return best
    common = common_dir([Path(n) for n in signed]).as_posix()
    return "" if common in ("", ".") else common + "/"


def _verify_dsse_directory(root: Path, files: list[Path], signature_path: Path, key: PublicKey,
                           store_root: Path | None, signer: str, claim: Claim | None) -> ModelSignatureCheck:
    """A directory against a sovkit signature with nothing pinned: the signed files, all of them, exactly.

    Signed subjects map to the directory's files by their path relative to the model directory, so
    every signed file must be there with the signed digest, and a file the publisher did not sign is
    reported too (it would be installed unverified).
    """
    opened = open_artifact_signature(signature_path, key, signer)
    if not isinstance(opened, Statement):
        return ModelSignatureCheck(False, "dsse", opened.keyid, opened.reason, signer)
    signed = signed_digests(opened)
    actual = {f.resolve().relative_to(root.resolve()).as_posix(): f for f in files}
    if store_root is not None and root.resolve().is_relative_to(store_root.resolve()):
        where = root.resolve().relative_to(store_root.resolve()).as_posix()
        prefix = "" if where == "." else where + "/"
    else:
        prefix = _signed_prefix(sorted(signed), set(actual))
    problems: list[str] = []
    outside = sorted(n for n in signed if not n.startswith(prefix))
    if outside:
        problems.append(f"signed outside {prefix or 'the directory'}: {', '.join(outside)}")
    by_rel = {n[len(prefix):]: n for n in signed if n.startswith(prefix)}
    missing = sorted(r for r in by_rel if r not in actual)
    if missing:
        problems.append(f"signed but missing from {root}: {', '.join(missing)}")
    changed = sorted(r for r in by_rel if r in actual and sha256_file(actual[r]) != signed[by_rel[r]])
    if changed:
        problems.append(f"file digest differs from the signed one: {', '.join(changed)}")
    unsigned = sorted(r for r in actual if r not in by_rel)
    if unsigned:
        problems.append(f"not signed: {', '.join(unsigned)}")
    if problems:
        return ModelSignatureCheck(False, "dsse", key.keyid, "; ".join(problems), signer)
    expected = {n: str(signed[n]) for n in by_rel.values()}
    check = check_signed_statement(opened, expected, key, signer, claim)
    return ModelSignatureCheck(check.verified, "dsse", check.keyid, check.reason, signer,
                               expected if check.verified else {}, check.signed_at)
