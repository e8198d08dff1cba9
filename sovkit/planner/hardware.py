"""A device as the planner sees it: peak compute per dtype, bandwidth, memory, interconnect, phase power."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sovkit.catalog import Catalog
from sovkit.planner.modelshape import Dtype


class DeviceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    peak_tflops: dict[str, float]  # dtype -> dense peak TFLOPS/TOPS known for it
    bandwidth_gbs: float
    memory_gb: float
    interconnect_gbs: float  # per-device all-reduce bandwidth (NVLink, PCIe, ...)
    power_idle_w: float
    power_prefill_w: float
    power_decode_w: float
    tdp_w: float

    def flops(self, dtype: Dtype) -> float:
        """Peak FLOP/s for the dtype the matmuls run in (falls back to the nearest known, documented)."""
        raise NotImplementedError


def device_spec(catalog: Catalog, kind: str) -> DeviceSpec:
    """The planner's view of a catalog kind; PlannerError names the unknown figure when one it needs is null."""
    raise NotImplementedError
