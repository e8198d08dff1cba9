"""Build the one policy-input document (docs/policy-input.md) from an inventory.

The document is the validated inventory in JSON, plus what the Rego needs but
cannot compute itself: catalog figures (TDP, accelerator memory) and rack
totals, each artifact signature's check result, stored file sizes, the
recorded state's installed versions (when given) and the evaluation date
(for waiver expiry). `sovkit policy input INV` prints exactly this.

Racks, hosts and placements come grouped by shape (v2): hosts the rules cannot
tell apart (same facts but name and rack) are one ``host_shapes[]`` entry
listing them, and likewise for racks and placements. A site is racks of identical hosts, so the
per-host rules run once per shape and the document shrinks; the pack expands a
shape's findings to each of its hosts, so the decision is the per-host one.
:func:`build_flat_input` keeps the v1 per-host form (tests compare decisions
on both).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from sovkit.catalog import Catalog, load_catalog
from sovkit.inventory import serving as sv
from sovkit.inventory.capacity import host_accelerator_memory_gb, rack_power
from sovkit.inventory.loader import LoadedInventory
from sovkit.inventory.models import (
    Artifact,
    ArtifactStore,
    Backup,
    BaseModelRef,
    DataStore,
    Deployment,
    Endpoint,
    Host,
    LogSink,
    ModelCard,
    ModelRegistry,
    Records,
    Residency,
    ServingGroup,
    Site,
    TelemetrySink,
    Waiver,
)
from sovkit.planner.forecast import SitePredictor, forecast_deployments, rack_peaks, site_predictor
from sovkit.signing.artifacts import Claim, verify_artifact_signature
from sovkit.state.models import State

INPUT_API_VERSION: Literal["sovkit.dev/policy-input/v2"] = "sovkit.dev/policy-input/v2"
FLAT_API_VERSION: Literal["sovkit.dev/policy-input/v1"] = "sovkit.dev/policy-input/v1"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignatureInfo(_Doc):
    """Outcome of checking one detached signature before policy runs."""

    path: str | None
    format: str
    signer: str | None
    checked: bool
    verified: bool
    keyid: str | None
    reason: str


class StoredArtifact(_Doc):
    path: str
    sha256: str
    size: int
    stored_size: int | None


class FirmwareInfo(_Doc):
    name: str
    vendor: str
    accelerator: str
    version: str
    image: StoredArtifact
    signature: SignatureInfo


class RuntimeInfo(_Doc):
    name: str
    version: str
    vendor: str | None
    package: str
    format: str
    artifacts: list[StoredArtifact]
    signature: SignatureInfo


class ModelInfo(_Doc):
    name: str
    version: str
    publisher: str
    license: str
    origin: str
    base_models: list[BaseModelRef]
    files: list[StoredArtifact]
    weights_bytes: int
    signature: SignatureInfo
    dtype: str
    parameters_b: float | None
    card: ModelCard | None


class AcceleratorInfo(_Doc):
    kind: str
    count: int
    firmware: str | None
    memory_gb: float | None
    tdp_w: float | None


class HostState(_Doc):
    firmware: dict[str, str]
    runtimes: dict[str, str]
    models: dict[str, str]


class PlacementFacts(_Doc):
    """One deployment on a host, joined with the facts capacity and downgrade rules need.

    Precomputed here because joins by name are quadratic in rego-cpp at 10,000 hosts.
    """

    deployment: str
    model: str
    runtime: str
    tensor_parallel: int
    accelerator_count: int
    accelerator_memory_gb: float | None
    # the memory of the tensor_parallel devices one replica spans: (accelerator_memory_gb / accelerator_count) x
    # tensor_parallel, null without devices or a memory figure; computed here because rego-cpp spends ~0.3 s per
    # arithmetic operation over 10,000 placements (CAP-003 compares it with weights_bytes)
    replica_memory_gb: float | None
    weights_bytes: int | None
    runtime_version: str | None
    recorded_runtime: str | None


class Placement(PlacementFacts):
    """v1 (flat) form: one per (deployment, host)."""

    host: str


class PlacementShape(PlacementFacts):
    """The placements of one deployment on hosts it cannot tell apart: the facts once, the hosts listed."""

    hosts: list[str]


class HostFacts(_Doc):
    """What the rules judge of a host, its name and rack aside."""

    jurisdiction: str
    arch: str
    cpu: str
    cpu_tdp_w: float | None
    connection: str
    accelerators: list[AcceleratorInfo]
    accelerator_count: int
    accelerator_memory_gb: float | None
    labels: dict[str, str]
    recorded: HostState | None


class HostInfo(HostFacts):
    """v1 (flat) form: one per host."""

    name: str
    rack: str


class RackHosts(_Doc):
    """The hosts of one shape in one rack."""

    name: str
    hosts: list[str]


class HostShape(HostFacts):
    """Hosts with identical facts (racks of one build): the facts once, then the hosts' names by rack."""

    racks: list[RackHosts]


