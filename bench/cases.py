"""What bench_cuda.py and official_peer.py share: the benchmark cases and how a case is timed
(the median of several synchronised runs)."""

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


# model:resolution:steps:batch,batch,...  (the targets)
DEFAULT_CASES = ["lpd_l:256:20:1,64", "lpd_xl:256:20:1,64", "lpd_l:512:48:1"]
CASES_HELP = "model:res:steps:batch,batch,..."


def parse_case(case: str) -> tuple[str, int, int, list[int]]:
    """"lpd_l:256:20:1,64" -> ("lpd_l", 256, 20, [1, 64])."""
    name, res, steps, batches = case.split(":")
    return name, int(res), int(steps), [int(b) for b in batches.split(",")]
