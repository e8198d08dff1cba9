"""The lowest layer: keys and the Signer port, DSSE, in-toto statements, canonical JSON, trust roots, the signed
manifest, path safety, artifact and model signatures, and the verification step type.

Nothing here imports the rest of sovkit except :mod:`sovkit.errors`, :mod:`sovkit.identifiers` and
:mod:`sovkit.digest`, so every feature (plan, policy, provision, bundle, audit, attest) can build on it.
"""
