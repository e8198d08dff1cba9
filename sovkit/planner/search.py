"""The plan search: prefill and decode pools (or co-located instances) over a site's free accelerators.

Candidates are (mode, chip kind, power cap, TP degree) per pool; for each, the instance counts that meet the
targets at the rate are found by search on the queueing and decode-throughput models, then instances are
placed on free hosts rack by rack under the racks' power budgets. The cheapest feasible candidate (least added
peak power, or least cost with prices) wins; docs/planner.md "Planning" states every modelling choice.

Hosts are grouped by (kind, power cap, free device indexes), so the work grows with the number of distinct
groups and racks, not of hosts; predictions are memoized per (kind, cap, TP, batch, lengths).
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict

from sovkit.catalog import Catalog
from sovkit.errors import PlannerError
from sovkit.inventory import LoadedInventory
from sovkit.inventory.models import MAX_BATCH, Model, Site
from sovkit.inventory.serving import host_devices, placements
from sovkit.planner.hardware import DeviceSpec, device_spec
from sovkit.planner.modelshape import Dtype, ModelShape, read_config
from sovkit.planner.perf import Prediction, Predictor, RooflinePredictor, Workload
from sovkit.planner.queueing import mgc_wait, service_moments, weighted_quantile

LinkKind = Literal["loopback", "ethernet", "rdma", "pcie", "nvlink"]
Constraint = Literal["memory", "latency", "capacity", "power", "runtime"]
Mode = Literal["disaggregated", "colocated"]

#: KV-transfer bandwidth per link kind, GB/s one way, with the source label of the figure. Nominal line
#: rates, not measured goodput: pass --link-gbs with the site's measured figure.
LINK_GBS: dict[str, tuple[float, str]] = {
    "loopback": (10.0, "[R] order of a memory copy through the kernel's loopback; unconfirmed"),
    "ethernet": (12.5, "[R] 100 GbE line rate (100 Gbit/s); unconfirmed for any site"),
    "rdma": (25.0, "[R] 200 Gbit/s InfiniBand HDR / RoCE line rate; unconfirmed for any site"),
    "pcie": (32.0, "[R] PCIe Gen4 x16 nominal, per direction; unconfirmed"),
    "nvlink": (300.0, "[S] A100 NVLink 600 GB/s total (shared/reference/hardware-and-models.md), "
                      "half per direction"),
}
#: tokens of a prompt prefilled per engine step when prefill and decode share a device (chunked prefill)
PREFILL_CHUNK_TOKENS = 2048  # [R] vLLM's max_num_batched_tokens default for online serving; unconfirmed
TP_DEGREES = (1, 2, 4, 8, 16, 32, 64)
#: infeasible candidates rank by how far they got: power failures were closest to a placement
_STAGE: dict[str, int] = {"runtime": 0, "memory": 1, "latency": 2, "capacity": 3, "power": 4}
_HINTS: dict[str, str] = {
    "memory": "use an accelerator with more memory, a higher TP degree, or shorter --isl/--osl",
    "latency": "relax --ttft-ms/--tpot-ms (or --percentile), or use faster accelerators",
    "capacity": "free accelerators (remove or shrink deployments), add hosts, or lower --rate",
    "power": "raise the rack power budget, spread over other racks, or lower --rate",
    "runtime": "add a runtime whose family supports the site's accelerators (and P/D for disaggregation)",
}


@dataclass(frozen=True)
class LengthBin:
    """Requests of one prompt and output length, with their share of the traffic."""

    isl: int
    osl: int
    weight: float = 1.0


@dataclass(frozen=True)
class PlanRequest:
    model: str
    ttft_ms: float
    tpot_ms: float
    rate: float  # requests per second
    bins: tuple[LengthBin, ...]
    percentile: int = 90
    prices: Mapping[str, float] = field(default_factory=dict)  # accelerator kind -> USD per device-hour
    link: LinkKind = "rdma"
    link_gbs: float | None = None  # overrides LINK_GBS[link]
    name: str | None = None  # serving group / deployment name stem (default: the model's name)
    mode: Literal["auto", "disaggregated", "colocated"] = "auto"  # restrict the search to one kind of placement


def read_histogram(path: Path) -> tuple[LengthBin, ...]:
    """A request-length histogram: CSV with header ``isl,osl,weight`` (weight: a count or a share)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlannerError(f"cannot read the length histogram {path}: {exc.strerror}",
                           "pass a CSV file with columns isl,osl,weight") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]][:2] != ["isl", "osl"]:
        raise PlannerError(f"{path}:1: the header must be isl,osl,weight", "e.g. `isl,osl,weight` then `512,128,30`")
    bins = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            isl, osl = int(row[0]), int(row[1])
            weight = float(row[2]) if len(row) > 2 and row[2].strip() else 1.0
        except (ValueError, IndexError):
            raise PlannerError(f"{path}:{n}: {','.join(row)!r} is not isl,osl,weight numbers",
                               "isl and osl are token counts, weight a non-negative number") from None
        if isl < 1 or osl < 1 or weight < 0 or not math.isfinite(weight):
            raise PlannerError(f"{path}:{n}: isl and osl must be >= 1 and weight >= 0", "fix the row")
        bins.append(LengthBin(isl, osl, weight))
    if not bins or sum(b.weight for b in bins) <= 0:
        raise PlannerError(f"{path}: the histogram has no rows with weight", "add rows isl,osl,weight")
    return tuple(bins)