class PowerTermInfo(_Doc):
    """``count`` devices of ``kind`` at ``watts_each`` in one state (prefill, decode, idle; tdp: no phase figure;
    cpu: a CPU at its TDP)."""

    state: str
    kind: str
    count: int
    watts_each: float


class RackFacts(_Doc):
    """A rack's power: ``draw_w`` sums catalog TDPs; ``peak_w`` is its peak by phase (CAP-001/002 judge it)."""

    power_budget_w: float
    hosts: int
    accelerators: int
    draw_w: float
    unknown_tdp: int
    peak_w: float
    peak_terms: list[PowerTermInfo]
    phase_devices: int
    tdp_devices: int


class RackInfo(RackFacts):
    """v1 (flat) form: one per rack."""

    name: str


class RackShape(RackFacts):
    """Racks with identical power figures (same budget, same hosts): the figures once, the racks' names."""

    racks: list[str]


class StateInfo(_Doc):
    serial: int
    lineage: str


class SiteInfo(_Doc):
    name: str
    operator: str
    jurisdiction: dict[str, str | None]
    location: str


class ServingPlacementFacts(_Doc):
    """One deployment on a host as it will be served: devices, family, memory per device."""

    deployment: str
    group: str | None
    model: str
    runtime_family: str | None
    tensor_parallel: int
    accelerator_vendors: list[str]
    device_memory_gb: float | None
    # device_memory_gb x 1e9 and weights + KV cache per device, summed here: rego-cpp spends ~30 us per
    # arithmetic operation and placement (SV-006 at 10,000 hosts); the rules only compare them
    device_memory_bytes: float | None
    weights_bytes_per_device: float | None
    kv_bytes_per_token: int | None
    kv_cache_bytes_per_device: float | None
    need_bytes_per_device: float | None
    max_model_len: int
    max_batch: int


class ServingPlacement(ServingPlacementFacts):
    """v1 (flat) form: one per (deployment, host)."""

    host: str


class ServingPlacementShape(ServingPlacementFacts):
    """The serving placements of one deployment on hosts it cannot tell apart, the hosts listed."""

    hosts: list[str]


class ServingSide(_Doc):
    """What must match across a pair (SV-002)."""

    deployment: str
    role: str
    model: str
    model_version: str | None
    runtime: str
    runtime_family: str | None
    kv_dtype: str | None


class ServingGroupInfo(_Doc):
    name: str
    prefill: ServingSide | None
    decode: ServingSide | None
    connector: str
    link: str
    kv_port: int
    router_host: str
    router_port: int


class ServingDeployment(_Doc):
    name: str
    role: str
    group: str | None
    side: str | None


class ServingConflict(_Doc):
    kind: str
    host: str
    resource: str
    message: str


class DraftInfo(_Doc):
    """A deployment's speculative-decoding draft model, joined with its provenance (SV-007)."""

    deployment: str
    draft_model: str
    method: str
    num_tokens: int
    found: bool
    version: str | None
    signature: SignatureInfo | None


