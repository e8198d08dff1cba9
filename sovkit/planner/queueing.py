"""Waiting time of prompts queued for prefill: M/G/c with Poisson arrivals, in milliseconds.

The approximation (documented in docs/planner.md, "Planning"):

- Mean wait, Allen–Cunneen: ``Wq ≈ C(c, a) · E[S] / (c·(1 − ρ)) · (1 + Cs²) / 2`` with ``a = λ·E[S]``,
  ``ρ = a / c``, ``C`` Erlang's delay probability and ``Cs²`` the squared coefficient of variation of the
  service time (0 for one prompt length: M/D/c; from the request-length histogram otherwise). For ``c = 1``
  it is the Pollaczek–Khinchine formula exactly: M/D/1 ``Wq = ρ / (2μ(1 − ρ))``.
- Percentiles: a prompt waits with probability ``P_w ≈ C(c, a)`` (exact for M/M/c and M/G/1); the wait of
  those that wait is taken as exponential with mean ``Wq / P_w`` (the heavy-traffic tail), so
  ``Wq_p = (Wq / P_w) · ln(P_w / (1 − p))`` when ``P_w > 1 − p``, else 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Wait:
    """Queueing at one rate over ``servers`` identical servers; times in ms."""

    servers: int
    utilization: float  # ρ
    p_wait: float  # probability an arrival waits at all
    mean_ms: float  # Wq

    def percentile_ms(self, p: float) -> float:
        """The p-quantile (0 < p < 1) of the wait under the exponential-tail approximation."""
        if not 0.0 < p < 1.0:
            raise ValueError(f"percentile {p} is not in (0, 1)")
        if math.isinf(self.mean_ms):
            return math.inf
        if self.p_wait <= 1.0 - p or self.mean_ms <= 0.0:
            return 0.0
        return self.mean_ms / self.p_wait * math.log(self.p_wait / (1.0 - p))


def erlang_c(servers: int, offered: float) -> float:
    """Erlang's C: the probability an arrival waits in M/M/c with offered load ``a = λ/μ`` (``a < c``).

    Computed through Erlang's B recursion, stable for thousands of servers.
    """
    if servers < 1:
        raise ValueError("at least one server")
    if offered <= 0.0:
        return 0.0
    if offered >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1.0 - rho + rho * b)


def mgc_wait(rate_per_s: float, service_ms: float, servers: int, scv: float = 0.0) -> Wait:
    """Wait for a server at ``rate_per_s`` arrivals with mean service ``service_ms`` (``scv`` = Cs²)."""
    offered = rate_per_s * service_ms / 1000.0
    rho = offered / servers
    if rho >= 1.0:
        return Wait(servers, rho, 1.0, math.inf)
    pw = erlang_c(servers, offered)
    mean = pw * service_ms / (servers * (1.0 - rho)) * (1.0 + scv) / 2.0
    return Wait(servers, rho, pw, mean)


def md1_mean_wait_ms(rate_per_s: float, service_ms: float) -> float:
    """M/D/1 mean wait, ρ/(2μ(1−ρ)): the closed form the general function reduces to (kept for tests, docs)."""
    mu = 1000.0 / service_ms
    rho = rate_per_s / mu
    if rho >= 1.0:
        return math.inf
    return 1000.0 * rho / (2.0 * mu * (1.0 - rho))


def service_moments(times_ms: list[float], weights: list[float]) -> tuple[float, float]:
    """Mean and squared coefficient of variation of a service time given per length bin with weights."""
    total = sum(weights)
    if total <= 0.0:
        raise ValueError("histogram weights sum to zero")
    mean = sum(t * w for t, w in zip(times_ms, weights, strict=True)) / total
    second = sum(t * t * w for t, w in zip(times_ms, weights, strict=True)) / total
    var = max(second - mean * mean, 0.0)
    return mean, (var / (mean * mean) if mean > 0 else 0.0)


def weighted_quantile(values: list[float], weights: list[float], p: float) -> float:
    """The smallest value whose cumulative weight reaches ``p`` of the total."""
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(weights)
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= p * total - 1e-12:
            return v
    return pairs[-1][0]
