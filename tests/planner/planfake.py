"""A hand-set Predictor (the Protocol) and small sites, so the plan search's optimum can be computed by hand."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import yaml

from sovkit.inventory.models import Site
from sovkit.planner.hardware import DeviceSpec
from sovkit.planner.modelshape import ModelShape
from sovkit.planner.perf import Prediction, Workload
from tests.sitefactory import DEMO

SHAPE = ModelShape(name="toy", layers=2, hidden=64, heads=4, kv_heads=4, head_dim=16, ffn=128, vocab=100)


@dataclass(frozen=True)
class Chip:
    """Per device: prefill ms per prompt token, decode step = step0/tp + step_per_seq·batch ms, phase watts."""

    prefill_ms_per_token: float = 0.1
    step0_ms: float = 10.0
    step_per_seq_ms: float = 0.5
    prefill_w: float = 300.0
    decode_w: float = 200.0
    idle_w: float = 50.0
    memory_gb: float = 64.0


def spec(kind: str, chip: Chip) -> DeviceSpec:
    return DeviceSpec(id=kind, peak_tflops={"bf16": 100.0}, bandwidth_gbs=1000.0, memory_gb=chip.memory_gb,
                      interconnect_gbs=100.0, power_idle_w=chip.idle_w, power_prefill_w=chip.prefill_w,
                      power_decode_w=chip.decode_w, tdp_w=chip.prefill_w)


class FakePredictor:
    """Linear, hand-checkable timings. A per-device power cap below the prefill power slows prefill by
    prefill_w/cap and caps the phase power (as the real model's contract says); weights_gb and kv_bytes fixed."""

    def __init__(self, chips: dict[str, Chip], weights_gb: float = 10.0, kv_bytes: int = 131072) -> None:
        self.chips = chips
        self.weights_gb = weights_gb
        self.kv_bytes = kv_bytes
        self.calls = 0

    def predict(self, shape: ModelShape, device: DeviceSpec, work: Workload) -> Prediction:
        self.calls += 1
        c = self.chips[device.id]
        cap = work.power_cap_w
        slow = c.prefill_w / cap if cap is not None and cap < c.prefill_w else 1.0
        prefill = c.prefill_ms_per_token * work.prompt_tokens * work.batch / work.tp * slow
        step = c.step0_ms / work.tp + c.step_per_seq_ms * work.batch
        free = c.memory_gb * work.tp * 1e9 - self.weights_gb * 1e9
        max_batch = max(0, math.floor(free / (self.kv_bytes * work.context_tokens))) if free > 0 else 0
        pw = work.tp * (min(c.prefill_w, cap) if cap is not None else c.prefill_w)
        dw = work.tp * (min(c.decode_w, cap) if cap is not None else c.decode_w)
        return Prediction(
            prefill_ms=prefill, decode_step_ms=step, kv_bytes_per_token=self.kv_bytes, max_batch=max_batch,
            prefill_tokens_per_s=work.prompt_tokens * work.batch / prefill * 1000.0,
            decode_tokens_per_s=work.batch / step * 1000.0, power_prefill_w=pw, power_decode_w=dw,
            prefill_tokens_per_j=work.prompt_tokens * work.batch / prefill * 1000.0 / pw,
            decode_tokens_per_j=work.batch / step * 1000.0 / dw, prefill_bound="compute", decode_bound="memory",
            calibrated=False, calibration_source="fake (hand-set)")


def site(hosts: list[tuple[str, str, str, int]], racks: dict[str, float],
         caps: dict[str, int] | None = None, keep_deployments: bool = False) -> Site:
    """The demo site with these (name, rack, kind, count) hosts (CPU arm-neoverse-v2: 250 W each) and racks."""
    data: dict[str, Any] = copy.deepcopy(yaml.safe_load((DEMO / "site.yaml").read_text()))
    data["racks"] = [{"name": r, "power_budget_w": w} for r, w in racks.items()]
    data["hosts"] = []
    for i, (name, rack, kind, count) in enumerate(hosts):
        slot: dict[str, Any] = {"kind": kind, "count": count}
        if caps and name in caps:
            slot["power_cap_w"] = caps[name]
        data["hosts"].append({"name": name, "rack": rack, "address": f"10.0.0.{i + 1}", "arch": "aarch64",
                              "cpu": "arm-neoverse-v2", "accelerators": [slot]})
    if not keep_deployments:
        data["deployments"], data["serving_groups"] = [], []
    return Site.model_validate(data)
