"""Efficiency factors per device and TP degree, fitted from measured points and stored with their source."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str
    tp: int | None = None  # None: any TP degree
    eta_compute: float
    eta_memory: float
    overhead_ms: float
    source: str
