"""The planner's two front-door operations by name: predict a model on a catalog kind, calibrate from a CSV.

The facade (sovkit.api) calls these; they resolve names (shipped model configs, catalog kinds, calibration
files) and return data the CLI prints as it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from sovkit.catalog import Catalog, load_catalog
from sovkit.planner.calibration import CalibrationFile, load_calibrations, write_calibration_file
from sovkit.planner.fit import calibrate
from sovkit.planner.hardware import device_spec
from sovkit.planner.modelshape import Dtype, load_model
from sovkit.planner.perf import RooflinePredictor, Workload


class PredictOutput(BaseModel):
    """`sovkit serving predict --json`: the inputs, the model's size, and every field of the Prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    model: str
    accelerator: str
    tp: int
    batch: int
    prompt_tokens: int
    context_tokens: int
    dtype: Dtype
    kv_dtype: Dtype
    power_cap_w: float | None
    params_total: float
    params_active: float
    prefill_ms: float
    decode_step_ms: float
    kv_bytes_per_token: int
    max_batch: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    power_prefill_w: float
    power_decode_w: float
    prefill_tokens_per_j: float
    decode_tokens_per_j: float
    prefill_bound: str
    decode_bound: str
    calibrated: bool
    calibration_source: str
    weights_gb_per_device: float
    kv_gb_per_sequence: float
    usable_gb_per_device: float
    min_tp: int
    eta_compute: float
    eta_memory: float
    overhead_ms: float
    allreduce_ms: dict[str, float]
    note: str


def predict(*, model_config: str | Path, accelerator: str, work: Workload, calibration: Path | None = None,
            catalog: Catalog | None = None) -> PredictOutput:
    """Predict one model on one catalog kind; a site calibration file takes precedence over the catalog's."""
    catalog = catalog or load_catalog()
    shape = load_model(model_config)
    device = device_spec(catalog, accelerator)
    prediction = RooflinePredictor(load_calibrations(calibration)).predict(shape, device, work)
    return PredictOutput(model=shape.name, accelerator=device.id, tp=work.tp, batch=work.batch,
                         prompt_tokens=work.prompt_tokens, context_tokens=work.context_tokens,
                         dtype=work.weight_dtype, kv_dtype=work.kv_dtype, power_cap_w=work.power_cap_w,
                         params_total=shape.params_total(), params_active=shape.params_active(),
                         **dataclasses.asdict(prediction))


def calibrate_measurements(*, measurements: Path, write: Path | None = None, per_tp: bool = False,
                           catalog: Catalog | None = None) -> CalibrationFile:
    """Fit the measured points; with ``write``, store the factors and the per-point errors as a YAML file."""
    result = calibrate(measurements, catalog or load_catalog(), per_tp=per_tp)
    if write is not None:
        write_calibration_file(write, result)
    return result
