"""The performance model: a roofline per operator, efficiency factors, per-step overhead, TP all-reduce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sovkit.planner.calibration import Calibration
from sovkit.planner.hardware import DeviceSpec
from sovkit.planner.modelshape import Dtype, ModelShape


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


class Predictor(Protocol):
    """The port the plan search and policy input use; `RooflinePredictor` is the shipped implementation."""

    def predict(self, shape: ModelShape, device: DeviceSpec, work: Workload) -> Prediction: ...


class RooflinePredictor:
    def __init__(self, calibrations: list[Calibration] | None = None) -> None:
        self.calibrations = calibrations or []

    def predict(self, shape: ModelShape, device: DeviceSpec, work: Workload) -> Prediction:
        raise NotImplementedError
