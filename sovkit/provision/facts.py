"""Host facts: what a host's hardware really is (CPU part, accelerators by PCI id, memory, OS).

The host runs templates/ansible/helpers/host_facts.py, which prints raw strings read from ``{root}/proc/cpuinfo``,
``{root}/proc/meminfo``, ``{root}/etc/os-release`` and ``{root}/sys/bus/pci/devices/*``. Everything a host
reports is untrusted: :func:`parse_facts` validates it against strict patterns (pydantic, ``extra="forbid"``)
and refuses the whole report on the first value that does not fit, so a ``{{ lookup(...) }}`` in a cpuinfo line
or an oversized file never becomes a fact. The tables that map CPU parts and PCI ids to catalog ids carry the
source label of shared/reference/serving-and-hardware.md (A4) for each row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from sovkit import identifiers
from sovkit.catalog import Catalog, load_catalog
from sovkit.errors import HardwareMismatch
from sovkit.inventory.models import Host
from sovkit.provision.executor import ExecEvent, Executor, HostOutcome, HostTarget

__all__ = [
    "CPU_PARTS",
    "CpuPart",
    "FactsError",
    "HostFacts",
    "PciId",
    "RawFacts",
    "check_hardware",
    "hardware_mismatches",
    "parse_facts",
    "pci_ids",
    "read_facts",
]

#: the longest helper output accepted (bytes of JSON); the helper bounds its own output far below this
MAX_REPORT = 512 * 1024


@dataclass(frozen=True)
class CpuPart:
    """One MIDR (implementer, part) pair: its name and the catalog CPU id it means (None: no catalog entry)."""

    name: str
    cpu: str | None
    source: str


#: (CPU implementer, CPU part) as /proc/cpuinfo prints them -> what it is. Source labels from
#: shared/reference/serving-and-hardware.md A4 ([V] linux arch/arm64/include/asm/cputype.h).
CPU_PARTS: Mapping[tuple[str, str], CpuPart] = {
    ("0x41", "0xd4f"): CpuPart("Arm Neoverse-V2", "arm-neoverse-v2", "V"),
    ("0x41", "0xd84"): CpuPart("Arm Neoverse-V3", "arm-neoverse-v3-agi", "V"),
    # N1 is not in the reference table; the part number and "Ampere Altra = Neoverse N1" are unconfirmed here
    ("0x41", "0xd0c"): CpuPart("Arm Neoverse-N1", "ampere-altra", "R"),
    ("0x41", "0xd40"): CpuPart("Arm Neoverse-V1", None, "V"),
    ("0x41", "0xd49"): CpuPart("Arm Neoverse-N2", None, "V"),
    ("0x41", "0xd83"): CpuPart("Arm Neoverse-V3AE", None, "V"),
    ("0x41", "0xd8e"): CpuPart("Arm Neoverse-N3", None, "V"),
}

#: the catalog CPU id of any x86-64 host (the catalog has no finer x86 kinds)
X86_CPU = "generic-x86_64"


@dataclass(frozen=True)
class PciId:
    """A PCI vendor:device id that is an accelerator, the catalog kind it maps to, and the fact's label."""

    kind: str
    chip: str
    source: str


def pci_ids(catalog: Catalog | None = None) -> dict[tuple[str, str], PciId]:
    """PCI (vendor, device) -> what the card is: the catalog's `pci` entries (sovkit/catalog/accelerators.yaml:
    Rebellions physical-function ids from pci.ids [S], a VF is the id + 1 and no card; NVIDIA ids [R])."""
    catalog = catalog or load_catalog()
    return {key: PciId(kind, ref.name, ref.source[0]) for key, (kind, ref) in catalog.pci_kinds().items()}


class FactsError(ValueError):
    """A host's facts report was refused (malformed, hostile or incomplete); the message never quotes it whole."""


# --- the helper's raw report, strictly ---------------------------------------------------------------------------

