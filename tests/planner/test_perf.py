"""The roofline predictor against hand-computed FLOPs, bytes, bounds, all-reduce, memory fit and power."""

from __future__ import annotations

import math

import pytest

from sovkit.catalog import load_catalog
from sovkit.errors import PlannerError
from sovkit.planner.calibration import Calibration, catalog_calibrations
from sovkit.planner.hardware import DeviceSpec, device_spec
from sovkit.planner.modelshape import load_model
from sovkit.planner.perf import MEMORY_RESERVE, RooflinePredictor, Workload, pass_cost

#: a made-up device with round figures, so hand arithmetic is easy and no shipped calibration applies
DEV = DeviceSpec(id="test-chip", peak_tflops={"bf16": 100.0, "fp8": 200.0}, bandwidth_gbs=1000.0, memory_gb=80.0,
                 interconnect_gbs=100.0, power_idle_w=50.0, power_prefill_w=400.0, power_decode_w=200.0, tdp_w=400.0)
EXACT = Calibration(device="test-chip", eta_compute=1.0, eta_memory=1.0, overhead_ms=0.0, source="test: ideal")
L8B = load_model("llama-3.1-8b")


def test_prefill_flops_by_hand() -> None:
    n, h, layers, kv, hd, ffn, vocab = 1000, 4096, 32, 8, 128, 14336, 128256
    cost = pass_cost(L8B, DEV, Workload(tp=1, batch=1, prompt_tokens=n, context_tokens=0), "prefill")
    per_layer = 2 * h * h + 2 * h * kv * hd + 3 * h * ffn
    # linear layers 2·P_layer per token, causal attention 2·L·N²·h, the LM head once (last token only)
    hand = 2 * n * layers * per_layer + 2 * layers * n * n * h + 2 * h * vocab
    assert sum(op.flops for op in cost.ops) == pytest.approx(hand, rel=1e-12)
    assert cost.allreduce_s == 0.0


def test_decode_bytes_by_hand() -> None:
    b, c = 4, 2000
    cost = pass_cost(L8B, DEV, Workload(tp=1, batch=b, prompt_tokens=c, context_tokens=c), "decode")
    weights = (L8B.params_total() - L8B.vocab * L8B.hidden) * 2  # the input embedding is a lookup, not read whole
    kv = b * c * L8B.kv_bytes_per_token("bf16")
    activations = 32 * (4 + 2) * b * 4096 * 2  # hidden-state in/out of the projections and MLP per layer
    assert sum(op.bytes for op in cost.ops) == pytest.approx(weights + kv + activations, rel=1e-9)
    attn = next(op for op in cost.ops if op.name == "attention")
    assert attn.flops == 4 * 32 * 4096 * b * c  # 4·L·h·Σc


def test_ideal_decode_time_is_bytes_over_bandwidth() -> None:
    work = Workload(tp=1, batch=1, prompt_tokens=100, context_tokens=100)
    p = RooflinePredictor([EXACT]).predict(L8B, DEV, work)
    cost = pass_cost(L8B, DEV, work, "decode")
    assert p.decode_bound == "memory"
    assert p.decode_step_ms == pytest.approx(sum(op.bytes for op in cost.ops) / 1e12 * 1e3, rel=1e-9)


@pytest.mark.parametrize(("phase", "small", "large"), [("prefill", 4, 8192), ("decode", 1, 4096)])
def test_bound_switches_between_memory_and_compute(phase: str, small: int, large: int) -> None:
    pred = RooflinePredictor([EXACT])

    def bound(n: int) -> str:
        if phase == "prefill":
            p = pred.predict(L8B, DEV, Workload(tp=1, batch=1, prompt_tokens=n, context_tokens=0))
            return p.prefill_bound
        p = pred.predict(L8B, DEV, Workload(tp=1, batch=n, prompt_tokens=16, context_tokens=16))
        return p.decode_bound

    assert bound(small) == "memory"
    assert bound(large) == "compute"  # ridge of DEV: 100 FLOP/byte; decode intensity ≈ batch for 16-bit weights


def test_allreduce_term_is_the_ring_formula() -> None:
    tp, b, n = 4, 2, 512
    p = RooflinePredictor([EXACT]).predict(L8B, DEV, Workload(tp=tp, batch=b, prompt_tokens=n, context_tokens=n))
    message = b * n * 4096 * 2  # one hidden-state tensor, 16-bit
    hand_s = 32 * 2 * (2 * (tp - 1) / tp) * message / 100e9  # 2 all-reduces per layer, ring, 100 GB/s
    assert p.allreduce_ms["prefill"] == pytest.approx(hand_s * 1e3)
    assert p.allreduce_ms["decode"] == pytest.approx(hand_s * 1e3 / n)
    one = RooflinePredictor([EXACT]).predict(L8B, DEV, Workload(tp=1, batch=b, prompt_tokens=n, context_tokens=n))
    assert one.allreduce_ms == {"prefill": 0.0, "decode": 0.0}
    # TP splits the compute: 4 devices are faster than one, but by less than 4x (the all-reduce)
    assert one.prefill_ms / 4 < p.prefill_ms < one.prefill_ms


def test_max_batch_by_hand() -> None:
    dev = device_spec(load_catalog(), "nvidia-h100-sxm")
    for tp in (1, 2):
        p = RooflinePredictor().predict(L8B, dev, Workload(tp=tp, batch=1, prompt_tokens=1000, context_tokens=3000))
        usable = 80e9 * (1 - MEMORY_RESERVE)
        per_seq = 3000 * 131072 / tp  # 8 KV heads split over tp
        assert p.max_batch == math.floor((usable - L8B.params_total() * 2 / tp) / per_seq)
    kv_heads_exhausted = RooflinePredictor().predict(L8B, dev, Workload(tp=16, batch=1, prompt_tokens=1000,
                                                                        context_tokens=1000))
    assert kv_heads_exhausted.kv_gb_per_sequence == pytest.approx(1000 * 131072 / 8 / 1e9)  # one head per device


