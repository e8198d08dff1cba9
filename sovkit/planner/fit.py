"""Fitting η_compute, η_memory and the per-step overhead to measured latencies (``sovkit serving calibrate``).

The measurements CSV has one row per measured point, with these columns:

- ``device`` — the catalog accelerator kind it was measured on; ``tp`` — its tensor-parallel degree;
- ``model`` — a config.json path (relative to the CSV) or a shipped example's name;
- ``phase`` — ``prefill`` (one pass over batch × prompt_tokens), ``decode`` (one step of ``batch`` sequences
  at ``context_tokens``) or ``mixed`` (a co-located decode step that also carries its share of prefill:
  decode_step + batch / output_tokens × prefill of one prompt — what a serving benchmark's inter-token
  latency measures under load);
- ``batch``, ``prompt_tokens``, ``context_tokens``, ``dtype`` (weights), ``measured_ms``, ``source``,
  ``holdout`` (``yes``: not fitted, its error is the check);
- optional: ``kv_dtype`` (default bf16), ``output_tokens`` (``mixed`` only), ``chip`` (points of kinds with
  the same chip — A100 40GB and 80GB — are fitted together; default: the device).

The fit is a grid search over η (0.10–0.95, then a finer grid around the best) with the overhead in closed
form for each pair (the weighted median of measured − modelled, weights 1/measured, at least 0), minimising
the mean absolute relative error. When the points cannot tell a factor apart (e.g. only decode points), a
tiny pull toward the llm-analysis defaults (0.7 / 0.9) decides. Three parameters for a whole chip: the
physics, not the points.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sovkit.catalog import Catalog
from sovkit.errors import PlannerError
from sovkit.planner.calibration import Calibration, CalibrationFile, PointResult
from sovkit.planner.hardware import device_spec
from sovkit.planner.modelshape import DTYPE_BYTES, Dtype, ModelShape, load_model, resolve_config
from sovkit.planner.perf import DEFAULT_ETA_COMPUTE, DEFAULT_ETA_MEMORY, PassCost, Workload, pass_cost

REQUIRED: Final = ("device", "tp", "model", "phase", "batch", "prompt_tokens", "context_tokens", "dtype",
                   "measured_ms", "source", "holdout")
OPTIONAL: Final = ("kv_dtype", "output_tokens", "chip")
_TRUE: Final = {"yes", "true", "1", "y"}
_FALSE: Final = {"no", "false", "0", "n", ""}
#: the pull toward the defaults that breaks ties between equally good fits (tiny against any real error)
_PRIOR: Final = 1e-4
#: no kernel sustains more than about 95 % of a peak; a fit wanting more is an overhead in disguise
ETA_MAX: Final = 0.95


@dataclass(frozen=True)
class Point:
    """One measured point, its model work already costed (so the fit only re-weighs it)."""

    line: int
    device: str
    chip: str
    tp: int
    model: str
    phase: str
    batch: int
    prompt_tokens: int
    context_tokens: int
    measured_ms: float
    holdout: bool
    source: str
    passes: tuple[tuple[float, PassCost], ...]  # (multiplicity, pass): decode = one step; mixed = step + share


def _field(row: dict[str, str], name: str, path: Path, line: int) -> str:
    value = (row.get(name) or "").strip()
    if not value and name not in OPTIONAL and name != "holdout":
        raise PlannerError(f"measurements {path}:{line}: column {name!r} is empty",
                           f"every row needs: {', '.join(REQUIRED)}")
    return value


def _number(row: dict[str, str], name: str, path: Path, line: int, kind: Callable[[str], float | int]) -> float:
    text = _field(row, name, path, line)
    try:
        value = kind(text)
    except ValueError:
        raise PlannerError(f"measurements {path}:{line}: column {name!r} is {text!r}, not a number",
                           "fix the row") from None
    if value < 0 or (name != "context_tokens" and value == 0):
        raise PlannerError(f"measurements {path}:{line}: column {name!r} is {text!r}, must be positive",
                           "fix the row")
    return float(value)


def _dtype(row: dict[str, str], name: str, path: Path, line: int, default: str | None = None) -> Dtype:
    value = _field(row, name, path, line) or default or ""
    if value not in DTYPE_BYTES:
        raise PlannerError(f"measurements {path}:{line}: column {name!r} is {value!r}",
                           f"one of: {', '.join(DTYPE_BYTES)}")
    return value  # type: ignore[return-value]


def read_points(path: Path, catalog: Catalog) -> list[Point]:
    """Read and cost every row; any bad row is a PlannerError naming the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlannerError(f"measurements {path}: cannot read it ({exc.strerror or exc})",
                           "give the CSV of measured points") from exc
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise PlannerError(f"measurements {path}: missing column(s) {', '.join(missing)}",
                           f"the header needs: {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})")
    shapes: dict[str, ModelShape] = {}
    points: list[Point] = []
    for i, row in enumerate(reader, start=2):
        device = _field(row, "device", path, i)
        try:
            spec = device_spec(catalog, device)
        except PlannerError as exc:
            raise PlannerError(f"measurements {path}:{i}: {exc.message}", exc.hint) from None
        model = _field(row, "model", path, i)
        if model not in shapes:
            ref = path.parent / model
            try:
                shapes[model] = load_model(ref if ref.is_file() else resolve_config(model))
            except PlannerError as exc:
                raise PlannerError(f"measurements {path}:{i}: {exc.message}", exc.hint) from None
        phase = _field(row, "phase", path, i)
        if phase not in ("prefill", "decode", "mixed"):
            raise PlannerError(f"measurements {path}:{i}: column 'phase' is {phase!r}",
                               "one of: prefill, decode, mixed")
        holdout_text = _field(row, "holdout", path, i).lower()
        if holdout_text not in _TRUE | _FALSE:
            raise PlannerError(f"measurements {path}:{i}: column 'holdout' is {holdout_text!r}", "yes or no")
        work = Workload(tp=int(_number(row, "tp", path, i, int)), batch=int(_number(row, "batch", path, i, int)),
                        prompt_tokens=int(_number(row, "prompt_tokens", path, i, int)),
                        context_tokens=int(_number(row, "context_tokens", path, i, int)),
                        weight_dtype=_dtype(row, "dtype", path, i),
                        kv_dtype=_dtype(row, "kv_dtype", path, i, default="bf16"))
        shape = shapes[model]
        passes: tuple[tuple[float, PassCost], ...]
        if phase == "prefill":
            passes = ((1.0, pass_cost(shape, spec, work, "prefill")),)
        elif phase == "decode":
            passes = ((1.0, pass_cost(shape, spec, work, "decode")),)
        else:
            if not row.get("output_tokens"):
                raise PlannerError(f"measurements {path}:{i}: a mixed point needs output_tokens",
                                   "the requests' output length (each request's prompt is prefilled once per "
                                   "output_tokens decode steps)")
            out = _number(row, "output_tokens", path, i, int)
            one = Workload(tp=work.tp, batch=1, prompt_tokens=work.prompt_tokens, context_tokens=0,
                           weight_dtype=work.weight_dtype, kv_dtype=work.kv_dtype)
            passes = ((1.0, pass_cost(shape, spec, work, "decode")),
                      (work.batch / out, pass_cost(shape, spec, one, "prefill")))
        points.append(Point(line=i, device=device, chip=_field(row, "chip", path, i) or device, tp=work.tp,
                            model=shape.name, phase=phase, batch=work.batch, prompt_tokens=work.prompt_tokens,
                            context_tokens=work.context_tokens,
                            measured_ms=_number(row, "measured_ms", path, i, float),
                            holdout=holdout_text in _TRUE, source=_field(row, "source", path, i), passes=passes))
    if not points:
        raise PlannerError(f"measurements {path}: no rows", "add measured points under the header")
    return points


