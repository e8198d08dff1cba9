"""The performance model: a roofline per operator, efficiency factors, per-step overhead, TP all-reduce.

Each operator of a forward pass (QKV/O projections, attention over the KV cache, MLP or MoE experts, LM head)
costs max(FLOPs / (peak·η_compute), bytes / (bandwidth·η_memory)) on one of the ``tp`` devices; a pass adds
the ring all-reduces of tensor parallelism (two per layer: 2·(tp−1)/tp · bytes / interconnect) and a fixed
per-step overhead. Prefill is one pass over batch × prompt tokens; a decode step one pass over ``batch``
sequences each ``context_tokens`` long. η and the overhead come from a calibration (shipped in
sovkit/catalog/calibrations.yaml, or a site's file); without one the llm-analysis defaults 0.7 / 0.9 and no
overhead are used and the prediction says it is uncalibrated.

A power cap below a phase's power slows its compute-bound work in proportion (first order: clock ∝ power);
memory-bound work is taken as unchanged (HBM bandwidth does not scale with the core clock).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from sovkit.errors import PlannerError
from sovkit.planner.calibration import Calibration
from sovkit.planner.hardware import DeviceSpec
from sovkit.planner.modelshape import ACT_BYTES, DTYPE_BYTES, Dtype, ModelShape

#: llm-analysis's default efficiencies (shared/reference/hardware-and-models.md): up to 0.7 of peak compute,
#: 0.9 of peak bandwidth; used for a device without a calibration, with no per-step overhead
DEFAULT_ETA_COMPUTE: Final = 0.7
DEFAULT_ETA_MEMORY: Final = 0.9
#: memory kept back on each device for activations, runtime context and fragmentation (vLLM's default
#: gpu_memory_utilization of 0.9 leaves the same 10 %)
MEMORY_RESERVE: Final = 0.10
UNCALIBRATED: Final = "uncalibrated (default efficiencies: compute 0.7, memory 0.9, overhead 0 ms — llm-analysis)"

Phase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class Workload:
    tp: int
    batch: int
    prompt_tokens: int
    context_tokens: int  # decode: tokens already in each sequence's KV cache
    weight_dtype: Dtype = "bf16"
    kv_dtype: Dtype = "bf16"
    power_cap_w: float | None = None  # a cap below phase power slows compute proportionally


@dataclass(frozen=True)
class Prediction:
    prefill_ms: float  # one batch of `batch` prompts of prompt_tokens each
    decode_step_ms: float  # one decode step of `batch` sequences at context_tokens
    kv_bytes_per_token: int
    max_batch: int  # largest batch whose weights/tp + KV(context) fits per device (0: weights do not fit)
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    power_prefill_w: float  # per instance (tp devices)
    power_decode_w: float
    prefill_tokens_per_j: float
    decode_tokens_per_j: float
    prefill_bound: str  # "compute" | "memory"
    decode_bound: str
    calibrated: bool
    calibration_source: str  # "catalog: ...", "site: FILE", or "uncalibrated (default efficiencies)"
    # -- added beyond the contract: the memory arithmetic behind max_batch, and the factors used ----------------
    weights_gb_per_device: float = 0.0
    kv_gb_per_sequence: float = 0.0  # per device, at max(prompt, context) tokens
    usable_gb_per_device: float = 0.0  # memory minus the reserve
    min_tp: int = 1  # the smallest TP whose weights and one sequence's KV fit
    eta_compute: float = DEFAULT_ETA_COMPUTE
    eta_memory: float = DEFAULT_ETA_MEMORY
    overhead_ms: float = 0.0
    allreduce_ms: dict[str, float] = field(default_factory=dict)  # per phase
    note: str = ""  # why max_batch is 0, or that the batch asked for does not fit


class Predictor(Protocol):
    """The port the plan search and policy input use; `RooflinePredictor` is the shipped implementation."""

    def predict(self, shape: ModelShape, device: DeviceSpec, work: Workload) -> Prediction: ...


@dataclass(frozen=True)
class Op:
    """One operator's work on one device, summed over the layers it occurs in."""

    name: str
    flops: float
    bytes: float
    peak_flops: float  # FLOP/s of the units it runs on (per device)

    def times(self, bandwidth: float) -> tuple[float, float]:
        """(compute seconds, memory seconds) at 100 % efficiency."""
        return self.flops / self.peak_flops, self.bytes / bandwidth


@dataclass(frozen=True)
class PassCost:
    """A forward pass (prefill or one decode step) on one device, before efficiencies."""

    ops: tuple[Op, ...]
    bandwidth: float  # bytes/s
    allreduce_s: float

    def terms(self) -> list[tuple[float, float]]:
        return [op.times(self.bandwidth) for op in self.ops]

    def seconds(self, eta_compute: float, eta_memory: float, overhead_s: float, compute_scale: float = 1.0) -> float:
        ec = eta_compute * compute_scale
        return (sum(max(c / ec, m / eta_memory) for c, m in self.terms()) + self.allreduce_s + overhead_s)

    def bound(self, eta_compute: float, eta_memory: float, compute_scale: float = 1.0) -> str:
        """Which side most of the operator time sits on."""
        ec = eta_compute * compute_scale
        comp = sum(c / ec for c, m in self.terms() if c / ec >= m / eta_memory)
        mem = sum(m / eta_memory for c, m in self.terms() if c / ec < m / eta_memory)
        return "compute" if comp >= mem else "memory"


