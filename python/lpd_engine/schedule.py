"""Generation schedules: group sizes plus one order of the token grid per image.

Step k of a schedule generates the next group_sizes[k] cells of an image's order. This module
holds the published group-size tables of the LPD paper, the locality-aware orders (made by the
C++ generator lpd_engine._C, defined in engine/include/lpd/schedule.h and re-implemented in
numpy in tests/test_schedule.py), raster and random orders, the input checks every schedule
goes through, and the .npz schedule files that engine bundles carry. Everything here is numpy
only; the compiled module is imported when a locality order is asked for.
"""

import dataclasses
import json
import math
import os
import zipfile
from importlib import resources

import numpy as np

from .errors import BackendUnavailableError, InvalidScheduleError
from .rng import STREAM_ORDER_PICK, STREAM_RANDOM_ORDER, philox4x32

_RESOLUTION_KEY = {16: "256 resolution", 32: "512 resolution"}  # grid -> key in the data files
_TRAINING_FILE = {16: "group_sizes_training_256.json", 32: "group_sizes_training_512.json"}
_METADATA = {"grid": int, "repulsion": float, "proximity": float, "seed": int, "kind": str}


def _data(name: str):
    with resources.files("lpd_engine").joinpath("data", name).open("r", encoding="utf-8") as f:
        return json.load(f)


def _published_tables(grid: int) -> dict:
    if grid not in _RESOLUTION_KEY:
        raise InvalidScheduleError(
            f"no published group sizes for grid {grid}; published grids: {sorted(_RESOLUTION_KEY)}"
        )
    table = _data("group_sizes_lookup.json")[_RESOLUTION_KEY[grid]]
    return {int(key.split()[0]): sizes for key, sizes in table.items()}


def published_steps(grid: int) -> list[int]:
    """Step counts with a published group-size table for this grid (16: 256 px, 32: 512 px)."""
    return sorted(_published_tables(grid))


def published_group_sizes(grid: int, steps: int) -> list[int]:
    """The paper's group sizes for (grid, steps), e.g. published_group_sizes(16, 20)[:3] == [1, 2, 4]."""
    tables = _published_tables(grid)
    if steps not in tables:
        raise InvalidScheduleError(
            f"no published group sizes for {steps} steps at grid {grid}; available: {sorted(tables)}"
        )
    return list(tables[steps])


def training_group_size_tables(grid: int) -> list[list[int]]:
    """The group-size tables the published models were trained with (grid 16 or 32)."""
    if grid not in _TRAINING_FILE:
        raise InvalidScheduleError(f"no training tables for grid {grid}; available: {sorted(_TRAINING_FILE)}")
    return [list(t) for t in _data(_TRAINING_FILE[grid])]


def default_repulsion(grid: int, steps: int) -> float:
    """Repulsion threshold of the locality order: 2.0 at grid 16, 4.0 at grid 32.

    Those are the published values (256 px at 20 and 32 steps; 512 px at 48 steps; the XXL model
    used 3.0 at 256 px). They depend on the resolution only, so we use them for every step count.
    Other grids are our choice: max(1.0, round(grid / 8)), Python's round (half to even).
    """
    _check_int("grid", grid, low=1)
    _check_int("steps", steps, low=1)
    return {16: 2.0, 32: 4.0}.get(grid, max(1.0, float(round(grid / 8))))


def locality_orders(grid: int, group_sizes, count: int, seed: int, repulsion: float | None = None,
                    proximity: float = 1.0, first_index: int = 0) -> np.ndarray:
    """Locality-aware orders j = first_index .. first_index + count - 1: int64 [count, grid * grid].

    Order j depends only on (seed, j), so orders made in pieces equal those made at once.
    repulsion defaults to default_repulsion(grid, len(group_sizes)).
    Example: locality_orders(16, published_group_sizes(16, 20), count=8, seed=0).shape == (8, 256)
    """
    _check_int("grid", grid, low=1)
    sizes = validate_group_sizes(group_sizes, grid * grid)
    if sizes[0] != 1:
        raise InvalidScheduleError(
            f"the locality order takes one cell at step 0: group_sizes[0] must be 1, got {sizes[0]}")
    _check_int("count", count, low=0)
    _check_int("seed", seed, low=0, high=2**64)
    _check_int("first_index", first_index, low=0, high=2**32 - count + 1)
    if repulsion is None:
        repulsion = default_repulsion(grid, len(sizes))
    if not _is_real(repulsion) or not repulsion >= 0:
        raise InvalidScheduleError(f"repulsion must be a number >= 0, got {repulsion!r}")
    if not _is_real(proximity) or math.isnan(proximity):
        raise InvalidScheduleError(f"proximity must be a number, got {proximity!r}")
    try:
        from . import _C
    except ImportError as e:
        raise BackendUnavailableError(
            "locality orders need the compiled module lpd_engine._C; build it with `pip install .` "
            f"from the repository root ({e})"
        ) from e
    return _C.locality_orders(int(grid), [int(g) for g in sizes], int(count), int(seed), float(repulsion),
                              float(proximity), int(first_index))


