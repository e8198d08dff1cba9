"""A device as the planner sees it: peak compute per dtype, bandwidth, memory, interconnect, phase power."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sovkit.catalog import Catalog, Figure
from sovkit.errors import PlannerError
from sovkit.planner.modelshape import Dtype

#: the dtype whose peak a matmul in ``dtype`` runs at, in order of preference. FP8 weights on a chip without
#: FP8 units run as weight-only kernels on BF16 compute (e.g. Marlin on A100); int4 is weight-only everywhere.
_COMPUTE_IN: dict[str, tuple[str, ...]] = {
    "bf16": ("bf16",), "fp16": ("bf16",), "fp8": ("fp8", "bf16"), "int8": ("int8", "bf16"), "int4": ("bf16",),
}


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
        """Peak FLOP/s for the dtype the matmuls run in (falls back to the nearest known, documented).

        fp8 and int8 use their own peak when the catalog knows it, else BF16 (weight-only kernels); int4 and
        fp16 use BF16.
        """
        for name in _COMPUTE_IN[dtype]:
            if name in self.peak_tflops:
                return self.peak_tflops[name] * 1e12
        raise PlannerError(f"accelerator {self.id} has no known peak compute for {dtype} or BF16",
                           "add bf16_tflops to the catalog entry")


def _need(kind: str, name: str, fig: Figure) -> float:
    if fig.value is None:
        raise PlannerError(f"accelerator {kind}: the catalog does not know its {name} ({fig.source}), which the "
                           "planner needs", f"add a sourced {name} to sovkit/catalog/accelerators.yaml, or plan "
                           "without this kind")
    return fig.value


def device_spec(catalog: Catalog, kind: str) -> DeviceSpec:
    """The planner's view of a catalog kind; PlannerError names the unknown figure when one it needs is null."""
    a = catalog.accelerators.get(kind)
    if a is None:
        raise PlannerError(f"unknown accelerator kind {kind!r}", catalog.suggest("accelerators", kind))
    peaks = {name: fig.value for name, fig in (("bf16", a.bf16_tflops), ("fp8", a.fp8_tflops),
                                               ("int8", a.int8_tops)) if fig.value is not None}
    _need(kind, "bf16_tflops", a.bf16_tflops)
    return DeviceSpec(
        id=a.id, peak_tflops=peaks,
        bandwidth_gbs=_need(kind, "bandwidth_gbs", a.bandwidth_gbs),
        memory_gb=_need(kind, "memory_gb", a.memory_gb),
        interconnect_gbs=_need(kind, "interconnect_gbs", a.interconnect_gbs),
        power_idle_w=_need(kind, "power_idle_w", a.power_idle_w),
        power_prefill_w=_need(kind, "power_prefill_w", a.power_prefill_w),
        power_decode_w=_need(kind, "power_decode_w", a.power_decode_w),
        tdp_w=_need(kind, "tdp_w", a.tdp_w),
    )
