"""Efficiency factors per device and TP degree, fitted from measured points and stored with their source.

A calibration file (the catalog's sovkit/catalog/calibrations.yaml, or a site's written by
``sovkit serving calibrate --write``) holds the fitted factors and the per-point fit errors they came from.
On disk each calibration's ``source`` says what it was fitted from; loaded, it is prefixed ``catalog:`` or
``site: FILE:`` so a prediction says which file it used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovkit.errors import PlannerError

CATALOG_CALIBRATIONS: Final = Path(__file__).resolve().parent.parent / "catalog" / "calibrations.yaml"
CATALOG_POINTS: Final = Path(__file__).resolve().parent.parent / "catalog" / "calibration-points.csv"


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str
    tp: int | None = None  # None: any TP degree
    eta_compute: float = Field(gt=0, le=1)
    eta_memory: float = Field(gt=0, le=1)
    overhead_ms: float = Field(ge=0)
    source: str


class PointResult(BaseModel):
    """One measured point, what the fitted model predicts for it, and whether it was held out of the fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str
    tp: int
    model: str
    phase: str
    batch: int
    prompt_tokens: int
    context_tokens: int
    measured_ms: float
    predicted_ms: float
    error_pct: float  # (predicted − measured) / measured · 100
    holdout: bool
    source: str


class CalibrationFile(BaseModel):
    """What ``sovkit serving calibrate --write`` writes: the factors, and the points and errors behind them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    measurements: str  # the CSV the factors were fitted from
    calibrations: list[Calibration]
    points: list[PointResult] = []
    mean_abs_error_fit_pct: float | None = None
    mean_abs_error_holdout_pct: float | None = None


def read_calibration_file(path: Path) -> CalibrationFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlannerError(f"calibration file {path}: cannot read it ({exc})",
                           "write one with `sovkit serving calibrate MEASUREMENTS.csv --write FILE`") from exc
    try:
        return CalibrationFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PlannerError(f"calibration file {path}: field {where}: {first['msg']}",
                           "write one with `sovkit serving calibrate MEASUREMENTS.csv --write FILE`") from exc


def _prefixed(file: CalibrationFile, prefix: str) -> list[Calibration]:
    return [c.model_copy(update={"source": f"{prefix}{c.source}"}) for c in file.calibrations]


def catalog_calibrations() -> list[Calibration]:
    """The calibrations sovkit ships, fitted from cited public measurements."""
    return _prefixed(read_calibration_file(CATALOG_CALIBRATIONS), "catalog: ")


def load_calibrations(site_file: Path | None = None) -> list[Calibration]:
    """A site's calibrations (if given) ahead of the catalog's: the first match wins in RooflinePredictor."""
    site = _prefixed(read_calibration_file(site_file), f"site: {site_file}: ") if site_file else []
    return site + catalog_calibrations()


def write_calibration_file(path: Path, file: CalibrationFile) -> None:
    header = (f"# Written by `sovkit serving calibrate {file.measurements}`: efficiency factors fitted from the\n"
              "# measured points below (points with holdout: true were not fitted; their error is the check).\n")
    body = yaml.safe_dump(file.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=120)
    path.write_text(header + body, encoding="utf-8")