def raster_orders(num_tokens: int, count: int) -> np.ndarray:
    """count copies of 0, 1, ..., num_tokens - 1: int64 [count, num_tokens]."""
    _check_int("num_tokens", num_tokens, low=1)
    _check_int("count", count, low=0)
    return np.tile(np.arange(num_tokens, dtype=np.int64), (count, 1))


def random_orders(num_tokens: int, count: int, seed: int, first_index: int = 0) -> np.ndarray:
    """Uniformly random orders j = first_index .. first_index + count - 1: int64 [count, num_tokens].

    Order j sorts the cells c by (philox(seed, c // 4, 0, j, STREAM_RANDOM_ORDER)[c % 4], c).
    """
    _check_int("num_tokens", num_tokens, low=1)
    _check_int("count", count, low=0)
    _check_int("seed", seed, low=0, high=2**64)
    _check_int("first_index", first_index, low=0, high=2**32 - count + 1)
    cells = np.arange(num_tokens, dtype=np.int64)
    index = np.arange(first_index, first_index + count, dtype=np.int64)[:, None]
    words = philox4x32(seed, cells // 4, 0, index, STREAM_RANDOM_ORDER)[:, cells, cells % 4]  # [count, num_tokens]
    return np.argsort(words, axis=1, kind="stable").astype(np.int64)


def order_picks(seed: int, batch: int, count: int) -> np.ndarray:
    """Which of `count` precomputed orders images 0..batch-1 of a request use: int64 [batch].

    pick(i) = philox(seed, i // 4, 0, 0, STREAM_ORDER_PICK)[i % 4] mod count (docs/rng.md).
    """
    _check_int("count", count, low=1)
    words = philox4x32(seed, np.arange(batch) // 4, 0, 0, STREAM_ORDER_PICK)
    return (words[np.arange(batch), np.arange(batch) % 4].astype(np.int64)) % count


def validate_group_sizes(group_sizes, num_tokens: int) -> np.ndarray:
    """Checks group sizes (1-D, integers >= 1, summing to num_tokens); returns int64 [num_steps]."""
    sizes = _integer_array("group_sizes", group_sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise InvalidScheduleError(f"group_sizes must be a non-empty 1-D list, got shape {sizes.shape}")
    bad = np.flatnonzero(sizes < 1)
    if bad.size:
        raise InvalidScheduleError(f"group_sizes[{bad[0]}] = {sizes[bad[0]]} is not >= 1")
    if int(sizes.sum()) != num_tokens:
        raise InvalidScheduleError(f"group sizes sum to {int(sizes.sum())}, expected {num_tokens}")
    return sizes


def validate_orders(orders, num_tokens: int, count: int) -> np.ndarray:
    """Checks orders and returns them as int64 [count, num_tokens].

    Accepts one order [num_tokens] (used for every image) or one per image [count, num_tokens];
    each must be a permutation of 0 .. num_tokens - 1.
    """
    arr = _integer_array("orders", orders)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (count, arr.shape[0]))
    if arr.ndim != 2 or arr.shape[1] != num_tokens:
        raise InvalidScheduleError(
            f"orders must have shape [{num_tokens}] or [{count}, {num_tokens}], got {arr.shape}")
    if arr.shape[0] != count:
        raise InvalidScheduleError(f"got {arr.shape[0]} orders for {count} images")
    bad = np.flatnonzero(((arr < 0) | (arr >= num_tokens)).any(axis=1))
    if bad.size:
        i = int(bad[0])
        value = arr[i][(arr[i] < 0) | (arr[i] >= num_tokens)][0]
        raise InvalidScheduleError(f"orders[{i}] holds {value}, not a cell in [0, {num_tokens})")
    ranked = np.sort(arr, axis=1)
    bad = np.flatnonzero((ranked != np.arange(num_tokens)).any(axis=1))
    if bad.size:
        i = int(bad[0])
        repeated = ranked[i][1:][ranked[i][1:] == ranked[i][:-1]][0]
        raise InvalidScheduleError(f"orders[{i}] is not a permutation: cell {repeated} appears twice or more")
    return np.ascontiguousarray(arr, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A schedule file's content. Metadata the file lacks is None."""

    group_sizes: np.ndarray  # int64 [num_steps]
    orders: np.ndarray  # int64 [num_orders, num_tokens]
    grid: int
    repulsion: float | None = None
    proximity: float | None = None
    seed: int | None = None
    kind: str | None = None  # "locality", "random", "raster" or a caller's name


def save_schedule(path, group_sizes, orders, **metadata) -> None:
    """Writes a .npz with group_sizes, orders and scalar metadata (grid, repulsion, proximity, seed, kind).

    Orders are stored as uint16 where they fit and read back as int64.
    """
    unknown = sorted(set(metadata) - set(_METADATA))
    if unknown:
        raise TypeError(f"unknown schedule metadata {unknown}; known: {sorted(_METADATA)}")
    orders = np.asarray(orders)
    if orders.ndim != 2:
        raise InvalidScheduleError(f"orders must be 2-D [num_orders, num_tokens], got shape {orders.shape}")
    num_tokens = orders.shape[1]
    sizes = validate_group_sizes(group_sizes, num_tokens)
    orders = validate_orders(orders, num_tokens, orders.shape[0])
    grid = metadata.setdefault("grid", math.isqrt(num_tokens))
    if grid * grid != num_tokens:
        raise InvalidScheduleError(f"orders of {num_tokens} tokens do not fill a {grid}x{grid} grid")
    stored = orders.astype(np.uint16) if num_tokens <= 2**16 else orders
    scalars = {key: np.array(_METADATA[key](value)) for key, value in metadata.items()}
    if "seed" in scalars:
        scalars["seed"] = np.array(int(metadata["seed"]), dtype=np.uint64)
    with open(path, "wb") as f:
        np.savez(f, group_sizes=sizes, orders=stored, **scalars)


def load_schedule(path) -> Schedule:
    """Reads and checks a file written by save_schedule; InvalidScheduleError if it is malformed."""
    with open(path, "rb") as f:
        try:
            with np.load(f, allow_pickle=False) as npz:
                content = {key: npz[key] for key in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise InvalidScheduleError(f"{os.fspath(path)} is not a readable schedule file: {e}") from e
    missing = {"group_sizes", "orders"} - set(content)
    if missing:
        raise InvalidScheduleError(f"{os.fspath(path)} lacks {sorted(missing)}")
    orders = content.pop("orders")
    if orders.ndim != 2:
        raise InvalidScheduleError(f"orders in {os.fspath(path)} must be 2-D, got shape {orders.shape}")
    num_tokens = orders.shape[1]
    sizes = validate_group_sizes(content.pop("group_sizes"), num_tokens)
    orders = validate_orders(orders, num_tokens, orders.shape[0])
    metadata = {}
    for key, value in content.items():
        if key not in _METADATA or value.ndim != 0:
            raise InvalidScheduleError(
                f"{os.fspath(path)} holds an unexpected entry {key!r} of shape {value.shape}")
        metadata[key] = _METADATA[key](value.item())
    grid = metadata.pop("grid", math.isqrt(num_tokens))
    if grid * grid != num_tokens:
        raise InvalidScheduleError(f"{os.fspath(path)}: {num_tokens} tokens do not fill a {grid}x{grid} grid")
    return Schedule(group_sizes=sizes, orders=orders, grid=grid, **metadata)


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _check_int(name: str, value, low: int, high: int | None = None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise InvalidScheduleError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise InvalidScheduleError(f"{name} must be {bound}, got {value}")


def _integer_array(name: str, values) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except ValueError as e:  # ragged nested lists
        raise InvalidScheduleError(f"{name} must be a rectangular array of integers: {e}") from e
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise InvalidScheduleError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)