class PredictionInfo(_Doc):
    """The planner's predicted latency for a deployment at its own shape, next to its targets (SV-008/009).

    A serving group's two deployments carry the group's numbers: TTFT is the prefill side's prefill of one
    ``prompt_tokens`` prompt plus the KV transfer, TPOT the decode side's step of ``max_batch`` sequences with
    ``context_tokens`` each (sovkit/planner/forecast.py). ``error`` says why there is no prediction.
    """

    deployment: str
    group: str | None
    role: str
    accelerator: str
    tensor_parallel: int
    max_batch: int
    prompt_tokens: int
    context_tokens: int
    prefill_ms: float | None
    kv_transfer_ms: float | None
    ttft_ms: float | None
    tpot_ms: float | None
    calibrated: bool
    calibration_source: str
    target_ttft_ms: float | None
    target_tpot_ms: float | None
    error: str | None


class FlatServingInfo(_Doc):
    """Serving joined and placed in Python (sovkit/inventory/serving.py): Rego only compares. v1 (flat) form."""

    deployments: list[ServingDeployment]
    groups: list[ServingGroupInfo]
    placements: list[ServingPlacement]
    conflicts: list[ServingConflict]
    drafts: list[DraftInfo]
    predictions: list[PredictionInfo]


class ServingInfo(_Doc):
    """Serving joined and placed in Python (sovkit/inventory/serving.py): Rego only compares."""

    deployments: list[ServingDeployment]
    groups: list[ServingGroupInfo]
    placement_shapes: list[ServingPlacementShape]
    conflicts: list[ServingConflict]
    drafts: list[DraftInfo]
    predictions: list[PredictionInfo]


class LabellingInfo(_Doc):
    """One deployment's generated-output labelling (GEN-001): whether its model is generative, and where its
    labelling is declared (deployment, serving_group, site) or null when nowhere."""

    deployment: str
    model: str
    generative: bool
    declared_on: Literal["deployment", "serving_group", "site"] | None


class _InputCommon(_Doc):
    """The sections v1 and v2 share: everything but how racks, hosts and placements are listed."""

    apiVersion: str  # each version narrows it to its own literal
    evaluated_on: str
    inventory_digest: str
    site: SiteInfo
    residency: Residency
    trust_roots: dict[str, list[str]]
    artifact_store: ArtifactStore
    firmware: list[FirmwareInfo]
    runtimes: list[RuntimeInfo]
    models: list[ModelInfo]
    deployments: list[Deployment]
    data_stores: list[DataStore]
    endpoints: list[Endpoint]
    telemetry: list[TelemetrySink]
    log_sinks: list[LogSink]
    backups: list[Backup]
    model_registries: list[ModelRegistry]
    records: Records
    output_labelling: list[LabellingInfo]
    waivers: list[Waiver]
    state: StateInfo | None


class PolicyInput(_InputCommon):
    """The policy input document (its JSON Schema is published in docs/policy-input.md)."""

    apiVersion: Literal["sovkit.dev/policy-input/v2"]
    rack_shapes: list[RackShape]
    host_shapes: list[HostShape]
    placement_shapes: list[PlacementShape]
    serving: ServingInfo


class FlatPolicyInput(_InputCommon):
    """The v1 per-host form of the input: what :func:`shape_input` groups (and the pack before v2 read)."""

    apiVersion: Literal["sovkit.dev/policy-input/v1"]
    racks: list[RackInfo]
    hosts: list[HostInfo]
    placements: list[Placement]
    serving: FlatServingInfo


