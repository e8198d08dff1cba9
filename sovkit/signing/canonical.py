"""The one canonical JSON encoding sovkit signs and digests: sorted keys, no whitespace, UTF-8.

Every signed payload (statements, the plan file, manifests, the attestation log's lines and head) and every
recorded digest of a document (the inventory digest, the plan digest, the policy pack digest) goes through
:func:`canonical_json`, so two writers can never disagree on the bytes of the same document.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(obj: Any, *, ascii_only: bool = False) -> bytes:
    """``obj`` as canonical JSON bytes: ``sort_keys``, separators ``(",", ":")``, UTF-8.

    Non-ASCII characters are written as UTF-8 (``ensure_ascii=False``). ``ascii_only=True`` writes them as
    ``\\uXXXX`` escapes instead; it exists only for digests recorded before this encoder was shared that were
    computed that way (the policy pack digest), so a pack with non-ASCII data keeps the digest that saved plans
    and audit packs already name. For ASCII-only documents both spellings are the same bytes.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only).encode()
