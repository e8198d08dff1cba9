"""The planner's view of a site as declared: each deployment's TTFT and TPOT at its own shape, each rack's peak.

Policy carries these numbers into its input (sovkit/policy/input.py) and the Rego only compares them with the
targets and budgets (SV-008, SV-009, CAP-001, CAP-002). The shape a deployment is judged at:

- prompt: ``targets.isl`` tokens, else ``max_model_len // 2`` (half of the longest sequence it accepts);
- TTFT: prefill of one such prompt at batch 1 (no queueing), plus, for a serving group, the KV cache of that
  prompt sent over the group's link; the prefill side's kind and TP;
- TPOT: one decode step of ``max_batch`` sequences, each with ``(prompt + max_model_len) // 2`` tokens in its KV
  cache (midway through the longest answer); the decode side's kind and TP (a co-located ``role: both``
  deployment is both sides). With ``max_model_len = isl + osl`` this is the shape `sovkit serving plan` plans at.

A rack's peak: every device serving a prefill (or co-located) deployment at its prefill power, every device
serving a decode deployment at its decode power, every other device at its idle power (each capped at the
slot's ``power_cap_w``), plus the CPUs' TDP. A kind without phase-power figures counts at its TDP.
Predictions are memoized per (model, kind, TP, batch, tokens, dtypes, cap): a 10,000-host site predicts once
per distinct shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from sovkit.catalog import Catalog
from sovkit.errors import PlannerError
from sovkit.inventory import serving as sv
from sovkit.inventory.models import Deployment, Host, Model, ServingGroup, Site
from sovkit.planner.calibration import load_calibrations
from sovkit.planner.hardware import DeviceSpec, device_spec
from sovkit.planner.modelshape import Dtype, ModelShape, read_config
from sovkit.planner.perf import Prediction, Predictor, RooflinePredictor, Workload
from sovkit.planner.search import LINK_GBS  # the same nominal link figures `sovkit serving plan` uses


def site_predictor() -> Predictor:
    """The predictor policy and the demo use: the shipped roofline model with the catalog's calibrations."""
    return RooflinePredictor(load_calibrations())


