"""The regulator audit pack: build it from a workspace, verify it offline with public keys only."""

from sovkit.audit.pack import AuditPack, build_audit_pack
from sovkit.audit.verify import PackVerification, StepResult, verify_audit_pack

__all__ = ["AuditPack", "PackVerification", "StepResult", "build_audit_pack", "verify_audit_pack"]
