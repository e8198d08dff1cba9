"""Test-side helpers for serving processes: find and stop what sovkit's supervisor started under a directory.

Serving processes outlive the apply that started them (that is the point); tests stop theirs when they end so
that ports are free for the next test and no process outlives the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def pidfiles(root: Path) -> list[Path]:
    """Supervisor pidfiles (…/var/lib/sovkit/serving/NAME.pid) anywhere under ``root``."""
    return sorted(root.glob("**/var/lib/sovkit/serving/*.pid")) if root.is_dir() else []


def running(root: Path) -> dict[str, int]:
    """Service name -> pid of each supervised process under ``root`` that is alive (same start time)."""
    out: dict[str, int] = {}
    for f in pidfiles(root):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        pid = rec.get("pid")
        if isinstance(pid, int) and _start_time(pid) == rec.get("start_time"):
            out[f.stem] = pid
    return out


def stop_all(root: Path) -> None:
    """SIGKILL every supervised service (and its monitor) under ``root``, by process group, and wait for them."""
    pids: list[int] = []
    for f in pidfiles(root):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for key in ("pid", "monitor_pid"):
            pid = rec.get(key)
            if isinstance(pid, int) and pid > 1 and (key != "pid" or _start_time(pid) == rec.get("start_time")):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                pids.append(pid)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