class _Signatures:
    """Checks artifact signatures against the trust roots (a local store only; a registry store is checked at
    apply, after the pull)."""

    def __init__(self, inv: LoadedInventory) -> None:
        self.inv = inv
        self.local = inv.site.artifact_store.kind == "local"
        self.trust = inv.trust_roots()

    def check(self, signature: str | None, files: list[Artifact], section: str, signer: str | None,
              claim: Claim, fmt: str = "dsse") -> SignatureInfo:
        def info(checked: bool, verified: bool, keyid: str | None, reason: str) -> SignatureInfo:
            return SignatureInfo(path=signature, format=fmt, signer=signer, checked=checked, verified=verified,
                                 keyid=keyid, reason=reason)

        if signature is None:
            return info(False, False, None, "no signature declared")
        if signer is None:
            return info(True, False, None, "no signer declared (set the vendor)")
        key = self.trust.key(section, signer)
        if key is None:
            return info(True, False, None, f"no usable trusted key for {signer!r} in trust_roots.{section}")
        if not self.local:
            return info(False, False, key.keyid, "artifact store is an OCI registry; verified at apply time")
        if fmt != "dsse":
            return info(False, False, key.keyid, f"{fmt} signatures are verified at apply time")
        check = self.trust.judge(section, verify_artifact_signature(
            self.inv.artifact_root / signature, {a.path: a.sha256 for a in files}, key, signer, claim))
        return info(True, check.verified, check.keyid or key.keyid, check.reason)


def _stored(inv: LoadedInventory, art: Artifact) -> StoredArtifact:
    size = None
    if inv.site.artifact_store.kind == "local":
        f = inv.artifact_root / art.path
        size = f.stat().st_size if f.is_file() else None
    return StoredArtifact(path=art.path, sha256=art.sha256, size=art.size, stored_size=size)


def _host(host: Host, catalog: Catalog, site_location: str, recorded: HostState | None) -> HostInfo:
    cpu = catalog.cpus.get(host.cpu)
    accels = []
    for slot in host.accelerators:
        kind = catalog.accelerators.get(slot.kind)
        accels.append(AcceleratorInfo(kind=slot.kind, count=slot.count, firmware=slot.firmware,
                                      memory_gb=kind.memory_gb.value if kind else None,
                                      tdp_w=kind.tdp_w.value if kind else None))
    return HostInfo(
        name=host.name, rack=host.rack, jurisdiction=host.labels.get("jurisdiction", site_location),
        arch=host.arch, cpu=host.cpu, cpu_tdp_w=cpu.tdp_w.value if cpu else None, connection=host.connection,
        accelerators=accels, accelerator_count=sum(s.count for s in host.accelerators),
        accelerator_memory_gb=host_accelerator_memory_gb(host, catalog), labels=dict(host.labels),
        recorded=recorded,
    )


def _recorded(state: State | None) -> dict[str, HostState]:
    if state is None:
        return {}
    return {name: HostState(firmware={k: fw.version for k, fw in rec.firmware.items()},
                            runtimes={k: rt.version for k, rt in rec.runtimes.items()},
                            models={k: m.version for k, m in rec.models.items()})
            for name, rec in state.hosts.items()}


def _placements(hosts: list[HostInfo], models: list[ModelInfo], runtimes: list[RuntimeInfo],
                deployments: list[Deployment]) -> list[Placement]:
    by_host = {h.name: h for h in hosts}
    weights = {m.name: m.weights_bytes for m in models}
    versions = {r.name: r.version for r in runtimes}
    out = []
    for d in deployments:
        for name in d.hosts:
            h = by_host[name]
            out.append(Placement(
                deployment=d.name, host=name, model=d.model, runtime=d.runtime, tensor_parallel=d.tensor_parallel,
                accelerator_count=h.accelerator_count, accelerator_memory_gb=h.accelerator_memory_gb,
                replica_memory_gb=(h.accelerator_memory_gb / h.accelerator_count) * d.tensor_parallel
                if h.accelerator_count > 0 and h.accelerator_memory_gb is not None else None,
                weights_bytes=weights.get(d.model), runtime_version=versions.get(d.runtime),
                recorded_runtime=h.recorded.runtimes.get(d.runtime) if h.recorded else None,
            ))
    return out


def accelerator_vendor(kind: str, catalog: Catalog) -> str | None:
    """The vendor id of a catalog accelerator kind (what runtime families are matched against, SV-003)."""
    acc = catalog.accelerators.get(kind)
    return acc.vendor if acc is not None else None