# ----- results (the --json form) ---------------------------------------------------------------------


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolPlan(_M):
    """One pool: ``instances`` processes of ``tensor_parallel`` devices each, one per host."""

    role: Literal["prefill", "decode", "both"]
    accelerator: str
    power_cap_w: float | None
    tensor_parallel: int
    instances: int
    hosts: list[str]
    devices: list[int]
    runtime: str
    max_batch: int
    prefill_ms: float | None  # one prompt (mean over the lengths)
    decode_step_ms: float | None  # at max_batch
    power_per_instance_w: float  # peak phase power
    predicted_by: str


class RackLoad(_M):
    rack: str
    budget_w: float
    before_w: float  # CPU TDP + existing deployments' devices at TDP + free devices idle
    peak_w: float  # with the plan's pools at their peak phase power
    ok: bool


class Alternative(_M):
    summary: str
    feasible: bool
    constraint: str | None
    why_lost: str
    power_w: float | None
    cost_per_hour: float | None


class ServingPlan(_M):
    model: str
    mode: Mode
    rate: float
    percentile: int
    targets_ttft_ms: float
    targets_tpot_ms: float
    isl: int  # the (mean) prompt length the targets were planned at
    ttft_ms: float  # predicted at the percentile: queueing + prefill (+ KV transfer)
    queueing_ms: float
    kv_transfer_ms: float
    tpot_ms: float
    max_model_len: int  # the longest prompt + output: the memory check's context
    pools: list[PoolPlan]
    link: LinkKind | None
    link_gbs: float | None
    link_source: str | None
    connector: str | None
    power_w: float  # the pools' peak draw
    added_power_w: float  # over the same devices idling: the objective without prices
    cost_per_hour: float | None
    goodput_rps: float  # the highest rate this placement meets both targets at
    goodput_tokens_per_s: float
    output_tokens_per_j: float  # at the requested rate and the pools' peak draw (a lower bound)
    racks: list[RackLoad]
    alternatives: list[Alternative]
    notes: list[str]
    candidates: int


# ----- the free devices, grouped ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Hosts with the same kind, power cap and first ``tp`` free indexes: where one pool can go."""

    kind: str
    cap: float | None
    tp: int
    devices: tuple[int, ...]
    hosts: tuple[tuple[str, str], ...]  # (rack, host) in inventory order


@dataclass
class _Free:
    groups: dict[tuple[str, float | None, int], _Group]
    headroom: dict[str, float]  # rack -> budget - before
    before: dict[str, float]
    budget: dict[str, float]
    idle_per_device: dict[tuple[str, float | None], float]
    addresses: dict[str, str]
    notes: list[str]


