"""A model's shape read from its Hugging Face config.json: what prefill FLOPs and decode bytes depend on."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

Dtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]


class MoE(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    experts: int
    active: int
    shared: int
    expert_ffn: int


class MLA(BaseModel):
    """Multi-head latent attention: the KV cache holds a latent plus the rope part per layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kv_lora_rank: int
    qk_rope_head_dim: int


class ModelShape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied_embeddings: bool = False
    moe: MoE | None = None
    mla: MLA | None = None

    def params_total(self) -> float:
        """All parameters (weights held in memory)."""
        raise NotImplementedError

    def params_active(self) -> float:
        """Parameters touched per token (MoE: shared + active experts only)."""
        raise NotImplementedError

    def kv_bytes_per_token(self, kv_dtype: Dtype) -> int:
        raise NotImplementedError


def read_config(path: Path, name: str | None = None) -> ModelShape:
    """Parse a config.json; a missing or malformed file raises PlannerError naming the file and the field."""
    raise NotImplementedError
