"""sovkit.flock: exclusive locks that die with their holder, even when the holder had forked children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sovkit.flock import Held, exclusive

HOLDER = """
import os, sys, time
from pathlib import Path
from sovkit.flock import exclusive
with exclusive(Path(sys.argv[1])):
    child = os.fork()
    if child == 0:  # like a hashing pool worker: forked while the lock is held, outlives its parent
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with exclusive(lock, remove=True):
        with pytest.raises(Held) as held, exclusive(lock, wait=False):
            pass
        assert held.value.holder == f"pid {os.getpid()}"
    assert not lock.exists()  # remove=True leaves no trace
    with exclusive(lock, wait=False):  # and it is free again
        pass


def test_lock_dies_with_its_holder_even_if_a_forked_child_lives_on(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        with pytest.raises(Held), exclusive(lock, wait=False):
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        os.kill(child, 0)  # the forked child is still alive...
        deadline = time.monotonic() + 10
        while True:  # ...and yet the lock is free
            try:
                with exclusive(lock, wait=False):
                    break
            except Held:
                assert time.monotonic() < deadline, "the forked child kept its dead parent's lock"
                time.sleep(0.05)
    finally:
        proc.kill()
        if child:
            os.kill(child, signal.SIGKILL)
