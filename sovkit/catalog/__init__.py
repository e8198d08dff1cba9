"""The hardware catalog shipped as data: accelerators, CPUs, vendor tool profiles, runtime profiles.

Every figure carries its source; unknown figures are ``None`` with source
``unknown`` so no capacity check can silently rely on a guess.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Final, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.errors import CatalogError

_HERE = Path(__file__).resolve().parent
_T = TypeVar("_T", bound=BaseModel)


class Figure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float | None
    source: str


#: a source label as in shared/reference/serving-and-hardware.md: [V] vendor, [S] secondary, [R] unconfirmed
Source = Annotated[str, Field(pattern=r"^\[(V|S|R)\] \S.*$")]


class PciId(BaseModel):
    """The PCI vendor:device id the card enumerates as (discovery maps it to the catalog kind)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    vendor: Annotated[str, Field(pattern=r"^[0-9a-f]{4}$")]
    device: Annotated[str, Field(pattern=r"^[0-9a-f]{4}$")]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ()+._-]{0,63}$")]
    source: Annotated[str, Field(pattern=r"^(V|S|R)( .*)?$")]


class AcceleratorKind(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    vendor: str
    name: str
    profile: str
    pci: list[PciId] = Field(min_length=1)
    #: the chip names the vendor's own tool prints for this kind (the device parser maps them to ``id``)
    chip_names: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$")]] = Field(min_length=1)
    chip_names_source: Source
    bf16_tflops: Figure
    int8_tops: Figure
    fp8_tflops: Figure
    memory_gb: Figure
    bandwidth_gbs: Figure
    tdp_w: Figure
    #: what the serving planner reads besides: per-device all-reduce bandwidth (per direction) and phase power
    interconnect_gbs: Figure
    power_idle_w: Figure
    power_prefill_w: Figure
    power_decode_w: Figure


class CpuKind(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    vendor: str
    name: str
    arch: Literal["aarch64", "x86_64"]
    cores: Figure
    memory_gb: Figure
    bandwidth_gbs: Figure
    tdp_w: Figure


#: every placeholder a runtime profile may use; launch.py substitutes these as plain strings
PLACEHOLDERS: Final = frozenset({
    "python", "runtime_prefix", "runtime_bin", "model_path", "served_model_name", "bind", "port", "tp",
    "max_model_len", "max_batch", "devices_csv", "npu_devices",
    "kv_role", "kv_rank", "kv_connector", "kv_peer_host", "kv_port", "kv_transfer_config", "pd_mode",
    "speculative_config", "draft_model_path", "spec_tokens", "spec_method",
})
#: placeholders that only have a value for a deployment in a serving group (prefill or decode)
PD_PLACEHOLDERS: Final = frozenset({"kv_role", "kv_rank", "kv_connector", "kv_peer_host", "kv_port",
                                    "kv_transfer_config", "pd_mode"})
#: placeholders that only have a value for a speculative deployment
SPEC_PLACEHOLDERS: Final = frozenset({"speculative_config", "draft_model_path", "spec_tokens", "spec_method"})
#: ``{name}`` in a profile string (any word, so a misspelt name is caught rather than passed through)
PLACEHOLDER_RE: Final = re.compile(r"\{(\w*)\}")

_ENV_NAME = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
_ARG = Annotated[str, Field(min_length=1)]


class _R(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgvPart(_R):
    """Consecutive argv words and the source that says the runtime takes them."""

    args: list[_ARG] = Field(min_length=1)
    source: Source


class EnvVar(_R):
    name: _ENV_NAME
    value: str
    source: Source


class Endpoint(_R):
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]*$")]
    source: Source


class Endpoints(_R):
    readiness: Endpoint
    models: Endpoint
    completions: Endpoint
    metrics: Endpoint


class TensorParallel(_R):
    """A runtime whose own tensor-parallel setting is capped (vllm-rbln: 1) and takes the device count elsewhere."""

    max: int | None = Field(default=None, ge=1)
    devices_env: _ENV_NAME | None = None
    source: Source


class Disaggregation(_R):
    """Whether and how the runtime serves prefill and decode apart; roles map prefill/decode to its own words."""

    supported: bool
    connectors: list[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]]
    roles: dict[Literal["prefill", "decode"], Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]]
    args: list[ArgvPart]
    prefill_args: list[ArgvPart] = []
    decode_args: list[ArgvPart] = []
    env: list[EnvVar] = []
    router: Literal["sovkit", "sglang_router", "none"]
    note: str | None = None
    source: Source


