"""Air-gapped bundles: signed, content-addressed transfer of everything a site needs.

``manifest`` (format and paths), ``hashing`` (parallel streaming digests),
``gather`` (what an inventory references), ``wheels`` (sovkit and its
dependencies as wheels), ``create``, ``verify``, ``volumes`` (split/join for
removable media), ``ledger`` (what was already verified, for resuming),
``importer`` (atomic commit into a site's artifact store).
"""