def _free(site: Site, catalog: Catalog, specs: Mapping[str, DeviceSpec]) -> _Free:
    place = placements(site, catalog)
    claimed = {(p.host, i) for p in place.hosts for i in p.devices}
    budget = {r.name: r.power_budget_w for r in site.racks}
    before = dict.fromkeys(budget, 0.0)
    notes: list[str] = []
    unknown_w: set[str] = set()
    by_key: dict[tuple[str, float | None, tuple[int, ...]], list[tuple[str, str]]] = {}
    idle: dict[tuple[str, float | None], float] = {}
    for h in site.hosts:
        cpu = catalog.cpus.get(h.cpu)
        if cpu is not None and cpu.tdp_w.value is not None:
            before[h.rack] = before.get(h.rack, 0.0) + cpu.tdp_w.value
        caps = {s.kind: (float(s.power_cap_w) if s.power_cap_w is not None else None) for s in h.accelerators}
        free_of: dict[str, list[int]] = {}
        for idx, kind in enumerate(host_devices(h)):
            cap = caps[kind]
            spec = specs.get(kind)
            acc = catalog.accelerators.get(kind)
            tdp = spec.tdp_w if spec is not None else (acc.tdp_w.value if acc is not None else None)
            if (h.name, idx) in claimed:
                w = tdp
            else:
                free_of.setdefault(kind, []).append(idx)
                w = spec.power_idle_w if spec is not None else tdp
            if w is None:
                unknown_w.add(kind)
                w = 0.0
            w = min(w, cap) if cap is not None else w
            before[h.rack] = before.get(h.rack, 0.0) + w
        for kind, free in free_of.items():
            if kind not in specs:
                continue
            idle[kind, caps[kind]] = min(specs[kind].power_idle_w, caps[kind] or math.inf)
            by_key.setdefault((kind, caps[kind], tuple(free)), []).append((h.rack, h.name))
    if unknown_w:
        notes.append(f"no power figure for {', '.join(sorted(unknown_w))}: counted as 0 W in the rack totals")
    groups: dict[tuple[str, float | None, int], _Group] = {}
    for (kind, cap, indexes), hosts in by_key.items():
        for tp in TP_DEGREES:
            if tp > len(indexes):
                break
            devs = indexes[:tp]
            g = groups.get((kind, cap, tp))
            if g is None or g.devices == devs:
                merged = (g.hosts if g else ()) + tuple(hosts)
                groups[kind, cap, tp] = _Group(kind, cap, tp, devs, merged)
            elif len(hosts) > len(g.hosts):  # one device set per pool: keep the larger group (documented)
                groups[kind, cap, tp] = _Group(kind, cap, tp, devs, tuple(hosts))
    order = {h.name: i for i, h in enumerate(site.hosts)}
    for key, g in groups.items():
        groups[key] = _Group(g.kind, g.cap, g.tp, g.devices, tuple(sorted(g.hosts, key=lambda rh: order[rh[1]])))
    headroom = {r: budget[r] - before.get(r, 0.0) for r in budget}
    return _Free(groups, headroom, before, budget, idle, {h.name: h.address for h in site.hosts}, notes)


# ----- candidates ------------------------------------------------------------------------------------


@dataclass
class _Pool:
    role: Literal["prefill", "decode", "both"]
    group: _Group
    instances: int
    max_batch: int
    power_inst: float
    idle_inst: float
    prefill_ms: float | None
    step_ms: float | None
    source: str
    hosts: list[str] = field(default_factory=list)

    @property
    def added_inst(self) -> float:
        return self.power_inst - self.idle_inst


@dataclass
class _Cand:
    mode: Mode
    label: str
    runtime: str
    connector: str | None = None
    pools: list[_Pool] = field(default_factory=list)
    constraint: str | None = None
    reason: str = ""
    ttft_ms: float = math.nan
    queue_ms: float = 0.0
    transfer_ms: float = 0.0
    tpot_ms: float = math.nan
    racks: dict[str, float] = field(default_factory=dict)  # rack -> added peak W

    def fail(self, constraint: Constraint, reason: str) -> _Cand:
        self.constraint, self.reason = constraint, reason
        return self

    @property
    def power_w(self) -> float:
        return sum(p.instances * p.power_inst for p in self.pools)

    @property
    def added_w(self) -> float:
        return sum(p.instances * p.added_inst for p in self.pools)

    def cost(self, prices: Mapping[str, float]) -> float | None:
        if not prices:
            return None
        return sum(p.instances * p.group.tp * prices[p.group.kind] for p in self.pools)


