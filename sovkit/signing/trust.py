"""Trust roots: the publisher and vendor public keys artifact signatures are checked against, looked up once,
and judged by time: each key's validity window (inventory ``not_before``/``not_after``) and the revocations in
the operator's keyring (``trust_roots.keyring``).

The inventory names each key (``trust_roots.publishers`` / ``trust_roots.vendors``: a name and a public key
file); this module takes those plain inputs (section -> name -> key path) and loads each key at most once. It
does not read the inventory itself (signing sits below it): callers pass
:meth:`sovkit.inventory.loader.LoadedInventory.trust_root_paths` and ``trust_root_windows``.

A signature is judged at the signing time its signed statement states (sovkit DSSE signatures may carry
``signed_at``), else at the time of verification: a signature with no stated time from a revoked or expired key
is refused. A stated time is the signer's own claim; see docs/security.md for what that does and does not prove.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sovkit.errors import SovkitError
from sovkit.signing.artifacts import SignatureCheck
from sovkit.signing.keyring import Keyring, load_keyring, parse_time, revocation_problem, window_problem
from sovkit.signing.keys import PublicKey

#: the inventory's trust-root sections: who signs models, who signs firmware and runtimes
SECTIONS = ("publishers", "vendors")

Window = tuple[str | None, str | None]


class TrustRoots:
    """Keys by (section, signer name); a missing or unreadable key is None (the caller says why it matters)."""

    def __init__(self, paths: Mapping[str, Mapping[str, Path]],
                 windows: Mapping[str, Mapping[str, Window]] | None = None, keyring: Path | None = None) -> None:
        self._paths = {(section, name): path for section, names in paths.items() for name, path in names.items()}
        self._windows = {(section, name): w for section, names in (windows or {}).items() for name, w in names.items()}
        self._keys: dict[tuple[str, str], PublicKey | None] = {}
        self._keyring_path = keyring
        self._keyring: Keyring | str | None = None

    def path(self, section: str, name: str) -> Path | None:
        """The key file the inventory names for ``name`` in ``section``."""
        return self._paths.get((section, name))

    def key(self, section: str, name: str) -> PublicKey | None:
        """The trusted public key of signer ``name``, or None when none is declared or it cannot be loaded."""
        if (section, name) not in self._keys:
            path = self._paths.get((section, name))
            try:
                self._keys[(section, name)] = PublicKey.load(path) if path is not None else None
            except SovkitError:
                self._keys[(section, name)] = None
        return self._keys[(section, name)]

    def by_keyid(self, keyid: str) -> tuple[str, str, PublicKey] | None:
        """(section, name, key) of the trust root whose key has ``keyid``, if any."""
        for section, name in self._paths:
            key = self.key(section, name)
            if key is not None and key.keyid == keyid:
                return section, name, key
        return None

    def keyring(self) -> Keyring | str | None:
        """The keyring the inventory names (anchored by the inventory: its own chain is checked), or why it
        cannot be used (then every judged signature fails: a revocation list that does not verify is not
        ignored)."""
        if self._keyring is None and self._keyring_path is not None:
            try:
                self._keyring = load_keyring(self._keyring_path, None)
            except SovkitError as exc:
                self._keyring = f"the keyring {self._keyring_path} does not verify: {exc.message}"
        return self._keyring

    def problem(self, section: str, name: str, keyid: str, at: datetime) -> str | None:
        """Why the trust root ``name`` (key ``keyid``) may not have signed at ``at`` (None: it may)."""
        not_before, not_after = self._windows.get((section, name), (None, None))
        ring = self.keyring()
        if isinstance(ring, str):
            return ring
        revoked = revocation_problem(ring.revocation(keyid), at) if ring is not None else None
        return revoked or window_problem(f"trust_roots.{section} key {name}", not_before, not_after, at)

    def judge(self, section: str, check: SignatureCheck) -> SignatureCheck:
        """A verified signature check, failed when its signer's key was not valid at its signing time."""
        if not check.verified or check.keyid is None:
            return check
        try:
            at = parse_time(check.signed_at) if check.signed_at else datetime.now(UTC)
        except ValueError:
            return replace(check, verified=False, reason=f"the signed signing time {check.signed_at!r} is not a "
                                                         "time")
        problem = self.problem(section, check.signer, check.keyid, at)
        if problem is None:
            return check
        when = f"signed at {check.signed_at}" if check.signed_at else "no signing time stated, judged now"
        return replace(check, verified=False, reason=f"{problem} ({when})")
