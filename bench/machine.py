"""The machine's speed at the moment, printed by the benchmarks beside their figures."""

from __future__ import annotations

import subprocess
import sys


def machine_speed() -> float:
    """Seconds a fixed CPU-bound Python loop takes in a fresh interpreter: this machine's speed at the moment.
    On shared virtual machines it drifts (here from 1.9 s to 3 s within an hour); compare runs with it."""
    loop = "import time; t = time.perf_counter(); x = 0\nfor i in range(20_000_000): x += i\nprint(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", loop], capture_output=True, text=True, check=True).stdout)