def predict_ms(point: Point, eta_compute: float, eta_memory: float, overhead_ms: float) -> float:
    """The model's time for a point: every pass it contains, each with the per-step overhead."""
    return sum(k * (p.seconds(eta_compute, eta_memory, 0.0) * 1e3 + overhead_ms) for k, p in point.passes)


def _overhead(points: Sequence[Point], base: list[float]) -> float:
    """The overhead minimising Σ|base + k·o − measured|/measured: a weighted median, clamped at 0."""
    items = sorted(((p.measured_ms - b) / _steps(p), _steps(p) / p.measured_ms) for p, b in zip(points, base,
                                                                                                   strict=True))
    half = sum(w for _, w in items) / 2
    acc = 0.0
    for value, weight in items:
        acc += weight
        if acc >= half:
            return max(0.0, value)
    return max(0.0, items[-1][0])


def _steps(point: Point) -> float:
    return sum(k for k, _ in point.passes)


def _objective(points: Sequence[Point], ec: float, em: float) -> tuple[float, float]:
    base = [predict_ms(p, ec, em, 0.0) for p in points]
    over = _overhead(points, base)
    err = sum(abs(b + _steps(p) * over - p.measured_ms) / p.measured_ms for p, b in zip(points, base, strict=True))
    prior = _PRIOR * ((ec - DEFAULT_ETA_COMPUTE) ** 2 + (em - DEFAULT_ETA_MEMORY) ** 2)
    return err / len(points) + prior, over


