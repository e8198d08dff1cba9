"""Component kinds (firmware, runtime, model, serving): one module per kind, iterated through one registry.

Each kind owns its desired record, diff and reasons, how observe output is parsed, its state record, the
artifacts preflight checks, its provenance subjects and its audit row. This package sits above
inventory/state/catalog/signing and below plan/provision/attest/audit (it imports none of those).
"""