def _predictions(sp: SitePredictor) -> list[PredictionInfo]:
    targets = {d.name: d.targets for d in sp.site.deployments}
    out = []
    for f in forecast_deployments(sp):
        t = targets.get(f.deployment)
        out.append(PredictionInfo(
            deployment=f.deployment, group=f.group, role=f.role, accelerator=f.accelerator,
            tensor_parallel=f.tensor_parallel, max_batch=f.max_batch, prompt_tokens=f.prompt_tokens,
            context_tokens=f.context_tokens,
            prefill_ms=f.prefill_ms, kv_transfer_ms=f.kv_transfer_ms, ttft_ms=f.ttft_ms, tpot_ms=f.tpot_ms,
            calibrated=f.calibrated, calibration_source=f.calibration_source,
            target_ttft_ms=t.ttft_ms if t else None, target_tpot_ms=t.tpot_ms if t else None, error=f.error))
    return out


def _serving(sp: SitePredictor, models: list[ModelInfo]) -> FlatServingInfo:
    site, catalog = sp.site, sp.catalog
    placed = sp.placements()
    by_model = {m.name: m for m in site.models}
    info = {m.name: m for m in models}
    families = {r.name: r.family for r in site.runtimes}
    deployments = {d.name: d for d in site.deployments}
    hosts = {h.name: h for h in site.hosts}
    groups = sv.group_of(site)

    def kv_dtype(d: Deployment) -> str | None:
        model = by_model.get(d.model)
        return sv.effective_kv_dtype(d, model) if model is not None else None

    def side(name: str) -> ServingSide | None:
        d = deployments.get(name)
        if d is None:
            return None
        model = by_model.get(d.model)
        return ServingSide(deployment=d.name, role=d.role, model=d.model,
                           model_version=model.version if model else None, runtime=d.runtime,
                           runtime_family=families.get(d.runtime), kv_dtype=kv_dtype(d))

    def group(g: ServingGroup) -> ServingGroupInfo:
        return ServingGroupInfo(name=g.name, prefill=side(g.prefill), decode=side(g.decode),
                                connector=g.kv_transfer.connector, link=g.kv_transfer.link,
                                kv_port=g.kv_transfer.port, router_host=g.router.host, router_port=g.router.port)

    out = []
    for p in placed.hosts:
        d = deployments[p.deployment]
        model = by_model.get(d.model)
        kinds = list(p.device_kinds) or sv.host_devices(hosts[p.host])
        dtype = kv_dtype(d)
        weights: float | None = None
        per_token: int | None = None
        if model is not None:
            if model.parameters_b is not None:
                weights = model.parameters_b * 1e9 * sv.WEIGHT_DTYPE_BYTES[model.dtype] / d.tensor_parallel
            else:
                weights = info[model.name].weights_bytes / d.tensor_parallel
            per_token = sv.kv_bytes_per_token(model, dtype) if dtype is not None else None
        kv_cache = per_token * d.max_model_len * d.max_batch / d.tensor_parallel if per_token is not None else None
        out.append(ServingPlacement(
            deployment=d.name, host=p.host, group=p.group, model=d.model, runtime_family=families.get(d.runtime),
            tensor_parallel=d.tensor_parallel,
            accelerator_vendors=sorted({v for k in kinds if (v := accelerator_vendor(k, catalog)) is not None}),
            device_memory_gb=p.device_memory_gb,
            device_memory_bytes=p.device_memory_gb * 1e9 if p.device_memory_gb is not None else None,
            weights_bytes_per_device=weights, kv_bytes_per_token=per_token, kv_cache_bytes_per_device=kv_cache,
            need_bytes_per_device=weights + kv_cache if weights is not None and kv_cache is not None else None,
            max_model_len=d.max_model_len, max_batch=d.max_batch,
        ))
    drafts = []
    for d in site.deployments:
        if d.speculative is None:
            continue
        draft = info.get(d.speculative.draft_model)
        drafts.append(DraftInfo(deployment=d.name, draft_model=d.speculative.draft_model,
                                method=d.speculative.method, num_tokens=d.speculative.num_tokens,
                                found=draft is not None, version=draft.version if draft else None,
                                signature=draft.signature if draft else None))
    return FlatServingInfo(
        deployments=[ServingDeployment(name=d.name, role=d.role, group=groups[d.name][0].name if d.name in groups
                                       else None, side=groups[d.name][1] if d.name in groups else None)
                     for d in site.deployments],
        groups=[group(g) for g in site.serving_groups],
        placements=out,
        conflicts=[ServingConflict(kind=c.kind, host=c.host, resource=c.resource, message=c.message)
                   for c in placed.conflicts],
        drafts=drafts,
        predictions=_predictions(sp),
    )


