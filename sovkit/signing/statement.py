"""in-toto Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sovkit.signing.canonical import canonical_json

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
ARTIFACT_SIGNATURE_PREDICATE = "https://sovkit.dev/attestation/artifact-signature/v1"


class Subject(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    digest: dict[str, str]


class Statement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    type_: str = Field(default=STATEMENT_TYPE, alias="_type")
    subject: list[Subject]
    predicate_type: str = Field(alias="predicateType")
    predicate: dict[str, Any] = {}

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no whitespace): the DSSE payload."""
        return canonical_json(self.model_dump(by_alias=True, mode="json"))