def judged_prompt_tokens(d: Deployment) -> int:
    """The prompt a deployment's targets are judged at: ``targets.isl``, else half its max_model_len."""
    if d.targets is not None and d.targets.isl is not None:
        return d.targets.isl
    return max(1, d.max_model_len // 2)


def decode_context(d: Deployment, prompt: int) -> int:
    """Tokens in each sequence's KV cache when TPOT is judged: midway from the prompt to max_model_len."""
    return max(prompt, (prompt + d.max_model_len) // 2)


@dataclass(frozen=True)
class DeploymentForecast:
    """Predicted latency of one deployment (a group's members share the group's TTFT and TPOT)."""

    deployment: str
    group: str | None
    role: str
    accelerator: str
    tensor_parallel: int
    max_batch: int
    prompt_tokens: int
    context_tokens: int  # in each sequence's KV cache when TPOT is judged
    prefill_ms: float | None
    kv_transfer_ms: float | None
    ttft_ms: float | None
    tpot_ms: float | None
    calibrated: bool
    calibration_source: str
    error: str | None  # why there is no prediction (then the times are None)


@dataclass(frozen=True)
class PowerTerm:
    """``count`` devices (or CPUs) at ``watts_each`` in one state: prefill, decode, idle, tdp (no phase figure), cpu."""

    state: str
    kind: str
    count: int
    watts_each: float


@dataclass(frozen=True)
class RackPeak:
    rack: str
    peak_w: float
    terms: list[PowerTerm]
    phase_devices: int  # devices counted at a phase-power figure
    tdp_devices: int  # devices counted at TDP (their kind has no phase-power figures)
    unknown: int  # components with neither figure (the peak is a lower bound)


@dataclass
class SitePredictor:
    """Predictions for one site, memoized (model configs, device specs and shapes are each computed once)."""

    site: Site
    root: Path  # where the inventory's relative paths (models[].config) resolve
    catalog: Catalog
    predictor: Predictor
    _shapes: dict[str, ModelShape | PlannerError] = field(default_factory=dict)
    _specs: dict[str, DeviceSpec | PlannerError] = field(default_factory=dict)
    _memo: dict[tuple[object, ...], Prediction] = field(default_factory=dict)
    _placed: sv.Placements | None = None

    def placements(self) -> sv.Placements:
        if self._placed is None:
            self._placed = sv.placements(self.site, self.catalog)
        return self._placed

    def shape(self, model: Model) -> ModelShape:
        if model.name not in self._shapes:
            try:
                if model.config is None:
                    raise PlannerError(f"model {model.name} declares no config (its config.json)",
                                       "set models[].config to the model's config.json, relative to the inventory")
                self._shapes[model.name] = read_config(self.root / model.config, name=model.name)
            except PlannerError as exc:
                self._shapes[model.name] = exc
        got = self._shapes[model.name]
        if isinstance(got, PlannerError):
            raise got
        return got

    def spec(self, kind: str) -> DeviceSpec:
        if kind not in self._specs:
            try:
                self._specs[kind] = device_spec(self.catalog, kind)
            except PlannerError as exc:
                self._specs[kind] = exc
        got = self._specs[kind]
        if isinstance(got, PlannerError):
            raise got
        return got

    def predict(self, model: Model, kind: str, work: Workload) -> Prediction:
        key = (model.name, kind, work)
        if key not in self._memo:
            self._memo[key] = self.predictor.predict(self.shape(model), self.spec(kind), work)
        return self._memo[key]


def _cap(host: Host, kind: str) -> float | None:
    caps = [s.power_cap_w for s in host.accelerators if s.kind == kind and s.power_cap_w is not None]
    return float(min(caps)) if caps else None


def _workload(d: Deployment, model: Model, batch: int, tokens: int, context: int, cap: float | None) -> Workload:
    kv = cast(Dtype, sv.effective_kv_dtype(d, model))  # KvDtype is a subset of Dtype
    return Workload(tp=d.tensor_parallel, batch=batch, prompt_tokens=tokens, context_tokens=context,
                    weight_dtype=model.dtype, kv_dtype=kv, power_cap_w=cap)


def _kind_of(hosts: dict[str, Host], placed: sv.Placements, d: Deployment) -> tuple[str, Host] | None:
    """The accelerator kind serving ``d`` (its first host's allocated devices) and that host."""
    for name in d.hosts:
        try:
            p = placed.get(d.name, name)
        except KeyError:
            continue
        kinds = list(p.device_kinds) or sv.host_devices(hosts[name])
        if kinds:
            return kinds[0], hosts[name]
    return None


@dataclass(frozen=True)
class _Side:
    prefill_ms: float
    decode_ms: float
    kv_bytes_per_token: int
    calibrated: bool
    source: str


def forecast_deployments(sp: SitePredictor, tokens: Callable[[Deployment], int] = judged_prompt_tokens,
                         batch: Callable[[Deployment], int] | None = None,
                         context: Callable[[Deployment, int], int] = decode_context) -> list[DeploymentForecast]:
    """A forecast per deployment whose model and kind are known (see the module docstring for the shape).

    ``tokens``/``batch``/``context`` override the judged prompt length, decode batch and decode context (the
    demo's request: its own prompt, at batch 1, decoding right after it).
    """
    site = sp.site
    placed = sp.placements()
    hosts = {h.name: h for h in site.hosts}
    models = {m.name: m for m in site.models}
    deployments = {d.name: d for d in site.deployments}
    groups = sv.group_of(site)

    def side(d: Deployment, n_tokens: int, ctx: int) -> tuple[str, _Side]:
        model = models[d.model]
        where = _kind_of(hosts, placed, d)
        if where is None:
            raise PlannerError(f"deployment {d.name} has no accelerator to run on")
        kind, host = where
        cap = _cap(host, kind)
        first = sp.predict(model, kind, _workload(d, model, 1, n_tokens, n_tokens, cap))
        full = sp.predict(model, kind, _workload(d, model, batch(d) if batch else d.max_batch, n_tokens, ctx, cap))
        return kind, _Side(first.prefill_ms, full.decode_step_ms, first.kv_bytes_per_token,
                           first.calibrated and full.calibrated, first.calibration_source)

    out: list[DeploymentForecast] = []
    for d in site.deployments:
        where = _kind_of(hosts, placed, d)
        if d.model not in models or where is None:
            continue
        kind = where[0]
        n = tokens(d)
        ctx = context(d, n)
        g: ServingGroup | None = groups[d.name][0] if d.name in groups else None
        try:
            if g is not None and g.prefill in deployments and g.decode in deployments:
                pre_d, dec_d = deployments[g.prefill], deployments[g.decode]
                n = tokens(pre_d)
                ctx = context(dec_d, n)
                _, pre = side(pre_d, n, n)
                _, dec = side(dec_d, n, ctx)
                link_gbs = LINK_GBS[g.kv_transfer.link][0]
                kv_ms = pre.kv_bytes_per_token * n / (link_gbs * 1e9) * 1e3
                ttft: float | None = pre.prefill_ms + kv_ms
                tpot: float | None = dec.decode_ms
                prefill_ms: float | None = pre.prefill_ms
                calibrated = pre.calibrated and dec.calibrated
                source = pre.source if pre.source == dec.source else f"prefill: {pre.source}; decode: {dec.source}"
                kv: float | None = kv_ms
            else:
                ctx = context(d, n)
                _, one = side(d, n, ctx)
                prefill_ms, kv, calibrated, source = one.prefill_ms, None, one.calibrated, one.source
                ttft = one.prefill_ms if d.role in ("prefill", "both") else None
                tpot = one.decode_ms if d.role in ("decode", "both") else None
        except PlannerError as exc:
            out.append(DeploymentForecast(d.name, g.name if g else None, d.role, kind, d.tensor_parallel,
                                          d.max_batch, n, ctx, None, None, None, None, False, "", exc.message))
            continue
        out.append(DeploymentForecast(d.name, g.name if g else None, d.role, kind, d.tensor_parallel, d.max_batch,
                                      n, ctx, prefill_ms, kv, ttft, tpot, calibrated, source, None))
    return out


def rack_peaks(sp: SitePredictor) -> list[RackPeak]:
    """Each rack's peak power by phase (the module docstring says how each device and CPU counts)."""
    site, catalog, spec = sp.site, sp.catalog, sp.spec
    placed = sp.placements()
    roles = {d.name: d.role for d in site.deployments}
    state_of: dict[tuple[str, int], str] = {}
    for p in placed.hosts:
        role = roles.get(p.deployment, "both")
        for index in p.devices:
            # a device claimed twice (SV-004 denies that) counts at the hungrier phase
            if state_of.get((p.host, index)) != "prefill":
                state_of[(p.host, index)] = "decode" if role == "decode" else "prefill"
    terms: dict[str, dict[tuple[str, str, float], int]] = {r.name: {} for r in site.racks}
    unknown = dict.fromkeys(terms, 0)
    phase = dict.fromkeys(terms, 0)
    tdp = dict.fromkeys(terms, 0)

    def add(rack: str, state: str, kind: str, watts: float) -> None:
        key = (state, kind, watts)
        terms[rack][key] = terms[rack].get(key, 0) + 1

    for h in site.hosts:
        if h.rack not in terms:
            continue
        cpu = catalog.cpus.get(h.cpu)
        if cpu is not None and cpu.tdp_w.value is not None:
            add(h.rack, "cpu", h.cpu, cpu.tdp_w.value)
        else:
            unknown[h.rack] += 1
        for index, kind in enumerate(sv.host_devices(h)):
            state = state_of.get((h.name, index), "idle")
            cap = _cap(h, kind)
            try:
                s = spec(kind)
                w = {"prefill": s.power_prefill_w, "decode": s.power_decode_w, "idle": s.power_idle_w}[state]
                phase[h.rack] += 1
            except PlannerError:
                acc = catalog.accelerators.get(kind)
                if acc is None or acc.tdp_w.value is None:
                    unknown[h.rack] += 1
                    continue
                w, state = acc.tdp_w.value, "tdp"
                tdp[h.rack] += 1
            add(h.rack, state, kind, min(w, cap) if cap is not None else w)
    out = []
    for r in site.racks:
        ts = [PowerTerm(state, kind, n, w) for (state, kind, w), n in sorted(terms[r.name].items())]
        out.append(RackPeak(r.name, sum(t.count * t.watts_each for t in ts), ts, phase[r.name], tdp[r.name],
                            unknown[r.name]))
    return out


@dataclass(frozen=True)
class RequestForecast:
    """The prediction for one request through a serving unit (a group, or a plain deployment), at batch 1."""

    unit: str
    prompt_tokens: int
    tokens_estimated: bool  # True: counted as UTF-8 bytes / 4 (no tokenizer here); False: a byte-level model
    front: DeploymentForecast  # the prefill side (or the plain deployment): its TTFT is the unit's
    decode: DeploymentForecast | None  # the decode side of a group
    simulated: bool  # the unit runs the demo runtime (family `demo`): measured times are the simulator's

    @property
    def ttft_ms(self) -> float | None:
        return self.front.ttft_ms

    @property
    def tpot_ms(self) -> float | None:
        return self.front.tpot_ms


def prompt_token_count(prompt: str, shape: ModelShape) -> tuple[int, bool]:
    """Tokens of ``prompt`` and whether that is an estimate: a byte-level vocabulary (<= 256) counts bytes;
    anything else is estimated at 4 UTF-8 bytes per token."""
    size = len(prompt.encode("utf-8"))
    if shape.vocab <= 256:
        return max(1, size), False
    return max(1, size // 4), True


def request_forecast(sp: SitePredictor, prompt: str, target: str | None = None) -> RequestForecast | None:
    """What the planner predicts for ``prompt`` sent to ``target`` (default: the first unit by name, as
    `sovkit serving request` picks); None when the unit's model has no config or its chip is unknown."""
    site = sp.site
    grouped = sv.group_of(site)
    units = {g.name: g.prefill for g in site.serving_groups} | {
        d.name: d.name for d in site.deployments if d.name not in grouped}
    if not units:
        return None
    unit = target if target is not None else sorted(units)[0]
    if unit not in units:
        return None
    deployments = {d.name: d for d in site.deployments}
    front_d = deployments.get(units[unit])
    model = next((m for m in site.models if front_d is not None and m.name == front_d.model), None)
    if front_d is None or model is None:
        return None
    try:
        n, estimated = prompt_token_count(prompt, sp.shape(model))
    except PlannerError:
        return None
    by_name = {f.deployment: f for f in forecast_deployments(sp, tokens=lambda d: n, batch=lambda d: 1,
                                                             context=lambda d, p: p)}
    front = by_name.get(front_d.name)
    if front is None or front.error is not None:
        return None
    group = next((g for g in site.serving_groups if g.name == unit), None)
    decode = by_name.get(group.decode) if group is not None else None
    families = {r.name: r.family for r in site.runtimes}
    members = [front_d] + ([deployments[group.decode]] if group is not None and group.decode in deployments else [])
    return RequestForecast(unit, n, estimated, front, decode, any(families.get(d.runtime) == "demo" for d in members))