class Speculative(_R):
    supported: bool
    methods: dict[Literal["draft_model", "eagle", "eagle3", "ngram", "mtp"],
                  Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]]
    args: list[ArgvPart]
    source: Source


class RuntimeProfile(_R):
    """One runtime family: how its server is launched in its own format, what it runs on, what it serves."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    name: str
    accelerators: list[str] = Field(min_length=1)
    accelerators_source: Source
    launch: list[ArgvPart] = Field(min_length=1)
    env: list[EnvVar]
    tensor_parallel: TensorParallel | None = None
    endpoints: Endpoints
    disaggregation: Disaggregation
    speculative: Speculative

    def strings(self) -> Iterator[tuple[str, str]]:
        """Every string that is substituted at launch, with where it is (for load-time checks)."""
        for where, parts in (("launch", self.launch), ("disaggregation.args", self.disaggregation.args),
                             ("disaggregation.prefill_args", self.disaggregation.prefill_args),
                             ("disaggregation.decode_args", self.disaggregation.decode_args),
                             ("speculative.args", self.speculative.args)):
            for i, part in enumerate(parts):
                for arg in part.args:
                    yield f"{where}[{i}]", arg
        for where, env in (("env", self.env), ("disaggregation.env", self.disaggregation.env)):
            for var in env:
                yield f"{where}.{var.name}", var.value


#: placeholders a firmware step may use; the firmware role replaces them by plain values (never templated)
STEP_PLACEHOLDERS: Final = frozenset({"image", "bdf", "index", "bmc_address", "bmc_user", "bmc_password"})
#: placeholders that name one device: only in ``per: device`` steps (and the power cap)
DEVICE_PLACEHOLDERS: Final = frozenset({"bdf", "index"})
POWER_PLACEHOLDERS: Final = frozenset({"watts", "bdf", "index"})
#: the device-list parsers of templates/ansible/helpers/npu_devices.py
QUERY_FORMATS: Final = ("rbln-smi", "furiosa-smi", "nvidia-smi-csv")


class Command(_R):
    """One command of a vendor tool, with the source that says the tool takes it."""

    argv: list[_ARG] = Field(min_length=1)
    source: Source


class Query(_R):
    """The command(s) that list devices and their firmware, and the parser for the tool's own output."""

    format: Literal["rbln-smi", "furiosa-smi", "nvidia-smi-csv"]
    commands: list[Command] = Field(min_length=1)


class Step(_R):
    """One step of a firmware update: a command (once, or per device by PCI bus id) or a reboot of the host."""

    kind: Literal["command", "reboot"]
    per: Literal["once", "device"]
    argv: list[_ARG]
    source: Source


class FirmwareUpdate(_R):
    pre: list[Step]
    update: list[Step] = Field(min_length=1)
    post: list[Step]

    def steps(self) -> Iterator[tuple[str, Step]]:
        for phase in ("pre", "update", "post"):
            for i, step in enumerate(getattr(self, phase)):
                yield f"firmware_update.{phase}[{i}]", step


class Named(_R):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]
    source: Source


class PciVendor(_R):
    id: Annotated[str, Field(pattern=r"^[0-9a-f]{4}$")]
    source: Source


