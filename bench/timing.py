"""Wall-clock timing shared by the GPU benchmarks: the median of several synchronised runs."""

from __future__ import annotations

import statistics
import time

import torch


def median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    """(median, every run) in milliseconds of fn(), the GPU synchronised before and after each run."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), times
