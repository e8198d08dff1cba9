"""Trust roots: the publisher and vendor public keys artifact signatures are checked against, looked up once.

The inventory names each key (``trust_roots.publishers`` / ``trust_roots.vendors``: a name and a public key
file); this module takes those plain inputs (section -> name -> key path) and loads each key at most once. It
does not read the inventory itself (signing sits below it): callers pass
:meth:`sovkit.inventory.loader.LoadedInventory.trust_root_paths`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sovkit.errors import SovkitError
from sovkit.signing.keys import PublicKey

#: the inventory's trust-root sections: who signs models, who signs firmware and runtimes
SECTIONS = ("publishers", "vendors")


class TrustRoots:
    """Keys by (section, signer name); a missing or unreadable key is None (the caller says why it matters)."""

    def __init__(self, paths: Mapping[str, Mapping[str, Path]]) -> None:
        self._paths = {(section, name): path for section, names in paths.items() for name, path in names.items()}
        self._keys: dict[tuple[str, str], PublicKey | None] = {}

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