class _Search:
    def __init__(self, site: Site, catalog: Catalog, model: Model, shape: ModelShape, req: PlanRequest,
                 predictor: Predictor, specs: Mapping[str, DeviceSpec]) -> None:
        self.site, self.catalog, self.req, self.shape, self.predictor, self.specs = (
            site, catalog, req, shape, predictor, specs)
        self.wdtype: Dtype = model.dtype
        self.kvdtype = cast(Dtype, "int8" if model.dtype == "int4" else model.dtype)
        self.memo: dict[tuple[object, ...], Prediction | PlannerError] = {}
        bins = req.bins
        self.w = [b.weight for b in bins]
        total = sum(self.w)
        self.isl_mean = sum(b.isl * b.weight for b in bins) / total
        self.osl_mean = sum(b.osl * b.weight for b in bins) / total
        self.ctx_max = max(b.isl + b.osl for b in bins)
        self.ctx_mean = round(sum((b.isl + b.osl / 2) * b.weight for b in bins) / total)
        self.p = req.percentile / 100.0
        gbs, src = LINK_GBS[req.link]
        self.link_gbs = req.link_gbs if req.link_gbs is not None else gbs
        self.link_source = "--link-gbs (given)" if req.link_gbs is not None else src

    # predictions -------------------------------------------------------------------------------------
    def predict(self, kind: str, cap: float | None, tp: int, batch: int, prompt: int, ctx: int) -> Prediction:
        key = (kind, cap, tp, batch, prompt, ctx)
        hit = self.memo.get(key)
        if hit is None:
            try:
                hit = self.predictor.predict(self.shape, self.specs[kind], Workload(
                    tp=tp, batch=batch, prompt_tokens=prompt, context_tokens=ctx, weight_dtype=self.wdtype,
                    kv_dtype=self.kvdtype, power_cap_w=cap))
            except PlannerError as exc:
                hit = exc
            self.memo[key] = hit
        if isinstance(hit, PlannerError):
            raise hit
        return hit

    def prefill_times(self, g: _Group) -> list[float]:
        return [self.predict(g.kind, g.cap, g.tp, 1, b.isl, b.isl).prefill_ms for b in self.req.bins]

    def step(self, g: _Group, batch: int) -> float:
        return self.predict(g.kind, g.cap, g.tp, batch, round(self.isl_mean), self.ctx_mean).decode_step_ms

    def max_batch(self, g: _Group) -> int:
        return min(MAX_BATCH, self.predict(g.kind, g.cap, g.tp, 1, round(self.isl_mean), self.ctx_max).max_batch)

    def largest_batch(self, g: _Group, limit: int, budget_ms: float) -> int:
        """The largest batch <= limit whose decode step fits ``budget_ms`` (0: not even batch 1)."""
        if limit < 1 or self.step(g, 1) > budget_ms:
            return 0
        lo, hi = 1, limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.step(g, mid) <= budget_ms:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def smallest_batch(self, g: _Group, limit: int, tokens_per_s: float, share: float) -> int:
        """The smallest batch <= limit carrying ``tokens_per_s`` with ``share`` of the device's time (0: none)."""
        def carries(b: int) -> bool:
            return b * 1000.0 * share / self.step(g, b) >= tokens_per_s
        if limit < 1 or not carries(limit):
            return 0
        lo, hi = 1, limit
        while lo < hi:
            mid = (lo + hi) // 2
            if carries(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def power(self, g: _Group, phase: Literal["prefill", "decode", "both"]) -> tuple[float, float, str]:
        pred = self.predict(g.kind, g.cap, g.tp, 1, round(self.isl_mean), self.ctx_mean)
        w = {"prefill": pred.power_prefill_w, "decode": pred.power_decode_w,
             "both": max(pred.power_prefill_w, pred.power_decode_w)}[phase]
        if g.cap is not None:
            w = min(w, g.cap * g.tp)
        spec = self.specs[g.kind]
        idle = g.tp * (min(spec.power_idle_w, g.cap) if g.cap is not None else spec.power_idle_w)
        return w, idle, pred.calibration_source

    # pools -------------------------------------------------------------------------------------------
    def ttft(self, g: _Group, n: int, rate: float, extra_ms: list[float], transfer: bool) -> tuple[float, float, float]:
        """(TTFT at the percentile, its queueing part, its transfer part) for ``n`` servers at ``rate``."""
        times = [s + e for s, e in zip(self.prefill_times(g), extra_ms, strict=True)]
        mean, scv = service_moments(times, self.w)
        wait = mgc_wait(rate, mean, n, scv)
        q = wait.percentile_ms(self.p)
        xfer = 0.0
        if transfer:
            kvb = self.predict(g.kind, g.cap, g.tp, 1, round(self.isl_mean), self.ctx_mean).kv_bytes_per_token
            xfer = weighted_quantile([b.isl * kvb / (self.link_gbs * 1e9) * 1000.0 for b in self.req.bins],
                                     self.w, self.p)
        return q + weighted_quantile(times, self.w, self.p) + xfer, q, xfer

    def min_servers(self, ok: Callable[[int], bool], n_max: int) -> int:
        """Smallest n in 1..n_max with ok(n) (ok is monotone in n); 0 when even n_max fails."""
        if n_max < 1 or not ok(n_max):
            return 0
        hi = 1
        while not ok(hi):
            hi = min(hi * 2, n_max)
        lo = hi // 2 + 1 if hi > 1 else 1
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def memory_check(self, g: _Group, ctx: int) -> str | None:
        mb = self.predict(g.kind, g.cap, g.tp, 1, min(ctx, round(self.isl_mean)), ctx).max_batch
        if mb >= 1:
            return None
        spec = self.specs[g.kind]
        return (f"weights and the KV cache of one {ctx}-token sequence do not fit {g.tp} x {spec.memory_gb:g} GB "
                f"on {g.kind} (TP {g.tp})")

    def prefill_pool(self, c: _Cand, g: _Group) -> _Pool | None:
        req = self.req
        mem = self.memory_check(g, max(b.isl for b in req.bins))
        if mem:
            c.fail("memory", mem)
            return None
        alone, _, xfer = self.ttft(g, 10**6, 0.0, [0.0] * len(req.bins), True)
        if alone > req.ttft_ms:
            c.fail("latency", f"prefill alone takes {alone - xfer:.1f} ms" + (f" + {xfer:.1f} ms KV transfer"
                   if xfer else "") + f" on {g.kind} TP {g.tp}, over the {req.ttft_ms:g} ms TTFT target")
            return None
        zeros = [0.0] * len(req.bins)
        n = self.min_servers(lambda k: self.ttft(g, k, req.rate, zeros, True)[0] <= req.ttft_ms, len(g.hosts))
        if n == 0:
            best = self.ttft(g, len(g.hosts), req.rate, zeros, True)[0]
            c.fail("capacity", f"with all {len(g.hosts)} free {g.kind} host(s) at TP {g.tp} prefill TTFT is "
                   f"{best:.1f} ms, {best - req.ttft_ms:.1f} ms over the target")
            return None
        w, idle, src = self.power(g, "prefill")
        mean = service_moments(self.prefill_times(g), self.w)[0]
        return _Pool("prefill", g, n, 1, w, idle, mean, None, src)

    def decode_pool(self, c: _Cand, g: _Group) -> _Pool | None:
        req = self.req
        mem = self.memory_check(g, self.ctx_max)
        if mem:
            c.fail("memory", mem)
            return None
        mb = self.max_batch(g)
        b = self.largest_batch(g, mb, req.tpot_ms)
        if b == 0:
            c.fail("latency", f"one decode step takes {self.step(g, 1):.1f} ms at batch 1 on {g.kind} TP {g.tp}, "
                   f"over the {req.tpot_ms:g} ms TPOT target")
            return None
        step = self.step(g, b)
        n = math.ceil(req.rate * self.osl_mean * step / (1000.0 * b) - 1e-9)
        n = max(n, 1)
        if n > len(g.hosts):
            c.fail("capacity", f"decode needs {n} instance(s) of {g.kind} TP {g.tp} at batch {b} "
                   f"({step:.1f} ms/step); {len(g.hosts)} host(s) have {g.tp} free")
            return None
        w, idle, src = self.power(g, "decode")
        c.tpot_ms = step
        return _Pool("decode", g, n, b, w, idle, None, step, src)

    def colocated_at(self, g: _Group, n: int, rate: float, mb: int) -> tuple[str | None, float, float, int, int, float]:
        """(failure, TTFT, queueing, running batch, batch cap, TPOT) of ``n`` co-located instances at ``rate``.

        A share u = λ_i·E[S] of each device's time goes to prefill chunks of arriving requests; decode
        progresses in the rest, so TPOT = step(b)/(1-u); each prompt's prefill shares ceil(isl/chunk) steps
        with the running decode batch, so its service time grows by that many decode steps.
        """
        req = self.req
        mean_s = service_moments(self.prefill_times(g), self.w)[0]
        u = rate / n * mean_s / 1000.0
        if u >= 1.0:
            return "prefill alone saturates the instances", math.inf, math.inf, 0, 0, math.inf
        b = self.smallest_batch(g, mb, rate / n * self.osl_mean, 1.0 - u)
        if b == 0:
            return (f"decode at the largest batch {mb} memory allows cannot carry {rate / n * self.osl_mean:.0f} "
                    "tokens/s per instance", math.inf, math.inf, 0, 0, math.inf)
        tpot = self.step(g, b) / (1.0 - u)
        if tpot > req.tpot_ms:
            return (f"TPOT {tpot:.1f} ms (decode step {self.step(g, b):.1f} ms stretched by prefill chunks taking "
                    f"{u:.0%} of the device)", math.inf, math.inf, b, 0, tpot)
        cap_b = self.largest_batch(g, mb, req.tpot_ms * (1.0 - u))
        extra = [math.ceil(bn.isl / PREFILL_CHUNK_TOKENS) * self.step(g, b) for bn in req.bins]
        ttft, q, _ = self.ttft(g, n, rate, extra, False)
        if ttft > req.ttft_ms:
            return f"TTFT {ttft:.1f} ms", ttft, q, b, cap_b, tpot
        return None, ttft, q, b, cap_b, tpot

    # placement on racks --------------------------------------------------------------------------------
    def assign(self, c: _Cand, free: _Free) -> None:
        headroom = dict(free.headroom)
        taken: set[str] = set()
        for pool in c.pools:
            got: list[str] = []
            short_power: dict[str, float] = {}
            for rack, host in pool.group.hosts:
                if len(got) == pool.instances:
                    break
                if host in taken:
                    continue
                if headroom.get(rack, -math.inf) + 1e-9 >= pool.added_inst:
                    got.append(host)
                    taken.add(host)
                    headroom[rack] -= pool.added_inst
                    c.racks[rack] = c.racks.get(rack, 0.0) + pool.added_inst
                else:
                    short_power.setdefault(rack, headroom.get(rack, -math.inf))
            if len(got) < pool.instances:
                if short_power:
                    rack, room = next(iter(short_power.items()))
                    c.fail("power", f"{pool.role} needs {pool.instances} instance(s) of {pool.group.kind} "
                           f"TP {pool.group.tp} at {pool.power_inst:.0f} W peak; rack budgets allow {len(got)}: "
                           f"rack {rack} would peak at {free.budget[rack] - room + pool.added_inst:.0f} W against "
                           f"its {free.budget[rack]:.0f} W budget")
                else:
                    c.fail("capacity", f"{pool.role} needs {pool.instances} host(s) with {pool.group.tp} free "
                           f"{pool.group.kind}; {len(got)} left after the other pool")
                return
            pool.hosts = got

    # the search ----------------------------------------------------------------------------------------
    def runtimes_for(self, kinds: set[str], disaggregated: bool) -> tuple[str, str | None] | None:
        vendors = {self.catalog.accelerators[k].vendor for k in kinds}
        for rt in self.site.runtimes:
            prof = self.catalog.runtimes.get(rt.family)
            if prof is None or not vendors <= set(prof.accelerators):
                continue
            if not disaggregated:
                return rt.name, None
            if prof.disaggregation.supported and prof.disaggregation.connectors:
                return rt.name, prof.disaggregation.connectors[0]
        return None

    def candidates(self, free: _Free) -> list[_Cand]:
        out: list[_Cand] = []
        groups = sorted(free.groups.values(), key=lambda g: (g.kind, g.cap or 0.0, g.tp))
        prefill: dict[tuple[str, float | None, int], _Pool | _Cand] = {}
        decode: dict[tuple[str, float | None, int], _Pool | _Cand] = {}
        for g in groups:
            key = (g.kind, g.cap, g.tp)
            probe = _Cand("disaggregated", "", "")
            try:
                pp = self.prefill_pool(probe, g)
                prefill[key] = pp if pp is not None else probe
                probe = _Cand("disaggregated", "", "")
                dp = self.decode_pool(probe, g)
                decode[key] = dp if dp is not None else probe
            except PlannerError as exc:
                probe.fail("runtime", f"{g.kind} TP {g.tp}: {exc.message}")
                prefill.setdefault(key, probe)
                decode[key] = probe
            out.append(self.colocated(g, free))
        for pk, pv in prefill.items():
            for dk, dv in decode.items():
                out.append(self.disaggregated(pk, pv, dk, dv, free))
        return out

    def _label(self, pools: list[tuple[str, tuple[str, float | None, int], int | None]]) -> str:
        parts = []
        for role, (kind, cap, tp), n in pools:
            capped = f" capped {cap:g} W" if cap is not None else ""
            parts.append(f"{role} {n if n else '?'} x {kind}{capped} TP {tp}")
        return ", ".join(parts)

    def disaggregated(self, pk: tuple[str, float | None, int], pv: _Pool | _Cand,
                      dk: tuple[str, float | None, int], dv: _Pool | _Cand, free: _Free) -> _Cand:
        pn = pv.instances if isinstance(pv, _Pool) else None
        dn = dv.instances if isinstance(dv, _Pool) else None
        c = _Cand("disaggregated", "disaggregated: " + self._label([("prefill", pk, pn), ("decode", dk, dn)]), "")
        rt = self.runtimes_for({pk[0], dk[0]}, True)
        if rt is None:
            return c.fail("runtime", f"no runtime of the site serves {pk[0]} and {dk[0]} as one P/D pair (one "
                          "runtime family with a KV connector on both sides)")
        c.runtime, c.connector = rt
        for v in (pv, dv):
            if isinstance(v, _Cand):
                return c.fail(cast(Constraint, v.constraint), v.reason)
        assert isinstance(pv, _Pool) and isinstance(dv, _Pool)
        c.pools = [_Pool(**{**pv.__dict__, "hosts": []}), _Pool(**{**dv.__dict__, "hosts": []})]
        zeros = [0.0] * len(self.req.bins)
        c.ttft_ms, c.queue_ms, c.transfer_ms = self.ttft(pv.group, pv.instances, self.req.rate, zeros, True)
        c.tpot_ms = dv.step_ms or math.nan
        self.assign(c, free)
        return c

    def colocated(self, g: _Group, free: _Free) -> _Cand:
        key = (g.kind, g.cap, g.tp)
        c = _Cand("colocated", "co-located: " + self._label([("both", key, None)]), "")
        rt = self.runtimes_for({g.kind}, False)
        if rt is None:
            return c.fail("runtime", f"no runtime of the site supports {g.kind}")
        c.runtime = rt[0]
        try:
            mem = self.memory_check(g, self.ctx_max)
            if mem:
                return c.fail("memory", mem)
            mb = self.max_batch(g)
            if self.step(g, 1) > self.req.tpot_ms:
                return c.fail("latency", f"one decode step takes {self.step(g, 1):.1f} ms at batch 1 on {g.kind} "
                              f"TP {g.tp}, over the {self.req.tpot_ms:g} ms TPOT target")
            one, _, _ = self.ttft(g, 10**6, 0.0, [0.0] * len(self.req.bins), False)
            if one > self.req.ttft_ms:
                return c.fail("latency", f"prefill alone takes {one:.1f} ms on {g.kind} TP {g.tp}, over the "
                              f"{self.req.ttft_ms:g} ms TTFT target")
            n = self.min_servers(lambda k: self.colocated_at(g, k, self.req.rate, mb)[0] is None, len(g.hosts))
            if n == 0:
                why = self.colocated_at(g, len(g.hosts), self.req.rate, mb)[0]
                return c.fail("capacity", f"with all {len(g.hosts)} free {g.kind} host(s) at TP {g.tp}: {why}")
            _, ttft, q, _, cap_b, tpot = self.colocated_at(g, n, self.req.rate, mb)
            w, idle, src = self.power(g, "both")
            mean = service_moments(self.prefill_times(g), self.w)[0]
            c.pools = [_Pool("both", g, n, cap_b, w, idle, mean, self.step(g, cap_b), src)]
        except PlannerError as exc:
            return c.fail("runtime", f"{g.kind} TP {g.tp}: {exc.message}")
        c.label = "co-located: " + self._label([("both", key, n)])
        c.ttft_ms, c.queue_ms, c.tpot_ms = ttft, q, tpot
        self.assign(c, free)
        return c

    def goodput(self, c: _Cand) -> float:
        """The highest rate (req/s) at which this placement still meets both targets."""
        req = self.req

        def ok(rate: float) -> bool:
            if c.mode == "colocated":
                pool = c.pools[0]
                return self.colocated_at(pool.group, pool.instances, rate, self.max_batch(pool.group))[0] is None
            pre, dec = c.pools
            zeros = [0.0] * len(req.bins)
            if self.ttft(pre.group, pre.instances, rate, zeros, True)[0] > req.ttft_ms:
                return False
            step = dec.step_ms or math.inf
            return rate * self.osl_mean <= dec.instances * dec.max_batch * 1000.0 / step

        lo, hi = 0.0, max(req.rate, 1e-6)
        while ok(hi) and hi < 1e9:
            lo, hi = hi, hi * 2
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        return lo


def _why_lost(c: _Cand, best: _Cand, prices: Mapping[str, float]) -> str:
    if c.constraint is not None:
        return f"{c.constraint}: {c.reason}"
    if prices:
        bc, cc = best.cost(prices) or 0.0, c.cost(prices) or 0.0
        if cc > bc + 1e-9:
            return f"costs ${cc - bc:.2f}/h more (${cc:.2f} vs ${bc:.2f} per hour)"
    if c.added_w > best.added_w + 1e-9:
        return (f"adds {c.added_w - best.added_w:.0f} W more at peak ({c.added_w:.0f} W vs {best.added_w:.0f} W "
                "over idle)")
    return "ties on power and cost; ranked lower by fewer devices, then by name"


def plan_serving(site: Site, catalog: Catalog, model: Model, shape: ModelShape, request: PlanRequest,
                 predictor: Predictor, specs: Mapping[str, DeviceSpec]) -> ServingPlan:
    """Search the cheapest placement meeting the targets; PlannerError names the binding constraint if none."""
    req = request
    if req.percentile not in (50, 90, 99):
        raise PlannerError(f"percentile {req.percentile} is not one of 50, 90, 99", "pass --percentile 50|90|99")
    if req.rate <= 0 or req.ttft_ms <= 0 or req.tpot_ms <= 0 or not req.bins:
        raise PlannerError("rate, TTFT and TPOT targets must be > 0 and there must be request lengths",
                           "pass --rate, --ttft-ms, --tpot-ms and --isl/--osl (or --lengths)")
    search = _Search(site, catalog, model, shape, req, predictor, specs)
    free = _free(site, catalog, specs)
    if req.prices:
        missing = sorted({g.kind for g in free.groups.values()} - set(req.prices))
        for k in missing:
            free.notes.append(f"no --price for {k}: its devices are left out of the search")
        free.groups = {key: g for key, g in free.groups.items() if g.kind in req.prices}
    if not free.groups:
        raise PlannerError("no free accelerators to plan on: every device is claimed by a deployment or has no "
                           "planner figures", _HINTS["capacity"])
    cands = [c for c in search.candidates(free) if req.mode in ("auto", c.mode)]
    feasible = [c for c in cands if c.constraint is None]

    def objective(c: _Cand) -> tuple[float, float, int, str]:
        devices = sum(p.instances * p.group.tp for p in c.pools)
        primary = c.cost(req.prices) if req.prices else c.added_w
        return (primary or 0.0, c.added_w, devices, c.label)

    if not feasible:
        worst = max(cands, key=lambda c: (_STAGE[c.constraint or "runtime"], -len(c.label)))
        stage = worst.constraint or "runtime"
        raise PlannerError(f"no placement of {req.model} meets TTFT {req.ttft_ms:g} ms / TPOT {req.tpot_ms:g} ms at "
                           f"{req.rate:g} req/s: binding constraint {stage}: {worst.reason} (closest candidate: "
                           f"{worst.label}; {len(cands)} candidates tried)", _HINTS[stage])
    feasible.sort(key=objective)
    best = feasible[0]
    rest = feasible[1:6]
    if len(rest) < 5:
        bad = sorted((c for c in cands if c.constraint is not None),
                     key=lambda c: (-_STAGE[c.constraint or "runtime"], c.label))
        rest += bad[:5 - len(rest)]
    alternatives = [Alternative(summary=c.label, feasible=c.constraint is None, constraint=c.constraint,
                                why_lost=_why_lost(c, best, req.prices),
                                power_w=round(c.power_w, 1) if c.constraint is None else None,
                                cost_per_hour=c.cost(req.prices) if c.constraint is None else None)
                    for c in rest]
    pools = [PoolPlan(role=p.role, accelerator=p.group.kind, power_cap_w=p.group.cap, tensor_parallel=p.group.tp,
                      instances=p.instances, hosts=p.hosts, devices=list(p.group.devices), runtime=best.runtime,
                      max_batch=p.max_batch, prefill_ms=_r(p.prefill_ms), decode_step_ms=_r(p.step_ms),
                      power_per_instance_w=round(p.power_inst, 1), predicted_by=p.source)
             for p in best.pools]
    racks = []
    for rack in sorted(best.racks, key=lambda r: [x.name for x in site.racks].index(r)):
        peak = free.before[rack] + best.racks[rack]
        racks.append(RackLoad(rack=rack, budget_w=free.budget[rack], before_w=round(free.before[rack], 1),
                              peak_w=round(peak, 1), ok=peak <= free.budget[rack] + 1e-6))
    good = search.goodput(best)
    disagg = best.mode == "disaggregated"
    return ServingPlan(
        model=req.model, mode=best.mode, rate=req.rate, percentile=req.percentile, targets_ttft_ms=req.ttft_ms,
        targets_tpot_ms=req.tpot_ms, isl=round(search.isl_mean), ttft_ms=round(best.ttft_ms, 2),
        queueing_ms=round(best.queue_ms, 2),
        kv_transfer_ms=round(best.transfer_ms, 3), tpot_ms=round(best.tpot_ms, 2),
        max_model_len=search.ctx_max, pools=pools,
        link=req.link if disagg else None, link_gbs=search.link_gbs if disagg else None,
        link_source=search.link_source if disagg else None, connector=best.connector,
        power_w=round(best.power_w, 1), added_power_w=round(best.added_w, 1), cost_per_hour=best.cost(req.prices),
        goodput_rps=round(good, 3), goodput_tokens_per_s=round(good * search.osl_mean, 1),
        output_tokens_per_j=round(req.rate * search.osl_mean / best.power_w, 4) if best.power_w > 0 else 0.0,
        racks=racks, alternatives=alternatives, notes=free.notes, candidates=len(cands))


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def find_model(site: Site, name: str) -> Model:
    """The inventory model ``name``; PlannerError with a did-you-mean otherwise."""
    for m in site.models:
        if m.name == name:
            return m
    names = [m.name for m in site.models]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    raise PlannerError(f"model {name!r} is not in the inventory",
                       f"did you mean {close[0]!r}?" if close else f"known models: {', '.join(names) or 'none'}")


def plan_inventory(inv: LoadedInventory, catalog: Catalog, request: PlanRequest,
                   predictor: Predictor | None = None) -> ServingPlan:
    """Plan ``request.model`` on the inventory: read its config.json, the device figures, and search."""
    site = inv.site
    model = find_model(site, request.model)
    if model.config is None:
        raise PlannerError(f"model {model.name!r} has no `config:` (its Hugging Face config.json)",
                           "add `config: PATH` (relative to the inventory) to the model; the planner reads its "
                           "layers, heads, FFN and vocabulary from it")
    shape = read_config(inv.resolve(model.config), name=model.name)
    specs: dict[str, DeviceSpec] = {}
    left_out: list[str] = []
    for kind in sorted({s.kind for h in site.hosts for s in h.accelerators}):
        try:
            specs[kind] = device_spec(catalog, kind)
        except PlannerError as exc:
            left_out.append(f"{kind} left out: {exc.message}")
    if not specs:
        raise PlannerError("no accelerator of the site has the figures the planner needs: " + "; ".join(left_out),
                           "the catalog lacks them; see docs/planner.md")
    plan = plan_serving(site, catalog, model, shape, request, predictor or RooflinePredictor(), specs)
    return plan.model_copy(update={"notes": left_out + plan.notes})
