"""A model's shape read from its Hugging Face config.json: what prefill FLOPs and decode bytes depend on.

Parameter counts follow shared/reference/hardware-and-models.md (GQA attention, gated MLP):
P ≈ L·(2h² + 2h·kv_heads·head_dim + 3h·ffn) + 2·vocab·h, generalised to heads·head_dim ≠ h, two-matrix
(non-gated) MLPs (OPT, GPT), mixture-of-experts layers and multi-head latent attention (MLA).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from sovkit.errors import PlannerError

Dtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]

#: bytes per element of each dtype (int4: two values per byte)
DTYPE_BYTES: Final[dict[str, float]] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
#: activations (and the tensors the TP all-reduce moves) stay 16-bit whatever the weights are stored in
ACT_BYTES: Final = 2.0
#: HF model types whose MLP is two matrices (up, down) rather than the gated three (gate, up, down)
_NON_GATED: Final = frozenset({"opt", "gpt2", "gptj", "gpt_neox", "bloom", "falcon", "gpt_bigcode"})
#: the example configs shipped in sovkit/catalog/models/ (``--model-config`` takes these names)
MODELS_DIR: Final = Path(__file__).resolve().parent.parent / "catalog" / "models"


class MoE(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    experts: int  # routed experts per MoE layer
    active: int  # routed experts each token uses
    shared: int  # shared experts every token uses
    expert_ffn: int  # intermediate size of one expert
    dense_layers: int = 0  # the first layers that keep a dense MLP (DeepSeek's first_k_dense_replace)


class MLA(BaseModel):
    """Multi-head latent attention: the KV cache holds a latent plus the rope part per layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kv_lora_rank: int
    qk_rope_head_dim: int
    q_lora_rank: int | None = None  # None: queries are projected straight from the hidden state
    qk_nope_head_dim: int = 128
    v_head_dim: int = 128


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
    gated_mlp: bool = True  # three MLP matrices (SwiGLU); False: two (OPT/GPT ReLU/GELU MLPs)

    # -- per-layer pieces (parameters) -------------------------------------------------------------------------
    def attn_params(self) -> float:
        """Attention weights of one layer: Q, K, V, O projections (MLA: its down/up projections)."""
        h = self.hidden
        if self.mla is not None:
            m = self.mla
            qk = self.heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
            q = h * qk if m.q_lora_rank is None else h * m.q_lora_rank + m.q_lora_rank * qk
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * self.heads * (
                m.qk_nope_head_dim + m.v_head_dim)
            return float(q + kv + self.heads * m.v_head_dim * h)
        q_dim = self.heads * self.head_dim
        kv_dim = self.kv_heads * self.head_dim
        return float(2 * h * q_dim + 2 * h * kv_dim)

    def mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    def dense_mlp_params(self) -> float:
        return float(self.mlp_matrices() * self.hidden * self.ffn)

    def expert_params(self) -> float:
        """One expert's weights (MoE only)."""
        assert self.moe is not None
        return float(self.mlp_matrices() * self.hidden * self.moe.expert_ffn)

    def moe_layers(self) -> int:
        return 0 if self.moe is None else self.layers - self.moe.dense_layers

    def embedding_params(self) -> float:
        """Input embedding plus LM head (one matrix when tied)."""
        return float((1 if self.tied_embeddings else 2) * self.vocab * self.hidden)

    def params_total(self) -> float:
        """All parameters (weights held in memory)."""
        total = self.layers * self.attn_params() + self.embedding_params()
        if self.moe is None:
            return total + self.layers * self.dense_mlp_params()
        m = self.moe
        per_moe = (m.experts + m.shared) * self.expert_params() + self.hidden * m.experts  # + router
        return total + m.dense_layers * self.dense_mlp_params() + self.moe_layers() * per_moe

    def params_active(self) -> float:
        """Parameters touched per token (MoE: shared + active experts only)."""
        if self.moe is None:
            return self.params_total()
        m = self.moe
        per_moe = (m.active + m.shared) * self.expert_params() + self.hidden * m.experts
        return (self.layers * self.attn_params() + self.embedding_params()
                + m.dense_layers * self.dense_mlp_params() + self.moe_layers() * per_moe)

    def kv_bytes_per_token(self, kv_dtype: Dtype) -> int:
        """2·L·kv_heads·head_dim·bytes; MLA: L·(kv_lora_rank + qk_rope_head_dim)·bytes (one latent, no K/V pair)."""
        return round(self.layers * self.kv_elements_per_layer() * DTYPE_BYTES[kv_dtype])

    def kv_elements_per_layer(self) -> int:
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.kv_heads * self.head_dim


