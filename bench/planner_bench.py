"""The serving planner: prediction error on cited public points (and, with `--part plan`, the plan search timing).

    python bench/planner_bench.py [--part predict|plan|all]

predict: refits the catalog's calibrations from sovkit/catalog/calibration-points.csv (exactly as shipped),
then prints, for every cited point, the measured value, the calibrated prediction, its error, and the
uncalibrated (llm-analysis 0.7 / 0.9 defaults) prediction beside it; held-out points are marked and their
mean absolute error is the number that counts (goal: within ±25 %). Cited figures that are not latency
points at a known shape are listed after the table with the reason they are not compared.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sovkit.catalog import load_catalog  # noqa: E402
from sovkit.planner.calibration import CATALOG_POINTS  # noqa: E402
from sovkit.planner.fit import calibrate, predict_ms, read_points  # noqa: E402
from sovkit.planner.perf import DEFAULT_ETA_COMPUTE, DEFAULT_ETA_MEMORY  # noqa: E402

#: cited figures that are not a latency at a known shape, and why they are not compared
NOT_COMPARED = [
    ("Furiosa vendor table (Llama-3.1-8B 128/4096, Llama-3.1-70B 2048/128; RNGD, H100, L40S throughput)",
     "batch (concurrency) not stated, so no shape to predict at"),
    ("Mooncake FAST'25 (Qwen2.5-7B-Int4 on 2×A10, 1P1D vs two instances)",
     "A10 is not in the catalog; the figures are queueing-dominated means at 4 req/s (a plan-level check)"),
    ("splitwise-sim phase power (A100 400/250/63 W, H100 700/380/75 W)",
     "used as the catalog's phase power figures, not a latency"),
]


def heldout_errors() -> float | None:
    """Print predicted vs measured for every cited point; return the mean absolute error on held-out points."""
    catalog = load_catalog()
    result = calibrate(CATALOG_POINTS, catalog)
    points = read_points(CATALOG_POINTS, catalog)
    print(f"cited points: {CATALOG_POINTS.relative_to(ROOT)} (fit: sovkit/catalog/calibrations.yaml)\n")
    print("| # | device | tp | model | phase | batch × prompt / context | measured ms | predicted ms | error "
          "| uncalibrated ms (error) | held out |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, (p, r) in enumerate(zip(points, result.points, strict=True), start=1):
        raw = predict_ms(p, DEFAULT_ETA_COMPUTE, DEFAULT_ETA_MEMORY, 0.0)
        raw_err = (raw - p.measured_ms) / p.measured_ms * 100
        print(f"| {i} | {r.device} | {r.tp} | {r.model} | {r.phase} | {r.batch} × {r.prompt_tokens} / "
              f"{r.context_tokens} | {r.measured_ms:g} | {r.predicted_ms:.2f} | {r.error_pct:+.1f} % | "
              f"{raw:.2f} ({raw_err:+.1f} %) | {'**yes**' if r.holdout else 'no'} |")
    print()
    for c in result.calibrations:
        print(f"- {c.device}: eta_compute {c.eta_compute:g}, eta_memory {c.eta_memory:g}, overhead "
              f"{c.overhead_ms:g} ms — {c.source}")
    held = [r for r in result.points if r.holdout]
    print(f"\nmean |error|: fitted points {result.mean_abs_error_fit_pct} %, held-out points "
          f"{result.mean_abs_error_holdout_pct} % over {len(held)} points (goal: within ±25 %); "
          f"worst held-out {max(abs(r.error_pct) for r in held):.1f} %")
    print("\nNot compared:")
    for what, why in NOT_COMPARED:
        print(f"- {what}: {why}")
    return result.mean_abs_error_holdout_pct


#: the parts of this bench, by name (`--part NAME`; `all` runs each in this order)
PARTS: dict[str, Callable[[], object]] = {"predict": heldout_errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    args = parser.parse_args(argv)
    for name, run in PARTS.items():
        if args.part in (name, "all"):
            print(f"## {name}\n")
            run()
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
