"""Schedules: the C++ locality-order generator against a plain numpy twin, bit for bit.

The twin below is a direct, unoptimised reading of the algorithm in engine/include/lpd/schedule.h
(proximity recomputed from the whole selected set every step, Python lists, full sorts), sharing
only the Philox RNG with the C++ code. It also reports which branches each step took, so the tests
can show that every branch was exercised and check the repulsion rule on the C++ output.
Then: every published table, determinism, first_index, random/raster orders, the input checks,
and schedule files.
"""

import sys

import numpy as np
import pytest

import lpd_engine
from lpd_engine import schedule
from lpd_engine.errors import BackendUnavailableError, InvalidScheduleError
from lpd_engine.rng import STREAM_RANDOM_ORDER, STREAM_SCHEDULE, STREAM_SCHEDULE_PICK, philox4x32

# ------------------------------------------------------------------------------------ numpy twin


def words(seed, cells, step, order_index, stream):
    """philox_word(seed, c, step, order_index, stream) for every cell c: int64 [len(cells)]."""
    cells = np.asarray(cells, dtype=np.int64)
    w = philox4x32(seed, cells // 4, step, order_index, stream)
    return np.take_along_axis(w, (cells % 4)[:, None], axis=1)[:, 0].astype(np.int64)


def proximity_of(selected, grid):
    """a + b / sqrt(2) for every cell: a, b = selected orthogonal, diagonal neighbours; float64 [N]."""
    padded = np.pad(selected.reshape(grid, grid), 1).astype(np.int64)

    def count(offsets):
        return sum(padded[1 + dr:1 + dr + grid, 1 + dc:1 + dc + grid] for dr, dc in offsets).reshape(-1)

    a = count([(-1, 0), (1, 0), (0, -1), (0, 1)])
    b = count([(-1, -1), (-1, 1), (1, -1), (1, 1)])
    return a + b / np.sqrt(2.0)


def twin_order(grid, group_sizes, seed, j, repulsion, proximity=1.0):
    """Order j; also per step the number of cells taken from candidates-1 and branch counters."""
    n = grid * grid
    cells = np.arange(n)
    rows, cols = cells // grid, cells % grid
    selected = np.zeros(n, bool)
    first = int(np.lexsort((cells, words(seed, cells, 0, j, STREAM_SCHEDULE)))[0])
    order, from_near = [first], [1]
    selected[first] = True
    hits = {"filtered": 0, "fps": 0, "random_pick": 0, "take_all": 0}
    for k, g in enumerate(group_sizes[1:], start=1):
        prox = proximity_of(selected, grid)
        free = cells[~selected]
        ranked = free[np.lexsort((free, words(seed, free, k, j, STREAM_SCHEDULE), -prox[free]))].tolist()
        near = [c for c in ranked if prox[c] >= proximity]
        far = [c for c in ranked if prox[c] < proximity]
        taken, filtered, visited = [], [], 0
        while len(taken) < g and visited < len(near):
            c = near[visited]
            visited += 1
            if any(max(abs(rows[c] - rows[t]), abs(cols[c] - cols[t])) <= repulsion for t in taken):
                filtered.append(c)
            else:
                taken.append(c)
        hits["filtered"] += bool(filtered)
        from_near.append(len(taken))
        pool = far + filtered + near[visited:]
        missing = g - len(taken)
        if 0 < missing and len(pool) <= missing:
            hits["take_all"] += 1
            taken += pool
        elif missing > 0:
            hits["fps"] += 1
            pool = np.array(pool)
            picked = np.zeros(len(pool), bool)
            if not taken:
                hits["random_pick"] += 1
                i = int(np.lexsort((pool, words(seed, pool, k, j, STREAM_SCHEDULE_PICK)))[0])
                taken.append(int(pool[i]))
                picked[i] = True
                missing -= 1
            for _ in range(missing):
                t = np.array(taken)
                d2 = (rows[pool, None] - rows[None, t]) ** 2 + (cols[pool, None] - cols[None, t]) ** 2
                d2 = d2.min(axis=1)
                d2[picked] = -1
                i = int(np.argmax(d2))
                taken.append(int(pool[i]))
                picked[i] = True
        order += taken
        selected[taken] = True
    return np.array(order, dtype=np.int64), from_near, hits


# ------------------------------------------------------------------------------ C++ == the twin

TABLES = {
    "g16s8": (16, schedule.published_group_sizes(16, 8)),
    "g16s20": (16, schedule.published_group_sizes(16, 20)),
    "g16s256": (16, schedule.published_group_sizes(16, 256)),
    "g32s48": (32, schedule.published_group_sizes(32, 48)),
    "g7": (7, [1, 2, 3, 5, 8, 10, 20]),
}


@pytest.mark.parametrize("repulsion", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_matches_numpy_twin(table, repulsion):
    grid, sizes = TABLES[table]
    for seed, first_index in [(0, 0), (2**64 - 1, 2**32 - 2)] if grid < 32 else [(12345, 7)]:
        got = schedule.locality_orders(grid, sizes, 2, seed, repulsion=repulsion, first_index=first_index)
        for i in range(2):
            np.testing.assert_array_equal(got[i], twin_order(grid, sizes, seed, first_index + i, repulsion)[0])


@pytest.mark.parametrize("proximity", [0.0, 0.5, 1.5, 10.0])
@pytest.mark.parametrize("table", ["g7", "g16s20"])
def test_matches_numpy_twin_other_proximity(table, proximity):
    grid, sizes = TABLES[table]
    got = schedule.locality_orders(grid, sizes, 2, 99, repulsion=2.5, proximity=proximity)
    for j in range(2):
        np.testing.assert_array_equal(got[j], twin_order(grid, sizes, 99, j, 2.5, proximity)[0])


def test_matches_numpy_twin_on_random_small_schedules():
    """Odd grids (1 to 12), random tables, repulsion from 0 to inf, proximity from 0 to 10."""
    rng = np.random.default_rng(2026)
    for _ in range(40):
        grid = int(rng.integers(1, 13))
        n = grid * grid
        cuts = np.sort(rng.choice(np.arange(2, n), size=int(rng.integers(0, n - 1)), replace=False)) if n > 2 else []
        sizes = np.diff(np.concatenate([[0], [1] if n > 1 else [], cuts, [n]])).astype(int).tolist()
        repulsion = float(rng.choice([0, 0.5, 1, 1.5, 3, 100, np.inf]))
        proximity = float(rng.choice([0, 0.7, 1, 1.5, 3, 10]))
        seed, j = int(rng.integers(0, 2**63)), int(rng.integers(0, 2**32))
        got = schedule.locality_orders(grid, sizes, 1, seed, repulsion=repulsion, proximity=proximity, first_index=j)
        np.testing.assert_array_equal(got[0], twin_order(grid, sizes, seed, j, repulsion, proximity)[0])


def test_twin_comparisons_cover_every_branch():
    """Two of the compared cases already take every branch of the algorithm."""
    hits_a = twin_order(*TABLES["g16s20"], 0, 0, 2.0)[2]
    hits_b = twin_order(*TABLES["g7"], 99, 0, 2.5, 10.0)[2]
    assert all(hits_a[key] + hits_b[key] > 0 for key in hits_a), (hits_a, hits_b)


# ----------------------------------------------------------------------- properties of the orders


def assert_permutations(orders, n):
    assert orders.dtype == np.int64 and orders.shape[1] == n
    np.testing.assert_array_equal(np.sort(orders, axis=1), np.broadcast_to(np.arange(n), orders.shape))


@pytest.mark.parametrize("grid", [16, 32])
def test_every_published_table_gives_permutations(grid):
    for steps in schedule.published_steps(grid):
        sizes = schedule.published_group_sizes(grid, steps)
        assert len(sizes) == steps and sum(sizes) == grid * grid and sizes[0] == 1
        orders = schedule.locality_orders(grid, sizes, 3 if grid == 16 else 2, seed=steps)
        assert_permutations(orders, grid * grid)
        # Step 0 is the one cell with the smallest step-0 key.
        keys = words(steps, np.arange(grid * grid), 0, 0, STREAM_SCHEDULE)
        assert orders[0, 0] == np.lexsort((np.arange(grid * grid), keys))[0]


@pytest.mark.parametrize("grid", [16, 32])
def test_training_tables_give_permutations(grid):
    tables = schedule.training_group_size_tables(grid)
    assert tables
    for sizes in tables:
        assert_permutations(schedule.locality_orders(grid, sizes, 1, seed=1), grid * grid)


@pytest.mark.parametrize("table,repulsion", [("g16s20", 2.0), ("g16s8", 1.0), ("g32s48", 4.0)])
def test_repulsion_and_proximity_rules_hold_on_the_cpp_output(table, repulsion):
    """Per step of the C++ order, with n1 = cells the twin says came from candidates-1:
    (1) those n1 cells (the step's first n1) are pairwise farther apart than `repulsion`;
    (2) if n1 < g, the step ran out of candidates-1: every unused cell of proximity >= 1 lies within
        `repulsion` of one of them, so no far-enough candidate was passed over;
    (3) the step's first cell has the largest proximity among free cells, when that is >= 1.
    Each rule must bind somewhere, so the test cannot pass vacuously."""
    grid, sizes = TABLES[table]
    orders = schedule.locality_orders(grid, sizes, 3, seed=5, repulsion=repulsion)
    rows, cols = np.arange(grid * grid) // grid, np.arange(grid * grid) % grid

    def cheb(a, b):
        return np.maximum(np.abs(rows[a][:, None] - rows[b][None]), np.abs(cols[a][:, None] - cols[b][None]))

    pairs = exhausted = leaders = 0
    for j, order in enumerate(orders):
        _, from_near, _ = twin_order(grid, sizes, 5, j, repulsion)
        ends = np.cumsum(sizes)
        selected = np.zeros(grid * grid, bool)
        for k in range(1, len(sizes)):
            selected[order[:ends[k - 1]]] = True
            step = order[ends[k - 1]:ends[k]]
            n1 = from_near[k]
            d = cheb(step[:n1], step[:n1])
            assert (d[~np.eye(n1, dtype=bool)] > repulsion).all()
            pairs += n1 * (n1 - 1) // 2
            prox = proximity_of(selected, grid)
            unused = np.setdiff1d(np.flatnonzero(~selected & (prox >= 1.0)), step[:n1])
            if n1 < sizes[k] and unused.size:
                assert n1 > 0 and (cheb(unused, step[:n1]) <= repulsion).any(axis=1).all()
                exhausted += 1
            if prox[~selected].max() >= 1.0:
                assert prox[step[0]] == prox[~selected].max()
                leaders += 1
    assert pairs > 0 and exhausted > 0 and leaders > 0


def test_determinism_seeds_threads_and_first_index():
    grid, sizes = TABLES["g16s20"]
    a = schedule.locality_orders(grid, sizes, 5, seed=3)
    np.testing.assert_array_equal(a, schedule.locality_orders(grid, sizes, 5, seed=3))
    assert not np.array_equal(a, schedule.locality_orders(grid, sizes, 5, seed=4))
    assert len({tuple(o) for o in a}) == 5
    for j in range(5):
        np.testing.assert_array_equal(a[j], schedule.locality_orders(grid, sizes, 1, seed=3, first_index=j)[0])
    from lpd_engine import _C

    for threads in (1, 2, 7):
        got = _C.locality_orders(grid, sizes, 5, 3, 2.0, 1.0, 0, threads)
        np.testing.assert_array_equal(a, got)
    assert schedule.locality_orders(grid, sizes, 0, seed=3).shape == (0, 256)


def test_default_repulsion():
    assert schedule.default_repulsion(16, 20) == 2.0
    assert schedule.default_repulsion(32, 48) == 4.0
    assert schedule.default_repulsion(8, 4) == 1.0
    assert schedule.default_repulsion(48, 10) == 6.0
    np.testing.assert_array_equal(
        schedule.locality_orders(32, TABLES["g32s48"][1], 1, seed=0),
        schedule.locality_orders(32, TABLES["g32s48"][1], 1, seed=0, repulsion=4.0),
    )


def test_published_tables_lookup():
    assert schedule.published_steps(16) == [8, 12, 16, 20, 24, 32, 64, 128, 256]
    assert 48 in schedule.published_steps(32)
    assert schedule.published_group_sizes(16, 20)[:3] == [1, 2, 4]
    with pytest.raises(InvalidScheduleError, match=r"available: \[8, 12, 16"):
        schedule.published_group_sizes(16, 21)
    with pytest.raises(InvalidScheduleError, match="published grids"):
        schedule.published_group_sizes(24, 20)


# -------------------------------------------------------------------------- random and raster


def test_random_and_raster_orders():
    r = schedule.random_orders(50, 4, seed=11, first_index=2)
    assert_permutations(r, 50)
    for i in range(4):
        w = words(11, np.arange(50), 0, 2 + i, STREAM_RANDOM_ORDER)
        np.testing.assert_array_equal(r[i], sorted(range(50), key=lambda c: (w[c], c)))
    np.testing.assert_array_equal(r[1:3], schedule.random_orders(50, 2, seed=11, first_index=3))
    assert not np.array_equal(r, schedule.random_orders(50, 4, seed=12, first_index=2))
    raster = schedule.raster_orders(9, 2)
    assert raster.dtype == np.int64
    np.testing.assert_array_equal(raster, [list(range(9))] * 2)


# ----------------------------------------------------------------------------------- validation

SIZES = [1, 3, 4, 8]  # a valid 4x4 table


@pytest.mark.parametrize("kwargs", [
    dict(grid=0),
    dict(grid=4.0),
    dict(group_sizes=[1, 3, 4, 7]),
    dict(group_sizes=[1, 3, 0, 12]),
    dict(group_sizes=[2, 2, 4, 8]),
    dict(group_sizes=[1.0, 3.0, 4.0, 8.0]),
    dict(group_sizes=[]),
    dict(group_sizes=[[1, 3], [4, 8]]),
    dict(count=-1),
    dict(seed=-1),
    dict(seed=2**64),
    dict(seed=1.5),
    dict(repulsion=-1.0),
    dict(repulsion=float("nan")),
    dict(repulsion="2"),
    dict(proximity=float("nan")),
    dict(first_index=-1),
    dict(first_index=2**32 - 1, count=2),
])
def test_locality_orders_rejects(kwargs):
    args = dict(grid=4, group_sizes=SIZES, count=1, seed=0) | kwargs
    with pytest.raises(InvalidScheduleError):
        schedule.locality_orders(**args)


def test_compiled_module_raises_typed_errors():
    from lpd_engine import _C

    with pytest.raises(InvalidScheduleError, match="group_sizes\\[0\\] must be 1"):
        _C.locality_orders(4, [2, 14], 1, 0, 1.0, 1.0)
    with pytest.raises(InvalidScheduleError, match="sum to 15"):
        _C.locality_orders(4, [1, 14], 1, 0, 1.0, 1.0)
    with pytest.raises(InvalidScheduleError, match="grid"):
        _C.locality_orders(5000, [1], 1, 0, 1.0, 1.0)
    with pytest.raises(InvalidScheduleError, match="count"):
        _C.locality_orders(4, SIZES, -1, 0, 1.0, 1.0)


def test_missing_compiled_module_is_reported(monkeypatch):
    monkeypatch.delattr(lpd_engine, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "lpd_engine._C", None)
    with pytest.raises(BackendUnavailableError, match="pip install"):
        schedule.locality_orders(4, SIZES, 1, seed=0)


def test_validate_group_sizes_and_orders():
    np.testing.assert_array_equal(schedule.validate_group_sizes(np.array(SIZES, np.int32), 16), SIZES)
    with pytest.raises(InvalidScheduleError, match=r"group_sizes\[2\] = -4"):
        schedule.validate_group_sizes([1, 3, -4, 16], 16)
    with pytest.raises(InvalidScheduleError, match="sum to 15"):
        schedule.validate_group_sizes([1, 14], 16)
    one = np.arange(6)[::-1]
    np.testing.assert_array_equal(schedule.validate_orders(one, 6, 3), [one] * 3)
    assert schedule.validate_orders(one.tolist(), 6, 3).dtype == np.int64
    for bad, message in [
        (np.arange(5), r"shape \[6\] or \[3, 6\]"),
        (np.zeros((3, 6, 1), np.int64), r"shape"),
        (np.tile(np.arange(6), (2, 1)), "2 orders for 3 images"),
        (np.arange(6.0), "integers"),
        (np.array([True] * 6), "integers"),
        ([[0, 1, 2, 3, 4, 5], [0, 1, 2], [0, 1, 2, 3, 4, 5]], "rectangular"),
        ([0, 1, 2, 3, 4, 6], "holds 6, not a cell"),
        ([0, 1, 2, 3, 4, -1], "holds -1"),
        ([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [0, 1, 1, 3, 4, 5]], r"orders\[2\] is not a permutation: cell 1"),
    ]:
        with pytest.raises(InvalidScheduleError, match=message):
            schedule.validate_orders(bad, 6, 3)


# ------------------------------------------------------------------------------ schedule files


def test_schedule_file_round_trip(tmp_path):
    sizes = schedule.published_group_sizes(16, 20)
    orders = schedule.locality_orders(16, sizes, 4, seed=2**64 - 1)
    path = tmp_path / "s.npz"
    schedule.save_schedule(path, sizes, orders, repulsion=2.0, proximity=1.0, seed=2**64 - 1, kind="locality")
    s = schedule.load_schedule(path)
    assert s.group_sizes.dtype == np.int64 and s.orders.dtype == np.int64
    np.testing.assert_array_equal(s.group_sizes, sizes)
    np.testing.assert_array_equal(s.orders, orders)
    assert (s.grid, s.repulsion, s.proximity, s.seed, s.kind) == (16, 2.0, 1.0, 2**64 - 1, "locality")
    schedule.save_schedule(path, [1, 8], schedule.raster_orders(9, 1))
    s = schedule.load_schedule(path)
    assert (s.grid, s.seed, s.kind) == (3, None, None)
    with pytest.raises(TypeError, match="unknown schedule metadata"):
        schedule.save_schedule(path, [1, 8], schedule.raster_orders(9, 1), steps=2)
    with pytest.raises(InvalidScheduleError):
        schedule.save_schedule(path, [1, 8], [[0, 1, 2, 3, 4, 5, 6, 7, 7]])
    with pytest.raises(InvalidScheduleError, match="grid"):
        schedule.save_schedule(path, [1, 7], schedule.raster_orders(8, 1))


def test_corrupt_schedule_files_are_rejected(tmp_path):
    path = tmp_path / "s.npz"
    schedule.save_schedule(path, [1, 8], schedule.raster_orders(9, 2), kind="raster")
    good = path.read_bytes()
    cases = {
        "garbage": b"not a schedule file at all",
        "truncated": good[: len(good) // 2],
        "empty": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    perm = np.arange(9)
    arrays = {
        "missing_orders": dict(group_sizes=[1, 8]),
        "missing_sizes": dict(orders=[perm]),
        "not_permutation": dict(group_sizes=[1, 8], orders=[perm, np.zeros(9, np.int64)]),
        "bad_sum": dict(group_sizes=[1, 7], orders=[perm]),
        "one_d_orders": dict(group_sizes=[1, 8], orders=perm),
        "float_orders": dict(group_sizes=[1, 8], orders=[perm.astype(float)]),
        "extra_key": dict(group_sizes=[1, 8], orders=[perm], notes=np.array("x")),
        "object_array": dict(group_sizes=[1, 8], orders=np.array([perm], dtype=object)),
        "grid_mismatch": dict(group_sizes=[1, 8], orders=[perm], grid=np.array(4)),
    }
    for name, content in arrays.items():
        with open(tmp_path / name, "wb") as f:
            np.savez(f, **content)
    for name in list(cases) + list(arrays):
        with pytest.raises(InvalidScheduleError):
            schedule.load_schedule(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        schedule.load_schedule(tmp_path / "absent.npz")