#: an Arm core's "CPU implementer:CPU part" as cpuinfo prints them (MIDR fields)
ArmPart = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{2}:0x[0-9a-fA-F]{3}$")]
Hex4 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{4}$")]
Hex6 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{6}$")]
#: cpuinfo's vendor_id (GenuineIntel, AuthenticAMD, ...)
VendorId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ]{1,32}$")]
#: a free-text name (cpuinfo's model name, os-release PRETTY_NAME): no braces, quotes, '$', ';', '|', '&', '%'
Text = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ()@.,_/+:*#-]{1,128}$")]
Bdf = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")]
OsId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9._-]{1,64}$")]
OsVersion = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,64}$")]
HelperError = Annotated[str, StringConstraints(pattern=r"^[a-z/_-]{1,32}: [A-Za-z ]{1,40}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RawCpuinfo(_Strict):
    parts: Annotated[list[ArmPart], Field(max_length=32)]
    vendor_id: Annotated[list[VendorId], Field(max_length=32)]
    model_name: Annotated[list[Text], Field(max_length=32)]
    processors: Annotated[int, Field(ge=0, le=65536)]


class RawOs(_Strict):
    id: OsId | None = None
    version_id: OsVersion | None = None
    pretty_name: Text | None = None


class RawPci(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    bdf: Bdf
    vendor: Hex4 | None
    device: Hex4 | None
    class_: Hex6 | None = Field(alias="class")


class RawFacts(_Strict):
    """host_facts.py's output as it must look; anything else is refused."""

    cpuinfo: RawCpuinfo | None
    memtotal: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,15} kB$")] | None
    os: RawOs | None
    pci: Annotated[list[RawPci], Field(max_length=512)] | None
    machine: Literal["aarch64", "arm64", "x86_64", "amd64"] | None
    errors: Annotated[list[HelperError], Field(max_length=8)]


# --- what sovkit makes of it ---------------------------------------------------------------------------------------


class Card(_Strict):
    """One accelerator card: a PCI slot (domain:bus:device) with the function(s) of one mapped id."""

    kind: str
    slot: str
    functions: list[str]
    pci: str
    source: str


class HostFacts(_Strict):
    """A host's hardware as sovkit understands it. ``None`` means "not read" (file absent), never a guess."""

    arch: Literal["aarch64", "x86_64"] | None
    cpu: str | None = Field(description="The catalog CPU id, or None when the part is not in sovkit's table.")
    cpu_name: str | None
    cpu_parts: list[str] = Field(description="implementer:part pairs (Arm) or vendor_id (x86) as read.")
    cores: int | None
    memory_kb: int | None
    os_id: str | None
    os_version: str | None
    os_name: str | None
    pci_read: bool = Field(description="Whether the PCI device list was read at all.")
    cards: list[Card]
    other_devices: list[str] = Field(description="Devices of accelerator vendors that map to no catalog kind.")

    @property
    def cpuinfo_read(self) -> bool:
        return bool(self.cpu_parts)

    def accelerator_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for card in self.cards:
            counts[card.kind] = counts.get(card.kind, 0) + 1
        return counts


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "report"
    return f"{where}: {err['msg']}"


def _raw(report: object) -> RawFacts:
    if isinstance(report, str):
        if len(report) > MAX_REPORT:
            raise FactsError(f"the facts report is {len(report)} bytes, more than {MAX_REPORT}")
        try:
            report = json.loads(report)
        except ValueError:
            raise FactsError(f"the facts report is not JSON: {identifiers.describe(report, 60)}") from None
    elif len(json.dumps(report, default=str)) > MAX_REPORT:
        raise FactsError(f"the facts report is more than {MAX_REPORT} bytes")
    try:
        return RawFacts.model_validate(report)
    except ValidationError as exc:
        raise FactsError(f"the facts report was refused ({_first_problem(exc)})") from None


def _cpu(raw: RawCpuinfo) -> tuple[Literal["aarch64", "x86_64"] | None, str | None, str | None, list[str]]:
    """(arch, catalog cpu id, name, parts) from cpuinfo: Arm cores print implementer/part, x86 ones vendor_id.
    A catalog id only when every core is the same known part (a mix of parts is no catalog kind)."""
    if raw.parts:
        parts = sorted({p.lower() for p in raw.parts})
        known = [CPU_PARTS.get((i, p)) for i, p in (x.split(":") for x in parts)]
        name = ", ".join(k.name for k in known if k is not None) or None
        cpu = known[0].cpu if len(known) == 1 and known[0] is not None else None
        return "aarch64", cpu, name, parts
    if raw.vendor_id:
        return "x86_64", X86_CPU, raw.model_name[0] if len(raw.model_name) == 1 else None, list(raw.vendor_id)
    return None, None, None, []


def _slot(bdf: str) -> str:
    return bdf.lower().rsplit(".", 1)[0]


def parse_facts(report: object) -> HostFacts:
    """Validate the helper's report (str of JSON, or the object Ansible already decoded) into HostFacts.

    Raises FactsError naming the first field that failed; nothing from a refused report is kept."""
    raw = _raw(report)
    if raw.errors:
        raise FactsError(f"the host could not read its facts ({'; '.join(raw.errors)})")
    arch, cpu, cpu_name, parts = _cpu(raw.cpuinfo) if raw.cpuinfo is not None else (None, None, None, [])
    if arch is None and raw.machine is not None:
        arch = "aarch64" if raw.machine in ("aarch64", "arm64") else "x86_64"
    elif arch is not None and raw.machine is not None and \
            arch != ("aarch64" if raw.machine in ("aarch64", "arm64") else "x86_64"):
        raise FactsError(f"cpuinfo describes an {arch} CPU but the kernel reports machine {raw.machine}")
    by_slot: dict[tuple[str, str], list[str]] = {}
    mapped: dict[tuple[str, str], PciId] = {}
    other: list[str] = []
    catalog = load_catalog()
    known, vendors = pci_ids(catalog), catalog.accelerator_vendors()
    for fn in raw.pci or []:
        if fn.vendor is None or fn.device is None:
            continue
        vendor, device = fn.vendor[2:].lower(), fn.device[2:].lower()
        hit = known.get((vendor, device))
        if hit is None:
            cls = (fn.class_ or "").lower()
            if vendor in vendors and (not cls or cls.startswith(("0x12", "0x03"))):  # an accelerator we can't name
                other.append(f"{vendors[vendor]} {vendor}:{device} at {fn.bdf.lower()}")
            continue
        key = (_slot(fn.bdf), f"{vendor}:{device}")
        by_slot.setdefault(key, []).append(fn.bdf.lower())
        mapped[key] = hit
    cards = [Card(kind=mapped[k].kind, slot=k[0], functions=sorted(fns), pci=k[1], source=mapped[k].source)
             for k, fns in sorted(by_slot.items())]
    os_ = raw.os or RawOs()
    return HostFacts(
        arch=arch, cpu=cpu, cpu_name=cpu_name, cpu_parts=parts,
        cores=raw.cpuinfo.processors if raw.cpuinfo is not None and raw.cpuinfo.processors else None,
        memory_kb=int(raw.memtotal.split()[0]) if raw.memtotal else None,
        os_id=os_.id, os_version=os_.version_id, os_name=os_.pretty_name,
        pci_read=raw.pci is not None, cards=cards, other_devices=other)


# --- inventory vs hardware -------------------------------------------------------------------------------------


def hardware_mismatches(host: Host, facts: HostFacts) -> list[str]:
    """What the inventory says about ``host`` that its hardware contradicts (arch, CPU kind, cards per kind).

    A fact that was not read (the file is absent, as under a simulated root without it) is not compared."""
    out: list[str] = []
    if facts.arch is not None and facts.arch != host.arch:
        out.append(f"arch: inventory says {host.arch}, the host is {facts.arch}")
    if facts.cpuinfo_read and facts.cpu != host.cpu:
        seen = facts.cpu or "a CPU sovkit does not know"
        detail = f" ({facts.cpu_name}; {', '.join(facts.cpu_parts)})" if facts.cpu_name else \
            f" (cpuinfo {', '.join(facts.cpu_parts)})"
        out.append(f"cpu: inventory says {host.cpu}, the host has {seen}{detail}")
    if facts.pci_read:
        want: dict[str, int] = {}
        for slot in host.accelerators:
            want[slot.kind] = want.get(slot.kind, 0) + slot.count
        have = facts.accelerator_counts()
        for kind in sorted(set(want) | set(have)):
            if want.get(kind, 0) != have.get(kind, 0):
                where = [c.slot for c in facts.cards if c.kind == kind]
                at = f" (at {', '.join(where)})" if where else ""
                out.append(f"accelerators {kind}: inventory says {want.get(kind, 0)}, found {have.get(kind, 0)}"
                           f"{at}")
    return out


def check_hardware(inventory_hosts: Mapping[str, Host], facts: Mapping[str, HostFacts | FactsError]) -> None:
    """Raise HardwareMismatch naming every host whose hardware differs from the inventory or whose facts were
    refused; hosts without a facts report are not checked."""
    problems: dict[str, list[str]] = {}
    for name, found in facts.items():
        if isinstance(found, FactsError):
            problems[name] = [f"facts refused: {found}"]
            continue
        lines = hardware_mismatches(inventory_hosts[name], found)
        if lines:
            problems[name] = lines
    if problems:
        raise HardwareMismatch(problems)


def facts_of(observed: Mapping[str, Any]) -> HostFacts | FactsError | None:
    """The facts in an observe/facts play record (``facts``: [report], ``facts_rc``: [rc]); None if the play
    did not read them (absent or empty lists: a scripted executor's record, or no helper given)."""
    if not observed.get("facts") and not observed.get("facts_rc"):
        return None  # the play was not given the helper (observe.yml skips it then)
    reports, rcs = observed.get("facts") or [], observed.get("facts_rc") or []
    if not isinstance(reports, list) or len(reports) != 1 or not isinstance(rcs, list) or len(rcs) != 1:
        return FactsError("the facts helper did not run")
    if rcs[0] not in (0, "0"):
        return FactsError(f"the facts helper failed (exit {identifiers.describe(rcs[0], 20)})")
    try:
        return parse_facts(reports[0])
    except FactsError as exc:
        return exc


def read_facts(targets: list[HostTarget], executor: Executor, workdir: Path,
               on_event: Callable[[ExecEvent], None] = lambda e: None) -> dict[str, HostFacts | FactsError | str]:
    """Run facts.yml on ``targets`` (each with ``sovkit_python``, ``sovkit_root``, ``sovkit_host_facts``):
    per host its facts, the FactsError that refused them, or (str) why it could not be read at all."""
    raw: dict[str, dict[str, Any]] = {}

    def handle(event: ExecEvent) -> None:
        if event.kind == "record" and isinstance(event.data.get("sovkit_observed"), dict):
            raw[event.host] = event.data["sovkit_observed"]
        on_event(event)

    result = executor.run("facts.yml", targets, handle, workdir, run_id=f"facts-{uuid.uuid4().hex[:12]}")
    out: dict[str, HostFacts | FactsError | str] = {}
    for t in targets:
        outcome: HostOutcome = result.hosts.get(t.name, HostOutcome())
        got = facts_of(raw[t.name]) if t.name in raw else None
        if got is None:
            what = "unreachable" if outcome.unreachable else "facts not read"
            out[t.name] = f"{what}: {outcome.error}" if outcome.error else what
        else:
            out[t.name] = got
    return out