def _kv_share(shape: ModelShape, tp: int) -> float:
    """The fraction of a layer's KV cache each device holds: KV heads split over TP (a head is never split, so
    tp > kv_heads replicates); MLA's one latent is replicated on every device."""
    if shape.mla is not None:
        return 1.0
    return max(1.0 / tp, 1.0 / shape.kv_heads)


def _attn_dims(shape: ModelShape) -> tuple[int, int]:
    """(query·key width, value width) over all heads, for the attention matmuls."""
    if shape.mla is not None:
        m = shape.mla
        return shape.heads * (m.qk_nope_head_dim + m.qk_rope_head_dim), shape.heads * m.v_head_dim
    return shape.heads * shape.head_dim, shape.heads * shape.head_dim


def _experts_touched(experts: int, active: int, tokens: int) -> float:
    """Expected distinct experts a batch of ``tokens`` routes to (uniform routing): E·(1 − (1 − k/E)^T)."""
    return experts * (1.0 - (1.0 - active / experts) ** tokens)


def pass_cost(shape: ModelShape, device: DeviceSpec, work: Workload, phase: Phase) -> PassCost:
    """The operators of one prefill pass or one decode step, per device, before efficiencies."""
    tp, b = work.tp, work.batch
    wb, kvb = DTYPE_BYTES[work.weight_dtype], DTYPE_BYTES[work.kv_dtype]
    lin_peak, attn_peak = device.flops(work.weight_dtype), device.flops("bf16")
    h, layers = shape.hidden, shape.layers
    tokens = b * work.prompt_tokens if phase == "prefill" else b
    qk, v = _attn_dims(shape)
    kv_layer = shape.kv_elements_per_layer() * kvb * _kv_share(shape, tp)  # bytes per token per layer per device
    ops: list[Op] = []
    act = tokens * h * ACT_BYTES  # one hidden-state tensor of the pass

    attn_w = shape.attn_params()
    ops.append(Op("qkv_o_proj", layers * 2 * tokens * attn_w / tp,
                  layers * (attn_w * wb / tp + 4 * act), lin_peak))
    if phase == "prefill":
        n = work.prompt_tokens
        # causal: half of the N×N scores, for QK (width qk) and PV (width v), 2 FLOPs per multiply-add
        flops = b * n * n * (qk + v) / tp
        kv_bytes = b * n * kv_layer + tokens * (qk + v) * ACT_BYTES / tp
    else:
        c = work.context_tokens
        if shape.mla is not None:  # absorbed MLA decode: scores and context against the latent itself
            m = shape.mla
            flops = 2 * b * c * shape.heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim) / tp
        else:
            flops = 2 * b * c * (qk + v) / tp
        kv_bytes = b * c * kv_layer
    ops.append(Op("attention", layers * flops, layers * kv_bytes, attn_peak))

    dense_layers = layers if shape.moe is None else shape.moe.dense_layers
    if dense_layers:
        mlp_w = shape.dense_mlp_params()
        ops.append(Op("mlp", dense_layers * 2 * tokens * mlp_w / tp,
                      dense_layers * (mlp_w * wb / tp + 2 * act), lin_peak))
    if shape.moe is not None:
        moe, ew, ml = shape.moe, shape.expert_params(), shape.moe_layers()
        touched = _experts_touched(moe.experts, moe.active, tokens) + moe.shared
        ops.append(Op("moe_experts", ml * 2 * tokens * (moe.active + moe.shared) * ew / tp,
                      ml * (touched * ew * wb / tp + 2 * act), lin_peak))
        ops.append(Op("moe_router", ml * 2 * tokens * h * moe.experts, ml * h * moe.experts * ACT_BYTES, attn_peak))

    head_tokens = b  # prefill samples only each prompt's last token
    ops.append(Op("lm_head", 2 * head_tokens * h * shape.vocab / tp, shape.vocab * h * wb / tp, lin_peak))

    allreduce = 0.0
    if tp > 1:
        allreduce = layers * 2 * (2 * (tp - 1) / tp) * act / (device.interconnect_gbs * 1e9)
    return PassCost(tuple(ops), device.bandwidth_gbs * 1e9, allreduce)


@dataclass(frozen=True)
class MemoryFit:
    weights_gb: float  # per device
    kv_gb_per_sequence: float  # per device
    usable_gb: float
    max_batch: int
    min_tp: int