def _labelling(site: Site) -> list[LabellingInfo]:
    """Where each deployment's labelling comes from: its own, else its serving group's, else the site's."""
    generative = {m.name: m.generative for m in site.models}
    groups = sv.group_of(site)
    out = []
    for d in site.deployments:
        group = groups[d.name][0] if d.name in groups else None
        declared: Literal["deployment", "serving_group", "site"] | None = None
        if d.output_labelling is not None:
            declared = "deployment"
        elif group is not None and group.output_labelling is not None:
            declared = "serving_group"
        elif site.records.generated_output_labelling is not None:
            declared = "site"
        out.append(LabellingInfo(deployment=d.name, model=d.model, generative=generative.get(d.model, True),
                                 declared_on=declared))
    return out


def build_input(inv: LoadedInventory, state: State | None = None, today: date | None = None) -> dict[str, Any]:
    """The policy input for ``inv`` (and the recorded ``state``, when there is one), hosts grouped by shape."""
    return shape_input(build_flat_input(inv, state, today))


def _group(items: list[dict[str, Any]], own: str, members: str) -> list[dict[str, Any]]:
    """Items equal but for key ``own`` as one entry: the other keys, then the ``own`` values listed under
    ``members``; entries and members in first-seen order."""
    groups: dict[str, dict[str, Any]] = {}
    for item in items:
        facts = {k: v for k, v in item.items() if k != own}
        key = json.dumps(facts, sort_keys=True)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {**facts, members: []}
        group[members].append(item[own])
    return list(groups.values())


