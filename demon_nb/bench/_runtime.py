"""Shared helpers for the headless runtime benchmarks (stream, soak)."""

from __future__ import annotations

import os
import time

import numpy as np



def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def percentile(values, q: float) -> float:
    return float(np.percentile(list(values), q)) if len(values) else 0.0


class PlayheadClock:
    """Stands in for the browser: the playhead advances in real time from ``start``."""

    def __init__(self, runner):
        self.runner = runner
        runner.player.report(0, True, now=time.monotonic())
