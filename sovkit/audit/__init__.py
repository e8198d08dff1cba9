"""The regulator audit pack: build it from a workspace, verify it offline with public keys only.

Entry points: :func:`sovkit.audit.pack.build_audit_pack` and
:func:`sovkit.audit.verify.verify_audit_pack`. This package file imports
nothing, so the CLI (and ``sovkit.api``) pay for CycloneDX only when auditing.
"""