def test_k1_does_not_fit_one_decode_npu_host_and_says_why() -> None:
    k1 = load_model("ax-k1")
    dev = device_spec(load_catalog(), "rebellions-atom-max")
    p = RooflinePredictor().predict(k1, dev, Workload(tp=8, batch=1, prompt_tokens=2048, context_tokens=2048))
    assert p.max_batch == 0
    usable, kv_one = 64e9 * 0.9, 2048 * 61 * (512 + 64) * 2  # MLA latent: replicated, not split by tp
    assert p.min_tp == math.ceil(k1.params_total() * 2 / (usable - kv_one)) == 19
    assert "does not fit" in p.note and "GB per device" in p.note and f"needs tp >= {p.min_tp}" in p.note


def test_min_tp_with_kv_heads_split_then_replicated() -> None:
    l70 = load_model("llama-3.1-70b")
    dev = device_spec(load_catalog(), "nvidia-l40s")  # 48 GB
    p = RooflinePredictor().predict(l70, dev, Workload(tp=1, batch=1, prompt_tokens=8000, context_tokens=8000))
    kv_all = 8000 * 327680
    assert p.min_tp == math.ceil((l70.params_total() * 2 + kv_all) / (48e9 * 0.9)) == 4
    huge = RooflinePredictor().predict(l70, dev, Workload(tp=1, batch=1, prompt_tokens=10_000_000,
                                                          context_tokens=10_000_000))
    assert huge.min_tp == 0 and "no TP fits" in huge.note


def test_moe_decode_reads_fewer_expert_bytes_at_small_batch() -> None:
    k1 = load_model("ax-k1")
    dev = device_spec(load_catalog(), "rebellions-rebel-quad")

    def expert_bytes(batch: int) -> float:
        cost = pass_cost(k1, dev, Workload(tp=8, batch=batch, prompt_tokens=1, context_tokens=1), "decode")
        return next(op.bytes for op in cost.ops if op.name == "moe_experts")

    one, many = expert_bytes(1), expert_bytes(1024)
    assert many / one > 10  # batch 1 touches 8 + 1 experts per layer; 1024 tokens touch nearly all 193
    activations = 60 * 2 * 1024 * 7168 * 2
    assert many == pytest.approx(60 * 193 * k1.expert_params() * 2 / 8 + activations, rel=1e-3)


def test_power_per_phase_and_cap_slows_compute() -> None:
    pred = RooflinePredictor([EXACT])
    work = Workload(tp=2, batch=1, prompt_tokens=8192, context_tokens=100)
    free = pred.predict(L8B, DEV, work)
    assert (free.power_prefill_w, free.power_decode_w) == (800.0, 400.0)  # phase power × tp
    assert free.prefill_tokens_per_j == pytest.approx(free.prefill_tokens_per_s / 800.0)
    capped = pred.predict(L8B, DEV, Workload(tp=2, batch=1, prompt_tokens=8192, context_tokens=100,
                                             power_cap_w=200.0))
    assert (capped.power_prefill_w, capped.power_decode_w) == (400.0, 400.0)
    ratio = (capped.prefill_ms - capped.allreduce_ms["prefill"]) / (free.prefill_ms - free.allreduce_ms["prefill"])
    assert 1.9 < ratio <= 2.0  # compute-bound prefill at half the power: about twice as long
    assert capped.decode_step_ms == pytest.approx(free.decode_step_ms)  # memory-bound, cap not below decode power


def test_calibration_precedence_and_uncalibrated_default() -> None:
    site_any = Calibration(device="test-chip", eta_compute=0.5, eta_memory=0.5, overhead_ms=1, source="site: a")
    site_tp2 = Calibration(device="test-chip", tp=2, eta_compute=0.4, eta_memory=0.4, overhead_ms=1, source="b")
    pred = RooflinePredictor([site_any, site_tp2, EXACT])
    assert pred.calibration_for("test-chip", 2) is site_tp2
    assert pred.calibration_for("test-chip", 1) is site_any
    p = RooflinePredictor().predict(L8B, DEV, Workload(tp=1, batch=1, prompt_tokens=10, context_tokens=10))
    assert not p.calibrated and "uncalibrated" in p.calibration_source
    assert (p.eta_compute, p.eta_memory, p.overhead_ms) == (0.7, 0.9, 0.0)
    a100 = device_spec(load_catalog(), "nvidia-a100-80gb-sxm")
    q = RooflinePredictor(catalog_calibrations()).predict(L8B, a100, Workload(tp=1, batch=1, prompt_tokens=10,
                                                                                   context_tokens=10))
    assert q.calibrated and q.calibration_source.startswith("catalog: ")


def test_device_spec_names_the_missing_figure() -> None:
    with pytest.raises(PlannerError, match=r"rebellions-atom: .*power_idle_w"):
        device_spec(load_catalog(), "rebellions-atom")
    with pytest.raises(PlannerError, match="unknown accelerator kind") as err:
        device_spec(load_catalog(), "nvidia-h100")
    assert "did you mean" in (err.value.hint or "")


def test_fp8_falls_back_to_bf16_peak_without_fp8_units() -> None:
    a100 = device_spec(load_catalog(), "nvidia-a100-80gb-sxm")
    h100 = device_spec(load_catalog(), "nvidia-h100-sxm")
    assert a100.flops("fp8") == a100.flops("bf16") == 312e12
    assert h100.flops("fp8") == 1979e12 and h100.flops("int4") == 989e12
