"""The shared Philox RNG: known-answer vectors, the uniform mapping, counter addressing."""

import numpy as np
import pytest

from lpd_engine import rng

# Random123 known-answer vectors for philox4x32_10: (key as a 64-bit seed, counter, output).
KAT = [
    (0, (0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (2**64 - 1, (2**32 - 1,) * 4, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (0x299F31D0A4093822, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("seed,counter,expected", KAT)
def test_philox_known_answers(seed, counter, expected):
    assert tuple(int(x) for x in rng.philox4x32(seed, *counter)) == expected


def test_uniform_is_strictly_inside_unit_interval_and_exact():
    u = rng.to_uniform(np.array([0, 255, 256, 2**32 - 1], dtype=np.uint32))
    assert u[0] == 0.5 / 2**24 and u[-1] == 1 - 0.5 / 2**24
    assert np.all((u > 0) & (u < 1))
    assert np.array_equal((u * 2**25).astype(np.int64), [1, 1, 3, 2**25 - 1])  # exact odd multiples of 2**-25
    assert u[1] == u[0] and u[2] > u[1]  # the low 8 bits are dropped


def test_sampling_uniforms_are_addressed_by_counter_not_by_batch():
    full = rng.sampling_uniforms(7, 3, np.arange(10), 37)
    for t in (0, 4, 9):
        assert np.array_equal(full[t], rng.sampling_uniforms(7, 3, t, 37))
    assert not np.array_equal(full[0], rng.sampling_uniforms(7, 4, 0, 37))  # other image
    assert not np.array_equal(full[0], rng.sampling_uniforms(8, 3, 0, 37))  # other seed
    ids = np.array([0, 5, 36])
    assert np.array_equal(rng.uniform_ids(7, ids, 2, 3, rng.STREAM_SAMPLING), full[2][ids])


def test_uniforms_look_uniform():
    u = rng.sampling_uniforms(1, 0, np.arange(64), 1024).ravel()
    hist, _ = np.histogram(u, bins=16, range=(0, 1))
    expected = u.size / 16
    chi2 = ((hist - expected) ** 2 / expected).sum()
    assert chi2 < 40  # 15 dof: p ~ 5e-4
    assert abs(u.mean() - 0.5) < 0.01


def test_seed_out_of_range():
    with pytest.raises(ValueError):
        rng.philox4x32(2**64, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        rng.philox4x32(-1, 0, 0, 0, 0)
