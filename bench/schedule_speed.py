"""Speed of the C++ locality-order generator against the official pure-Python one.

The official orders/lpd_order.py takes 30 ms per order at grid 16 / 20 steps and 641 ms at
grid 32 / 48 steps on one core (lpd-facts.md §4). We time lpd_engine._C.locality_orders on one
thread (the per-core comparison) and on every hardware thread, best of a few repeats, and print
orders/second and the per-core speed-up. Run: python bench/schedule_speed.py [--seconds 1.0]
"""

import argparse
import os
import time

from lpd_engine import _C
from lpd_engine.schedule import default_repulsion, published_group_sizes

OFFICIAL_MS_PER_ORDER = {(16, 20): 30.0, (32, 48): 641.0}


def orders_per_second(grid, sizes, repulsion, threads, seconds, repeats=3):
    count = 16
    while True:  # grow the batch until one call takes a measurable share of the budget
        start = time.perf_counter()
        _C.locality_orders(grid, sizes, count, 0, repulsion, 1.0, 0, threads)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 4:
            break
        count *= 2
    best = elapsed
    for r in range(repeats - 1):
        start = time.perf_counter()
        _C.locality_orders(grid, sizes, count, r + 1, repulsion, 1.0, 0, threads)
        best = min(best, time.perf_counter() - start)
    return count / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="rough time budget per measurement")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{'setting':<18}{'1 thread':>14}{f'{cores} threads':>16}{'ms/order':>10}{'vs official, 1 core':>22}")
    for (grid, steps), official_ms in OFFICIAL_MS_PER_ORDER.items():
        sizes = published_group_sizes(grid, steps)
        repulsion = default_repulsion(grid, steps)
        single = orders_per_second(grid, sizes, repulsion, 1, args.seconds)
        every = orders_per_second(grid, sizes, repulsion, 0, args.seconds)
        print(f"{f'grid {grid}/{steps} steps':<18}{single:>10.0f} o/s{every:>12.0f} o/s"
              f"{1e3 / single:>10.3f}{official_ms * single / 1e3:>21.0f}x")


if __name__ == "__main__":
    main()