class VendorProfile(_R):
    """One vendor's procedure as its documentation gives it: query, firmware update, power cap, diagnostic."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    vendor: str
    tool: str
    source: Source
    kernel_module: Named
    pci_vendor: PciVendor
    query: Query
    firmware_update: FirmwareUpdate
    power_cap: Command | None
    diagnostic: Command


def _check_profile(p: VendorProfile) -> None:
    """Only known placeholders, each where it has a value; a reboot step has no argv; no placeholder in queries."""
    def bad(message: str) -> CatalogError:
        return CatalogError(f"vendor profile {p.id}: {message}", "reinstall sovkit")

    for where, step in p.firmware_update.steps():
        if step.kind == "reboot" and (step.argv or step.per != "once"):
            raise bad(f"{where}: a reboot step has no argv and runs once")
        if step.kind == "command" and not step.argv:
            raise bad(f"{where}: a command step needs argv")
        for arg in step.argv:
            for name in PLACEHOLDER_RE.findall(arg):
                if name not in STEP_PLACEHOLDERS:
                    raise bad(f"{where} uses unknown placeholder {{{name}}} "
                              f"(known: {', '.join('{' + n + '}' for n in sorted(STEP_PLACEHOLDERS))})")
                if name in DEVICE_PLACEHOLDERS and step.per != "device":
                    raise bad(f"{where} uses {{{name}}}, which has a value only in a per: device step")
    fixed = [("query", c) for c in p.query.commands] + [("diagnostic", p.diagnostic)]
    for where, cmd in fixed:
        if any(PLACEHOLDER_RE.search(a) for a in cmd.argv):
            raise bad(f"{where} takes no placeholders")
    if p.power_cap is not None:
        for arg in p.power_cap.argv:
            for name in PLACEHOLDER_RE.findall(arg):
                if name not in POWER_PLACEHOLDERS:
                    raise bad(f"power_cap uses unknown placeholder {{{name}}}")


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerators: dict[str, AcceleratorKind]
    cpus: dict[str, CpuKind]
    profiles: dict[str, VendorProfile]
    runtimes: dict[str, RuntimeProfile]

    def chip_kinds(self, profile: str) -> dict[str, str]:
        """Chip name as the vendor tool prints it -> catalog accelerator id, for one vendor profile."""
        return {chip: a.id for a in self.accelerators.values() if a.profile == profile for chip in a.chip_names}

    def pci_kinds(self) -> dict[tuple[str, str], tuple[str, PciId]]:
        """(PCI vendor, device) -> (catalog accelerator id, the id's entry): what discovery maps a card to."""
        return {(ref.vendor, ref.device): (a.id, ref) for a in self.accelerators.values() for ref in a.pci}

    def accelerator_vendors(self) -> dict[str, str]:
        """PCI vendor id -> vendor name, for the vendors sovkit has a procedure for."""
        return {p.pci_vendor.id: p.vendor for p in self.profiles.values()}

    def suggest(self, kind: Literal["accelerators", "cpus"], unknown: str) -> str:
        """A "did you mean" hint for an unknown catalog id."""
        ids = list(getattr(self, kind))
        close = difflib.get_close_matches(unknown, ids, n=1, cutoff=0.5)
        if close:
            return f"did you mean {close[0]!r}?"
        return f"known {kind}: {', '.join(sorted(ids))}"


def _read(directory: Path, name: str) -> list[dict[str, object]]:
    try:
        data = yaml.safe_load((directory / name).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"catalog file {name} unreadable: {exc}", "reinstall sovkit") from exc
    if not isinstance(data, list):
        raise CatalogError(f"catalog file {name} is not a list", "reinstall sovkit")
    return data


def _models(directory: Path, name: str, model: type[_T]) -> list[_T]:
    try:
        return [model.model_validate(d) for d in _read(directory, name)]
    except ValidationError as exc:
        raise CatalogError(f"catalog file {name} is malformed: {exc}", "reinstall sovkit") from exc


@cache
def load_catalog() -> Catalog:
    """The shipped hardware catalog (accelerators, host models, runtime profiles), read once per process."""
    return read_catalog(_HERE)


def read_catalog(directory: Path) -> Catalog:
    """The catalog in ``directory`` (the shipped one, or a copy under test), checked; a bad one is a CatalogError."""
    accels = _models(directory, "accelerators.yaml", AcceleratorKind)
    cpus = _models(directory, "cpus.yaml", CpuKind)
    profiles = _models(directory, "profiles.yaml", VendorProfile)
    runtimes = _models(directory, "runtimes.yaml", RuntimeProfile)
    catalog = Catalog(
        accelerators={a.id: a for a in accels},
        cpus={c.id: c for c in cpus},
        profiles={p.id: p for p in profiles},
        runtimes={r.id: r for r in runtimes},
    )
    for p in profiles:
        _check_profile(p)
    for a in accels:
        if a.profile not in catalog.profiles:
            raise CatalogError(f"accelerator {a.id} names unknown profile {a.profile}", "reinstall sovkit")
    chips: dict[tuple[str, str], str] = {}
    for a in accels:
        for chip in a.chip_names:
            other = chips.setdefault((a.profile, chip), a.id)
            if other != a.id:
                raise CatalogError(f"chip name {chip!r} maps to both {other} and {a.id}", "reinstall sovkit")
    pci: dict[tuple[str, str], str] = {}
    for a in catalog.accelerators.values():
        for ref in a.pci:
            other = pci.setdefault((ref.vendor, ref.device), a.id)
            if other != a.id:
                raise CatalogError(f"PCI id {ref.vendor}:{ref.device} maps to both {other} and {a.id}",
                                   "reinstall sovkit")
    if len(catalog.runtimes) != len(runtimes):
        raise CatalogError("runtimes.yaml lists a runtime profile id twice", "reinstall sovkit")
    vendors = {a.vendor for a in accels}
    for r in runtimes:
        _check_runtime(r, vendors)
    return catalog


def _check_runtime(r: RuntimeProfile, vendors: set[str]) -> None:
    """Only known placeholders, each where it has a value; known vendors; a consistent P/D and TP section."""
    def bad(message: str) -> CatalogError:
        return CatalogError(f"runtime profile {r.id}: {message}", "reinstall sovkit")

    for vendor in r.accelerators:
        if vendor not in vendors:
            raise bad(f"accelerators names unknown vendor {vendor!r} (known: {', '.join(sorted(vendors))})")
    for where, text in r.strings():
        for name in PLACEHOLDER_RE.findall(text):
            if name not in PLACEHOLDERS:
                raise bad(f"{where} uses unknown placeholder {{{name}}} "
                          f"(known: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})")
            if name in PD_PLACEHOLDERS and not where.startswith("disaggregation"):
                raise bad(f"{where} uses {{{name}}}, which has a value only under disaggregation")
            if name in SPEC_PLACEHOLDERS and not where.startswith("speculative"):
                raise bad(f"{where} uses {{{name}}}, which has a value only under speculative")
    d, s = r.disaggregation, r.speculative
    if d.supported and not (d.connectors and set(d.roles) == {"prefill", "decode"} and d.router != "none"):
        raise bad("disaggregation.supported needs connectors, both roles and a router")
    if not d.supported and (d.connectors or d.roles or d.args or d.prefill_args or d.decode_args or d.env):
        raise bad("disaggregation is not supported but lists connectors, roles or fragments")
    if s.supported != bool(s.methods and s.args):
        raise bad("speculative.supported must match having methods and args")
    tp = r.tensor_parallel
    if tp is not None and tp.max is not None:
        if any("{tp}" in arg for part in r.launch for arg in part.args):
            raise bad(f"tensor_parallel.max is {tp.max}: the device count cannot go into argv as {{tp}}")
        if tp.devices_env is None or not any(v.name == tp.devices_env and v.value == "{tp}" for v in r.env):
            raise bad("tensor_parallel.max needs devices_env set to {tp} in env")