def shipped_models() -> list[str]:
    """Names of the example configs in sovkit/catalog/models/ (usable wherever a config path is)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A config path as given, or a shipped example's by name; neither is a PlannerError listing the names."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = MODELS_DIR / f"{name_or_path}.json"
    if str(name_or_path) in shipped_models():
        return shipped
    raise PlannerError(f"model config {name_or_path}: no such file and no shipped example of that name",
                       f"give a config.json path or one of: {', '.join(shipped_models())}")


def _int(cfg: dict[str, Any], path: Path, *keys: str, default: int | None = None, hint: str = "") -> int:
    """The first of ``keys`` present, as a positive integer; missing or wrong is a PlannerError naming the field."""
    for key in keys:
        if key in cfg and cfg[key] is not None:
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PlannerError(f"model config {path}: field {key!r} is {value!r}, not a positive integer",
                                   hint or "fix the value in config.json")
            return value
    if default is not None:
        return default
    raise PlannerError(f"model config {path}: field {keys[0]!r} is missing"
                       + (f" (also looked for {', '.join(repr(k) for k in keys[1:])})" if keys[1:] else ""),
                       hint or "a Hugging Face config.json carries it; copy the model's own config.json")


def read_config(path: Path, name: str | None = None) -> ModelShape:
    """Parse a config.json; a missing or malformed file raises PlannerError naming the file and the field.

    Keys starting with ``_`` (such as ``_sovkit_source``) are notes and ignored. A missing
    ``tie_word_embeddings`` means tied, as in Hugging Face's own default.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlannerError(f"model config {path}: cannot read it ({exc.strerror or exc})",
                           f"give a config.json path or one of the shipped examples: {', '.join(shipped_models())}"
                           ) from exc
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlannerError(f"model config {path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})",
                           "a Hugging Face config.json is one JSON object") from exc
    if not isinstance(cfg, dict):
        raise PlannerError(f"model config {path}: not a JSON object", "a Hugging Face config.json is one JSON object")
    if isinstance(cfg.get("text_config"), dict):  # multimodal wrappers keep the language model's shape here
        cfg = {**cfg, **cfg["text_config"]}
    layers = _int(cfg, path, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _int(cfg, path, "hidden_size", "n_embd", "d_model")
    heads = _int(cfg, path, "num_attention_heads", "n_head")
    kv_heads = _int(cfg, path, "num_key_value_heads", "multi_query_group_num", default=heads)
    if "head_dim" in cfg and cfg["head_dim"] is not None:
        head_dim = _int(cfg, path, "head_dim")
    elif "v_head_dim" in cfg and cfg.get("kv_lora_rank") is not None:
        head_dim = _int(cfg, path, "v_head_dim")
    else:
        if hidden % heads:
            raise PlannerError(f"model config {path}: field 'head_dim' is missing and hidden_size {hidden} is not "
                               f"a multiple of num_attention_heads {heads}", "add head_dim to config.json")
        head_dim = hidden // heads
    model_type = str(cfg.get("model_type", ""))
    gated = model_type not in _NON_GATED
    ffn = _int(cfg, path, "intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size",
               default=4 * hidden if not gated else None)
    vocab = _int(cfg, path, "vocab_size", "padded_vocab_size")
    tied = cfg.get("tie_word_embeddings", True)
    if not isinstance(tied, bool):
        raise PlannerError(f"model config {path}: field 'tie_word_embeddings' is {tied!r}, not true/false",
                           "fix the value in config.json")
    moe = None
    experts_key = next((k for k in ("n_routed_experts", "num_experts", "num_local_experts") if cfg.get(k)), None)
    if experts_key is not None:
        moe = MoE(
            experts=_int(cfg, path, experts_key),
            active=_int(cfg, path, "num_experts_per_tok", "moe_topk",
                        hint=f"a MoE config ({experts_key}) needs num_experts_per_tok"),
            shared=int(cfg.get("n_shared_experts") or 0),
            expert_ffn=_int(cfg, path, "moe_intermediate_size", "intermediate_size"),
            dense_layers=int(cfg.get("first_k_dense_replace") or 0),
        )
        if moe.active > moe.experts or moe.dense_layers >= layers:
            raise PlannerError(f"model config {path}: num_experts_per_tok {moe.active} / first_k_dense_replace "
                               f"{moe.dense_layers} do not fit {moe.experts} experts and {layers} layers",
                               "fix the MoE fields in config.json")
    mla = None
    if cfg.get("kv_lora_rank") is not None:
        q_lora = cfg.get("q_lora_rank")
        mla = MLA(
            kv_lora_rank=_int(cfg, path, "kv_lora_rank"),
            qk_rope_head_dim=_int(cfg, path, "qk_rope_head_dim",
                                  hint="an MLA config (kv_lora_rank) needs qk_rope_head_dim"),
            q_lora_rank=_int(cfg, path, "q_lora_rank") if q_lora is not None else None,
            qk_nope_head_dim=_int(cfg, path, "qk_nope_head_dim", default=head_dim),
            v_head_dim=_int(cfg, path, "v_head_dim", default=head_dim),
        )
    if name is None:  # a bare config.json is named by its directory (the model's checkout)
        name = path.parent.name if path.stem == "config" else path.stem
    return ModelShape(name=name,
                      layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim, ffn=ffn,
                      vocab=vocab, tied_embeddings=tied, moe=moe, mla=mla, gated_mlp=gated)


def load_model(name_or_path: str | Path) -> ModelShape:
    """``--model-config``: a config.json path or a shipped example's name."""
    path = resolve_config(name_or_path)
    return read_config(path, name=path.stem if path.parent == MODELS_DIR else None)
