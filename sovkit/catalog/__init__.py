"""The hardware catalog shipped as data: accelerators, CPUs, vendor tool profiles.

Every figure carries its source; unknown figures are ``None`` with source
``unknown`` so no capacity check can silently rely on a guess.
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sovkit.errors import CatalogError

_HERE = Path(__file__).resolve().parent


class Figure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float | None
    source: str


class VendorProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    tool: str
    query: list[str]
    flash: list[str]
    reset: list[str]
    devices_key: str
    id_key: str
    firmware_key: str
    source: str


class AcceleratorKind(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    vendor: str
    name: str
    profile: str
    bf16_tflops: Figure
    int8_tops: Figure
    fp8_tflops: Figure
    memory_gb: Figure
    bandwidth_gbs: Figure
    tdp_w: Figure


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


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerators: dict[str, AcceleratorKind]
    cpus: dict[str, CpuKind]
    profiles: dict[str, VendorProfile]

    def suggest(self, kind: Literal["accelerators", "cpus"], unknown: str) -> str:
        """A "did you mean" hint for an unknown catalog id."""
        ids = list(getattr(self, kind))
        close = difflib.get_close_matches(unknown, ids, n=1, cutoff=0.5)
        if close:
            return f"did you mean {close[0]!r}?"
        return f"known {kind}: {', '.join(sorted(ids))}"


def _read(name: str) -> list[dict[str, object]]:
    try:
        data = yaml.safe_load((_HERE / name).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"catalog file {name} unreadable: {exc}", "reinstall sovkit") from exc
    if not isinstance(data, list):
        raise CatalogError(f"catalog file {name} is not a list", "reinstall sovkit")
    return data


@cache
def load_catalog() -> Catalog:
    """The shipped hardware catalog (accelerators, host models), read once per process."""
    try:
        accels = [AcceleratorKind.model_validate(d) for d in _read("accelerators.yaml")]
        cpus = [CpuKind.model_validate(d) for d in _read("cpus.yaml")]
        profiles = [VendorProfile.model_validate(d) for d in _read("profiles.yaml")]
    except ValidationError as exc:
        raise CatalogError(f"catalog is malformed: {exc}", "reinstall sovkit") from exc
    catalog = Catalog(
        accelerators={a.id: a for a in accels},
        cpus={c.id: c for c in cpus},
        profiles={p.id: p for p in profiles},
    )
    for a in accels:
        if a.profile not in catalog.profiles:
            raise CatalogError(f"accelerator {a.id} names unknown profile {a.profile}", "reinstall sovkit")
    return catalog