def _cite(source: str) -> str:
    """A point's source up to its first parenthesis or semicolon: the citation without the row's details."""
    for stop in (" (", ";"):
        source = source.split(stop)[0]
    return source.strip()


def fit_group(points: Sequence[Point]) -> tuple[float, float, float]:
    """(η_compute, η_memory, overhead_ms) for points of one chip (and TP, when fitted per TP)."""
    def search(ecs: list[float], ems: list[float]) -> tuple[float, float, float, float]:
        best = (float("inf"), 0.0, 0.0, 0.0)
        for ec in ecs:
            for em in ems:
                score, over = _objective(points, ec, em)
                if score < best[0]:
                    best = (score, ec, em, over)
        return best

    coarse = [round(0.10 + 0.02 * i, 4) for i in range(43)]  # 0.10 .. 0.94
    _, ec, em, _ = search(coarse, coarse)

    def fine(center: float) -> list[float]:
        return [v for v in (round(center + 0.002 * i, 4) for i in range(-10, 11)) if 0.05 <= v <= ETA_MAX]

    _, ec, em, over = search(fine(ec), fine(em))
    return ec, em, round(over, 3)


def calibrate(path: Path, catalog: Catalog, *, per_tp: bool = False) -> CalibrationFile:
    """Fit each chip (and TP degree with ``per_tp``) from the non-held-out points; report every point's error."""
    points = read_points(path, catalog)
    groups: dict[tuple[str, int | None], list[Point]] = {}
    for p in points:
        groups.setdefault((p.chip, p.tp if per_tp else None), []).append(p)
    calibrations: list[Calibration] = []
    results: list[PointResult] = []
    for (chip, tp), members in groups.items():
        fitted = [p for p in members if not p.holdout]
        if not fitted:
            raise PlannerError(f"measurements {path}: every point of {chip}" + (f" at tp {tp}" if tp else "")
                               + " is held out; nothing to fit", "mark some of its points holdout: no")
        ec, em, over = fit_group(fitted)
        held = len(members) - len(fitted)
        cited = sorted({_cite(p.source) for p in fitted})
        source = (f"fitted from {len(fitted)} point(s) of {path.name} ({'; '.join(cited)}); "
                  f"{held} held out")
        for device in sorted({p.device for p in members}):
            calibrations.append(Calibration(device=device, tp=tp, eta_compute=ec, eta_memory=em, overhead_ms=over,
                                            source=source if device == chip else f"{source}; as {chip} (same chip)"))
        for p in members:
            pred = predict_ms(p, ec, em, over)
            results.append(PointResult(device=p.device, tp=p.tp, model=p.model, phase=p.phase, batch=p.batch,
                                       prompt_tokens=p.prompt_tokens, context_tokens=p.context_tokens,
                                       measured_ms=p.measured_ms, predicted_ms=round(pred, 3),
                                       error_pct=round((pred - p.measured_ms) / p.measured_ms * 100, 2),
                                       holdout=p.holdout, source=p.source))

    def mean(rs: list[PointResult]) -> float | None:
        return round(sum(abs(r.error_pct) for r in rs) / len(rs), 2) if rs else None

    return CalibrationFile(measurements=path.name, calibrations=calibrations, points=results,
                           mean_abs_error_fit_pct=mean([r for r in results if not r.holdout]),
                           mean_abs_error_holdout_pct=mean([r for r in results if r.holdout]))
