"""Calibration: recovers known factors from points the model itself generated; held-out error is reported
apart; the shipped calibrations are what their cited points give; bad CSVs are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovkit.catalog import load_catalog
from sovkit.errors import PlannerError
from sovkit.planner.calibration import (
    CATALOG_CALIBRATIONS,
    CATALOG_POINTS,
    Calibration,
    load_calibrations,
    read_calibration_file,
)
from sovkit.planner.fit import REQUIRED, calibrate
from sovkit.planner.hardware import device_spec
from sovkit.planner.modelshape import load_model
from sovkit.planner.perf import RooflinePredictor, Workload

HEADER = ",".join(REQUIRED)
TRUE = {"eta_compute": 0.55, "eta_memory": 0.8, "overhead_ms": 3.0}


def synthetic_csv(tmp_path: Path, device: str = "nvidia-a100-80gb-sxm") -> Path:
    """Points measured by the model itself at known factors: prefill and decode, two models, TP 1 and 2."""
    pred = RooflinePredictor([Calibration(device=device, source="truth", **TRUE)])
    dev = device_spec(load_catalog(), device)
    rows = [HEADER]
    i = 0
    for model in ("llama-3.1-8b", "opt-13b"):
        shape = load_model(model)
        for tp in (1, 2):
            for n in (128, 512, 2048):
                p = pred.predict(shape, dev, Workload(tp=tp, batch=1, prompt_tokens=n, context_tokens=0))
                i += 1
                rows.append(f"{device},{tp},{model},prefill,1,{n},0,bf16,{p.prefill_ms!r},synthetic,"
                            f"{'yes' if i % 4 == 0 else 'no'}")
            for b, c in ((1, 512), (16, 1024), (48, 256)):
                p = pred.predict(shape, dev, Workload(tp=tp, batch=b, prompt_tokens=c, context_tokens=c))
                i += 1
                rows.append(f"{device},{tp},{model},decode,{b},{c},{c},bf16,{p.decode_step_ms!r},synthetic,"
                            f"{'yes' if i % 4 == 0 else 'no'}")
    path = tmp_path / "points.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_recovers_known_factors_from_synthetic_points(tmp_path: Path) -> None:
    result = calibrate(synthetic_csv(tmp_path), load_catalog())
    [cal] = result.calibrations
    assert cal.eta_compute == pytest.approx(TRUE["eta_compute"], abs=0.005)
    assert cal.eta_memory == pytest.approx(TRUE["eta_memory"], abs=0.005)
    assert cal.overhead_ms == pytest.approx(TRUE["overhead_ms"], abs=0.15)
    held = [p for p in result.points if p.holdout]
    assert len(held) == 6 and len(result.points) == 24
    assert result.mean_abs_error_holdout_pct is not None and result.mean_abs_error_holdout_pct < 1.0
    assert result.mean_abs_error_fit_pct is not None and result.mean_abs_error_fit_pct < 1.0
    assert "18 point(s)" in cal.source and "6 held out" in cal.source


def test_per_tp_fit_gives_one_calibration_per_degree(tmp_path: Path) -> None:
    result = calibrate(synthetic_csv(tmp_path), load_catalog(), per_tp=True)
    assert sorted(c.tp or 0 for c in result.calibrations) == [1, 2]
    for c in result.calibrations:
        assert c.eta_memory == pytest.approx(0.8, abs=0.01)


def test_held_out_points_are_not_fitted(tmp_path: Path) -> None:
    """Corrupting only held-out points leaves the fit unchanged; their error shows it."""
    path = synthetic_csv(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[-1] == "yes":
            cells[8] = repr(float(cells[8]) * 3)  # measured_ms three times what the model says
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    result = calibrate(path, load_catalog())
    assert result.calibrations[0].eta_memory == pytest.approx(0.8, abs=0.005)
    assert result.mean_abs_error_holdout_pct is not None and result.mean_abs_error_holdout_pct > 60


def test_shipped_calibrations_are_reproducible_from_the_cited_points() -> None:
    shipped = read_calibration_file(CATALOG_CALIBRATIONS)
    refit = calibrate(CATALOG_POINTS, load_catalog())
    assert refit.calibrations == shipped.calibrations
    assert refit.points == shipped.points
    devices = {c.device for c in shipped.calibrations}
    assert {"nvidia-a100-80gb-sxm", "nvidia-h100-sxm"} <= devices
    held_out_on = {p.device for p in shipped.points if p.holdout}  # every fit has points held out of it
    assert {"nvidia-a100-80gb-sxm", "nvidia-a100-40gb-sxm", "nvidia-h100-sxm"} <= held_out_on
    assert shipped.mean_abs_error_holdout_pct is not None and shipped.mean_abs_error_holdout_pct <= 25


def test_site_calibration_comes_before_the_catalog(tmp_path: Path) -> None:
    site = tmp_path / "site-cal.yaml"
    site.write_text("measurements: m.csv\ncalibrations:\n- {device: nvidia-h100-sxm, tp: null, eta_compute: 0.3,"
                    " eta_memory: 0.3, overhead_ms: 1, source: 'lab run 7'}\n", encoding="utf-8")
    cals = load_calibrations(site)
    h100 = RooflinePredictor(cals).calibration_for("nvidia-h100-sxm", 2)
    assert h100 is not None and h100.source == f"site: {site}: lab run 7"
    assert any(c.source.startswith("catalog: ") for c in cals)


@pytest.mark.parametrize(("text", "words"), [
    ("device,tp\nx,1\n", ["missing column(s)", "model"]),
    (HEADER + "\nnvidia-h100-sxm,one,llama-3.1-8b,prefill,1,10,0,bf16,5,s,no\n", [":2:", "'tp'", "not a number"]),
    (HEADER + "\nnvidia-h100,1,llama-3.1-8b,prefill,1,10,0,bf16,5,s,no\n", [":2:", "unknown accelerator kind"]),
    (HEADER + "\nnvidia-h100-sxm,1,llama-3.1-8b,warmup,1,10,0,bf16,5,s,no\n", [":2:", "'phase'"]),
    (HEADER + "\nnvidia-h100-sxm,1,llama-3.1-8b,prefill,1,10,0,fp7,5,s,no\n", [":2:", "'dtype'"]),
    (HEADER + "\nnvidia-h100-sxm,1,no-model,prefill,1,10,0,bf16,5,s,no\n", [":2:", "no-model"]),
    (HEADER + "\nnvidia-h100-sxm,1,llama-3.1-8b,prefill,1,10,0,bf16,5,s,yes\n", ["every point", "held out"]),
    (HEADER + "\n", ["no rows"]),
])
def test_bad_measurements_are_clear_errors(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlannerError) as err:
        calibrate(path, load_catalog())
    assert str(path) in err.value.message
    for w in words:
        assert w in err.value.message


def test_bad_calibration_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "cal.yaml"
    bad.write_text("measurements: m.csv\ncalibrations:\n- {device: x, eta_compute: 2, eta_memory: 0.5, "
                   "overhead_ms: 0, source: s}\n", encoding="utf-8")
    with pytest.raises(PlannerError, match=r"cal.yaml: field calibrations.0.eta_compute"):
        load_calibrations(bad)