def _host_shapes(hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hosts equal but for name and rack as one entry, their names by rack (``racks[]`` {name, hosts})."""
    groups: dict[str, tuple[dict[str, Any], dict[str, list[str]]]] = {}
    for h in hosts:
        facts = {k: v for k, v in h.items() if k not in ("name", "rack")}
        key = json.dumps(facts, sort_keys=True)
        if key not in groups:
            groups[key] = (facts, {})
        groups[key][1].setdefault(h["rack"], []).append(h["name"])
    return [{**facts, "racks": [{"name": rack, "hosts": names} for rack, names in by_rack.items()]}
            for facts, by_rack in groups.values()]


def shape_input(flat: dict[str, Any]) -> dict[str, Any]:
    """The v2 document from the v1 per-host one: ``racks``, ``hosts``, ``placements`` and ``serving.placements``
    grouped by shape (``rack_shapes``, ``host_shapes``, ``placement_shapes``, ``serving.placement_shapes``)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key == "apiVersion":
            out[key] = INPUT_API_VERSION
        elif key == "racks":
            out["rack_shapes"] = _group(value, "name", "racks")
        elif key == "hosts":
            out["host_shapes"] = _host_shapes(value)
        elif key == "placements":
            out["placement_shapes"] = _group(value, "host", "hosts")
        elif key == "serving":
            out[key] = {("placement_shapes" if k == "placements" else k):
                        (_group(v, "host", "hosts") if k == "placements" else v)
                        for k, v in value.items()}
        else:
            out[key] = value
    return out


def build_flat_input(inv: LoadedInventory, state: State | None = None, today: date | None = None
                     ) -> dict[str, Any]:
    """The v1 per-host input document (one entry per host and per placement); :func:`build_input` groups it."""
    site = inv.site
    catalog = load_catalog()
    sigs = _Signatures(inv)
    location = site.jurisdiction.region or site.jurisdiction.country

    firmware = [FirmwareInfo(name=fw.name, vendor=fw.vendor, accelerator=fw.accelerator, version=fw.version,
                             image=_stored(inv, fw.image),
                             signature=sigs.check(fw.signature, [fw.image], "vendors", fw.vendor,
                                                       Claim("firmware", fw.name, fw.version)))
                for fw in site.firmware]
    runtimes = [RuntimeInfo(name=rt.name, version=rt.version, vendor=rt.vendor, package=rt.package, format=rt.format,
                            artifacts=[_stored(inv, a) for a in rt.artifacts],
                            signature=sigs.check(rt.signature, list(rt.artifacts), "vendors", rt.vendor,
                                                      Claim("runtime", rt.name, rt.version)))
                for rt in site.runtimes]
    models = [ModelInfo(name=m.name, version=m.version, publisher=m.publisher, license=m.license, origin=m.origin,
                        base_models=list(m.base_models), files=[_stored(inv, a) for a in m.files],
                        weights_bytes=sum(a.size for a in m.files),
                        signature=sigs.check(m.signature, list(m.files), "publishers", m.publisher,
                                             Claim("model", m.name, m.version), m.signature_format),
                        dtype=m.dtype, parameters_b=m.parameters_b, card=m.card)
              for m in site.models]
    sp = SitePredictor(site, inv.root, catalog, site_predictor())
    peaks = {p.rack: p for p in rack_peaks(sp)}
    racks = [RackInfo(name=r.rack, power_budget_w=r.budget_w, hosts=r.hosts, accelerators=r.accelerators,
                      draw_w=r.draw.watts, unknown_tdp=r.draw.unknown, peak_w=peaks[r.rack].peak_w,
                      peak_terms=[PowerTermInfo(state=t.state, kind=t.kind, count=t.count, watts_each=t.watts_each)
                                  for t in peaks[r.rack].terms],
                      phase_devices=peaks[r.rack].phase_devices, tdp_devices=peaks[r.rack].tdp_devices)
             for r in rack_power(site, catalog)]
    recorded = _recorded(state)
    hosts = [_host(h, catalog, location, recorded.get(h.name)) for h in site.hosts]
    doc = FlatPolicyInput(
        apiVersion=FLAT_API_VERSION,
        evaluated_on=(today or datetime.now(UTC).date()).isoformat(),
        inventory_digest=inv.digest,
        site=SiteInfo(name=site.metadata.name, operator=site.metadata.operator,
                      jurisdiction={"country": site.jurisdiction.country, "region": site.jurisdiction.region},
                      location=location),
        residency=site.residency,
        trust_roots={s: [k.name for k in getattr(site.trust_roots, s)] for s in ("publishers", "vendors")},
        artifact_store=site.artifact_store,
        racks=racks,
        hosts=hosts,
        firmware=firmware, runtimes=runtimes, models=models,
        deployments=list(site.deployments), data_stores=list(site.data_stores), endpoints=list(site.endpoints),
        telemetry=list(site.telemetry), log_sinks=list(site.log_sinks), backups=list(site.backups),
        model_registries=list(site.model_registries), records=site.records, output_labelling=_labelling(site),
        waivers=list(site.waivers),
        placements=_placements(hosts, models, runtimes, list(site.deployments)),
        serving=_serving(sp, models),
        state=StateInfo(serial=state.serial, lineage=state.lineage) if state is not None and state.hosts else None,
    )
    return doc.model_dump(mode="json")


def input_schema() -> dict[str, Any]:
    """JSON Schema of the policy input document."""
    schema = PolicyInput.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sovkit.dev/schemas/policy-input-v1.json"
    schema["title"] = "sovkit policy input (sovkit.dev/policy-input/v1)"
    return schema


def input_from_path(path: Path) -> dict[str, Any]:
    from sovkit.inventory.loader import load_inventory

    return build_input(load_inventory(path))
