"""Running checks on a schedule until told to stop (a signal handler in the CLI sets ``stop``)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from sovkit.errors import MonitorError
from sovkit.monitor.check import CheckReport, Monitor
from sovkit.monitor.metrics import MonitorMetrics

_DURATION = re.compile(r"([1-9][0-9]{0,6})(s|m|h|d)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """``30s``, ``15m``, ``1h``, ``1d`` -> seconds; anything else (``15``, ``1.5m``, ``0s``, ``1h30m``) is refused."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise MonitorError(f"interval {text!r} is not a duration",
                          "a whole number and one unit: 30s, 15m, 1h or 1d")
    return float(int(match.group(1)) * _UNIT[match.group(2)])


def run_checks(monitor: Monitor, *, interval: float, stop: threading.Event, count: int | None = None,
               metrics: MonitorMetrics | None = None, metrics_file: str | None = None,
               on_check: Callable[[CheckReport], None] = lambda r: None) -> list[CheckReport]:
    """Check, publish, report, then wait until ``interval`` after the check started (or ``stop``).

    A check under way when ``stop`` is set abandons its observation (Ansible is cancelled), records that in its
    statement (appended whole), and the loop ends.
    Returns the reports (only the last one is kept when ``count`` is None, so a long run does not grow).
    """
    done: list[CheckReport] = []
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        report = monitor.check(cancel=stop.is_set)
        n += 1
        if metrics is not None:
            metrics.update(report)
            if metrics_file is not None:
                metrics.write_textfile(metrics_file)
        on_check(report)
        done = [*done, report] if count is not None else [report]
        if count is not None and n >= count:
            break
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    return done