def memory_fit(shape: ModelShape, device: DeviceSpec, work: Workload) -> MemoryFit:
    """max_batch = (memory − reserve − weights/tp) / (KV of one sequence at its longest, per device)."""
    seq = max(work.context_tokens, work.prompt_tokens, 1)
    usable = device.memory_gb * 1e9 * (1 - MEMORY_RESERVE)
    weights_all = shape.params_total() * DTYPE_BYTES[work.weight_dtype]
    weights = weights_all / work.tp
    kv_seq = seq * shape.layers * shape.kv_elements_per_layer() * DTYPE_BYTES[work.kv_dtype] * _kv_share(
        shape, work.tp)
    free = usable - weights
    max_batch = max(0, math.floor(free / kv_seq)) if kv_seq > 0 else 0
    min_tp = 1
    while min_tp < 4096:
        share = _kv_share(shape, min_tp)
        need = weights_all / min_tp + seq * shape.layers * shape.kv_elements_per_layer() * DTYPE_BYTES[
            work.kv_dtype] * share
        if need <= usable:
            break
        min_tp += 1
    return MemoryFit(weights / 1e9, kv_seq / 1e9, usable / 1e9, max_batch, min_tp)


class RooflinePredictor:
    def __init__(self, calibrations: list[Calibration] | None = None) -> None:
        self.calibrations = calibrations or []

    def calibration_for(self, device: str, tp: int) -> Calibration | None:
        """The first calibration for this device at this TP, else the first for any TP (the list's order is its
        precedence: a site's file before the catalog's)."""
        for cal in self.calibrations:
            if cal.device == device and cal.tp == tp:
                return cal
        for cal in self.calibrations:
            if cal.device == device and cal.tp is None:
                return cal
        return None

    def predict(self, shape: ModelShape, device: DeviceSpec, work: Workload) -> Prediction:
        if min(work.tp, work.batch, work.prompt_tokens) < 1 or work.context_tokens < 0:
            raise PlannerError(f"workload {work}: tp, batch and prompt tokens must be at least 1",
                               "give positive --tp, --batch and --prompt-tokens")
        cal = self.calibration_for(device.id, work.tp)
        if cal is None:
            ec, em, over, source = DEFAULT_ETA_COMPUTE, DEFAULT_ETA_MEMORY, 0.0, UNCALIBRATED
        else:
            ec, em, over, source = cal.eta_compute, cal.eta_memory, cal.overhead_ms, cal.source
        power: dict[str, float] = {}
        scale: dict[str, float] = {}
        for phase, watts in (("prefill", device.power_prefill_w), ("decode", device.power_decode_w)):
            cap = work.power_cap_w
            scale[phase] = min(1.0, cap / watts) if cap is not None else 1.0
            power[phase] = (min(watts, cap) if cap is not None else watts) * work.tp
        pre = pass_cost(shape, device, work, "prefill")
        dec = pass_cost(shape, device, work, "decode")
        pre_s = pre.seconds(ec, em, over / 1e3, scale["prefill"])
        dec_s = dec.seconds(ec, em, over / 1e3, scale["decode"])
        pre_tps = work.batch * work.prompt_tokens / pre_s
        dec_tps = work.batch / dec_s
        fit = memory_fit(shape, device, work)
        note = ""
        if fit.max_batch == 0:
            note = (f"does not fit: at tp {work.tp} the {work.weight_dtype} weights take {fit.weights_gb:.1f} GB "
                    f"per device and one sequence's KV {fit.kv_gb_per_sequence:.2f} GB, over the "
                    f"{fit.usable_gb:.1f} GB usable ({device.memory_gb:g} GB less {MEMORY_RESERVE:.0%} reserve); "
                    f"needs tp >= {fit.min_tp}")
        elif fit.max_batch < work.batch:
            note = f"batch {work.batch} does not fit: memory allows {fit.max_batch} at this context"
        return Prediction(
            prefill_ms=pre_s * 1e3, decode_step_ms=dec_s * 1e3,
            kv_bytes_per_token=shape.kv_bytes_per_token(work.kv_dtype), max_batch=fit.max_batch,
            prefill_tokens_per_s=pre_tps, decode_tokens_per_s=dec_tps,
            power_prefill_w=power["prefill"], power_decode_w=power["decode"],
            prefill_tokens_per_j=pre_tps / power["prefill"], decode_tokens_per_j=dec_tps / power["decode"],
            prefill_bound=pre.bound(ec, em, scale["prefill"]), decode_bound=dec.bound(ec, em, scale["decode"]),
            calibrated=cal is not None, calibration_source=source,
            weights_gb_per_device=fit.weights_gb, kv_gb_per_sequence=fit.kv_gb_per_sequence,
            usable_gb_per_device=fit.usable_gb, min_tp=fit.min_tp, eta_compute=ec, eta_memory=em, overhead_ms=over,
            allreduce_ms={"prefill": pre.allreduce_s * 1e3, "decode": dec.allreduce_s * 1e3}, note=note,
        )
