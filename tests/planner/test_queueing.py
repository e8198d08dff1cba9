"""The queueing formulas against hand-computed values (docs/planner.md "Planning" states the approximation)."""

from __future__ import annotations

import math

import pytest

from sovkit.planner.queueing import erlang_c, md1_mean_wait_ms, mgc_wait, service_moments, weighted_quantile


def test_md1_mean_wait_is_pollaczek_khinchine() -> None:
    # λ = 5/s, S = 100 ms: μ = 10/s, ρ = 0.5, Wq = ρ / (2μ(1-ρ)) = 0.5 / (2·10·0.5) s = 50 ms
    assert md1_mean_wait_ms(5.0, 100.0) == pytest.approx(50.0)
    assert mgc_wait(5.0, 100.0, 1).mean_ms == pytest.approx(50.0)
    # ρ = 0.9: Wq = 0.9 / (2·10·0.1) s = 450 ms
    assert mgc_wait(9.0, 100.0, 1).mean_ms == pytest.approx(450.0)


def test_mm1_mean_and_percentile_are_exact() -> None:
    # Cs² = 1 is M/M/1: Wq = ρ/(μ-λ) = 0.5/5 s = 100 ms; P(W > t) = ρ·e^{-(μ-λ)t}, so the 90th percentile
    # is ln(ρ/0.1)/(μ-λ) = ln 5 / 5 s = 321.89 ms
    w = mgc_wait(5.0, 100.0, 1, scv=1.0)
    assert w.mean_ms == pytest.approx(100.0)
    assert w.p_wait == pytest.approx(0.5)
    assert w.percentile_ms(0.9) == pytest.approx(1000 * math.log(5) / 5)
    assert w.percentile_ms(0.5) == 0.0  # half the arrivals find the server idle


def test_erlang_c_hand_values() -> None:
    # c = 2, a = 1: B(1) = 1/2, B(2) = 0.5/2.5 = 0.2, C = 0.2 / (1 - 0.5 + 0.5·0.2) = 1/3
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = ρ
    assert erlang_c(3, 0.0) == 0.0
    assert erlang_c(2, 2.5) == 1.0


def test_mdc_mean_wait_uses_erlang_c() -> None:
    # c = 2, λ = 10/s, S = 100 ms: a = 1, ρ = 0.5, Wq = C·S/(c(1-ρ))·(1+0)/2 = (1/3)·100/(2·0.5)/2 = 16.67 ms
    assert mgc_wait(10.0, 100.0, 2).mean_ms == pytest.approx(100 / 6)


def test_saturated_queue_waits_forever() -> None:
    w = mgc_wait(10.0, 100.0, 1)
    assert math.isinf(w.mean_ms) and math.isinf(w.percentile_ms(0.5))


def test_histogram_moments_and_quantile() -> None:
    mean, scv = service_moments([10.0, 30.0], [1.0, 1.0])
    assert mean == pytest.approx(20.0) and scv == pytest.approx(100.0 / 400.0)
    assert weighted_quantile([10.0, 30.0, 20.0], [0.5, 0.1, 0.4], 0.9) == 20.0
    assert weighted_quantile([10.0, 30.0, 20.0], [0.5, 0.1, 0.4], 0.99) == 30.0
